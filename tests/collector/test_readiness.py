"""/readyz follows the ledger's ability to commit: a full database makes the collector
not ready (ingest refused for retry, nothing acknowledged lost), and ready again once
space is back, without waiting for a sender."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from tests.collector.conftest import collector_config
from tollmeter.collector import Collector
from tollmeter.collector.storage import SQLiteLedger, register_ledger

PROTOBUF = {"content-type": "application/x-protobuf"}


class FillableLedger(SQLiteLedger):
    """A real SQLite ledger whose database can be declared full: SQLite's
    ``max_page_count`` stops it from growing, so commits fail with SQLITE_FULL
    exactly as on a full disk."""

    opened: ClassVar[list[FillableLedger]] = []

    def __init__(self, path: str | None, **options: Any) -> None:
        super().__init__(path, **options)
        FillableLedger.opened.append(self)

    def fill(self) -> None:
        (pages,) = self._writer.execute("PRAGMA page_count").fetchone()
        self._writer.execute(f"PRAGMA max_page_count={pages}")

    def free(self) -> None:
        self._writer.execute("PRAGMA max_page_count=1000000")


register_ledger("fillable-sqlite", FillableLedger)


def readiness(running) -> httpx.Response:
    return httpx.get(f"{running.management_url}/readyz", timeout=10)


def post(running, spans) -> httpx.Response:
    body = encode_spans(spans).SerializeToString()
    return httpx.post(
        f"{running.http_endpoint}/v1/traces", content=body, headers=PROTOBUF, timeout=30
    )


def eventually(predicate, what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what}")
        time.sleep(0.05)


def test_not_ready_while_the_ledger_is_full_and_ready_once_it_commits_again(
    collector_factory, make_spans, tmp_path: Path
):
    running = collector_factory(
        storage={"url": f"fillable-sqlite:///{tmp_path / 'ledger.db'}"},
        ingest={"commit_interval": "1ms"},
    )
    ledger = FillableLedger.opened[-1]
    assert post(running, make_spans(3, id_prefix="before")).status_code == 200
    assert readiness(running).status_code == 200

    ledger.fill()
    refused_batch = make_spans(200, id_prefix="during", extra={"padding": "x" * 200})
    refused = post(running, refused_batch)
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    not_ready = readiness(running)
    assert not_ready.status_code == 503
    body = not_ready.json()
    assert body["status"] == "not ready"
    assert body["checks"]["ledger_commits"] is False
    assert "full" in body["reasons"]["ledger_commits"]
    assert (
        post(running, make_spans(50, id_prefix="still", extra={"p": "y" * 200})).status_code == 503
    )
    assert readiness(running).status_code == 503

    ledger.free()
    # No sender comes back first: the collector finds out by itself.
    eventually(lambda: readiness(running).status_code == 200, "ready again")
    assert readiness(running).json()["checks"]["ledger_commits"] is True
    # The exporter's retry of the refused batch is acknowledged and counted once.
    retried = post(running, refused_batch)
    assert retried.status_code == 200
    ids = sorted(event.response_id or "" for event in running.events())
    assert ids.count("before-0") == 1
    assert len([i for i in ids if i.startswith("before-")]) == 3
    assert len([i for i in ids if i.startswith("during-")]) == 200
    assert len(ids) == len(set(ids))


def test_ready_only_between_a_complete_start_and_the_stop(tmp_path: Path) -> None:
    collector = Collector(collector_config(tmp_path))
    assert "new" in (collector.readiness()["started"] or "")

    async def lifetime() -> tuple[str | None, str | None]:
        await collector.start()
        running = collector.readiness()["started"]
        await collector.stop()
        return running, collector.readiness()["started"]

    running, stopped = asyncio.run(lifetime())
    assert running is None
    assert "stopped" in (stopped or "")
