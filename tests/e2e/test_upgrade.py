"""A data directory written by the previous release carries on under this one.

``tests/fixtures/release-0.1.0/`` was written by release 0.1.0's own collector and stopped
with SIGKILL (its README says how): twelve events, a limit state holding an open reservation
whose time to live ran out long ago, and an export directory whose cursor covers the first
ten events. The current collector must migrate the ledger, charge the reservation once,
export the rest, and count nothing twice across restarts.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1.0"
TOKEN_FIELDS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens")


@pytest.fixture
def old_data(tmp_path: Path) -> Path:
    workdir = tmp_path / "upgraded"
    shutil.copytree(FIXTURE, workdir)
    return workdir


def events(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/events", params={"limit": 1000}, timeout=10)
    response.raise_for_status()
    return list(response.json()["events"])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def open_limits(limits: list[dict[str, Any]]) -> set[str]:
    """The names of ``limits`` whose window has not reset yet."""
    now = datetime.now(timezone.utc)
    return {
        limit["name"]
        for limit in limits
        if datetime.fromisoformat(limit["reset_at"].replace("Z", "+00:00")) > now
    }


def exported_rows(export_dir: Path) -> list[dict[str, Any]]:
    table = ds.dataset(export_dir, format="parquet", partitioning="hive").to_table()
    return list(table.to_pylist())


def test_previous_release_data_carries_on(collector_process, old_data):
    expected = json.loads((old_data / "expected.json").read_text())
    old_file = next((old_data / "data" / "export").rglob("*.parquet"))
    old_file_bytes = old_file.read_bytes()

    collector = collector_process(args=["--config", "collector.yaml"], workdir=old_data)
    url = collector.management_url

    # The reservation the old release left open has expired: charged once, at its estimate.
    wait_until(lambda: len(events(url)) == 13, "the expired reservation to be charged")
    ledger = events(url)
    metered = sorted(e["response_id"] for e in ledger if e["usage_source"] == "provider")
    reported = expected["exported_response_ids"] + expected["unexported_response_ids"]
    assert metered == sorted(reported)
    # Measures the old release never recorded read back as not reported, not as zero.
    added = ("hidden_input_tokens", "time_to_first_token_s", "decode_s_per_output_token")
    assert {e[name] for e in ledger for name in added} == {None}
    (charged,) = [e for e in ledger if e["usage_source"] == "reservation"]
    assert charged["tenant_id"] == "acme"
    assert charged["reservation_id"] == expected["reservation"]["reservation_id"]
    assert charged["input_tokens"] == 5000

    # Usage reads the migrated rollups: unchanged for globex, acme's plus the charge.
    rows = httpx.get(f"{url}/api/v1/usage", params={"group_by": "tenant"}, timeout=10).json()
    now = {row["tenant"]: row for row in rows["rows"]}
    before = {row["tenant"]: row for row in expected["usage_by_tenant"]}
    # Fields added since (a dimension the row was not grouped by) read as absent.
    added_fields = now["globex"].keys() - before["globex"].keys()
    assert {now["globex"][name] for name in added_fields} <= {None}
    assert {name: now["globex"][name] for name in before["globex"]} == before["globex"]
    assert now["acme"]["requests"] == before["acme"]["requests"] + 1
    assert now["acme"]["input_tokens"] == before["acme"]["input_tokens"] + 5000
    assert now["acme"]["output_tokens"] == before["acme"]["output_tokens"]

    # The limit state was read: the open reservation gone, and the old counters kept while
    # their window lasts. A window that has closed since the fixture was written (a day, a
    # month) leaves a counter at rest, which the collector forgets; the test must hold on
    # any date, so it reads which windows are still open around its request.
    still_open_before = open_limits(expected["acme_status"]["limits"])
    status = httpx.get(f"{url}/api/v1/tenants/acme/status", timeout=10).json()
    still_open_after = open_limits(expected["acme_status"]["limits"])
    assert status["active_reservations"] == 0
    listed = {limit["name"]: limit for limit in status["limits"]}
    assert still_open_after <= listed.keys() <= still_open_before
    old_limits = {limit["name"]: limit for limit in expected["acme_status"]["limits"]}
    for name in listed.keys() & still_open_after:
        # The expired reservation is charged at the estimate it already held.
        assert listed[name]["remaining"] == old_limits[name]["remaining"]

    # The export resumes after the old cursor: every event in exactly one file, and the old
    # release's file left as it was.
    httpx.post(f"{url}/api/v1/export", timeout=60).raise_for_status()
    export_dir = old_data / "data" / "export"
    exported = exported_rows(export_dir)
    assert sorted(row["event_id"] for row in exported) == sorted(e["event_id"] for e in ledger)
    assert old_file.read_bytes() == old_file_bytes

    # Restarted twice more, nothing is charged, metered or exported a second time.
    for _ in range(2):
        assert collector.stop() == 0
        collector.start()
        assert sorted(e["event_id"] for e in events(url)) == sorted(e["event_id"] for e in ledger)
    httpx.post(f"{url}/api/v1/export", timeout=60).raise_for_status()
    assert len(exported_rows(export_dir)) == len(ledger)
    for field in TOKEN_FIELDS:
        assert sum(row[field] for row in exported) == sum(e[field] for e in ledger)


def test_the_ledger_records_its_new_schema_version(collector_process, old_data):
    ledger = old_data / "data" / "ledger.db"
    with sqlite3.connect(ledger) as conn:
        (old_version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    collector = collector_process(args=["--config", "collector.yaml"], workdir=old_data)
    assert collector.stop() == 0
    with sqlite3.connect(ledger) as conn:
        (new_version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    assert old_version == 1
    assert new_version > old_version
