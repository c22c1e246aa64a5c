"""Kill ``tollmeter export`` with SIGKILL in the middle of a long export, run it again,
and find every event exactly once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import open_ledger

_TOLLMETER = Path(sys.executable).with_name("tollmeter")
_EVENTS = 30_000


def _events(start: int, count: int) -> list[UsageEvent]:
    day = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    return [
        UsageEvent(
            event_id=f"crash-{i}",
            event_time_ns=int((day + dt.timedelta(seconds=37 * i)).timestamp()) * 10**9,
            provider="openai",
            operation="chat",
            tenant_id=f"tenant-{i % 7}",
            request_model="gpt-4o",
            input_tokens=100 + i % 13,
            output_tokens=10 + i % 5,
        )
        for i in range(start, start + count)
    ]


def _command(data_dir: Path) -> list[str]:
    return [str(_TOLLMETER), "export", "--data-dir", str(data_dir), "--collector-id", "crash"]


def test_killed_export_command_resumes_exactly_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open_ledger(f"sqlite:///{data_dir / 'ledger.db'}") as ledger:
        ledger.append(_events(0, _EVENTS))
    config = tmp_path / "small-batches.yaml"
    config.write_text("export:\n  batch_size: 500\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLMETER_")}
    env["TOLLMETER_CONFIG"] = str(config)

    child = subprocess.Popen(
        _command(data_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    export_dir = data_dir / "export"
    deadline = time.monotonic() + 60
    # Let a few batches land, then kill it wherever it is.
    while len(list(export_dir.glob("date=*/*.parquet"))) < 6 and child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    child.kill()
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the export finished before it could be killed"

    with open_ledger(f"sqlite:///{data_dir / 'ledger.db'}") as ledger:
        ledger.append(_events(_EVENTS, 100))
    rerun = subprocess.run(
        _command(data_dir), env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert rerun.returncode == 0, rerun.stderr

    ids = ds.dataset(export_dir, format="parquet", partitioning="hive").to_table()["event_id"]
    counts = Counter(ids.to_pylist())
    assert len(counts) == _EVENTS + 100
    assert set(counts.values()) == {1}
