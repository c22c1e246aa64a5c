"""Kill the exporting process at each step of a batch, re-run, and count every event once
(and find every file with a manifest that chains)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tollmeter.collector.export import Exporter, ExportStatus
from tollmeter.collector.export._verify import verify_export
from tollmeter.collector.storage import open_ledger

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tollmeter.collector.export import Exporter
    from tollmeter.collector.storage import open_ledger

    database, directory, point, nth, batch_size = sys.argv[1:]
    seen = 0

    def checkpoint(step):
        global seen
        if step == point:
            seen += 1
            if seen == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    ledger = open_ledger("sqlite:///" + database)
    exporter = Exporter(ledger, Path(directory), collector_id="c",
                        batch_size=int(batch_size), checkpoint=checkpoint)
    print(exporter.export())
    """
)

BATCH = 8


def _run_child(database: Path, directory: Path, point: str, nth: int) -> int:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(database), str(directory), point, str(nth), str(BATCH)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return child.returncode


def _final_files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.glob("date=*/*.parquet")}


@pytest.mark.parametrize(
    ("point", "nth"),
    [
        ("intent_recorded", 2),
        ("temp_written", 4),
        ("renamed", 4),
        ("between_partitions", 3),
        ("cursor_advanced", 2),
    ],
)
def test_killed_export_resumes_with_every_event_exactly_once(
    tmp_path: Path, make_events, point: str, nth: int
) -> None:
    database = tmp_path / "ledger.db"
    directory = tmp_path / "export"
    with open_ledger(f"sqlite:///{database}") as ledger:
        ledger.append(make_events(20))

    assert _run_child(database, directory, point, nth) == -signal.SIGKILL
    before = _final_files(directory)

    with open_ledger(f"sqlite:///{database}") as ledger:
        # Events that arrive between the crash and the re-run must not change the
        # interrupted batch: its files keep their names and nothing is written twice.
        ledger.append(make_events(11, start=20))
        result = Exporter(ledger, directory, collector_id="c", batch_size=BATCH).export()
        assert result.status is ExportStatus.SUCCESS
        assert result.cursor == 31

    after = _final_files(directory)
    assert before <= after
    ids = ds.dataset(directory, format="parquet", partitioning="hive").to_table()["event_id"]
    counts = Counter(ids.to_pylist())
    assert len(counts) == 31
    assert set(counts.values()) == {1}
    assert not list(directory.glob("date=*/.*"))
    # Each file has its manifest, and the manifests chain without gap or overlap.
    verdict = verify_export(directory)
    assert verdict.problems == []
    assert (verdict.files, verdict.rows) == (len(after), 31)


def test_killed_first_export_before_any_file_leaves_a_clean_directory(
    tmp_path: Path, make_events
) -> None:
    database = tmp_path / "ledger.db"
    directory = tmp_path / "export"
    with open_ledger(f"sqlite:///{database}") as ledger:
        ledger.append(make_events(3))
    assert _run_child(database, directory, "temp_written", 1) == -signal.SIGKILL
    assert _final_files(directory) == set()
    assert len(list(directory.glob("date=*/.*.tmp"))) == 1
    with open_ledger(f"sqlite:///{database}") as ledger:
        assert Exporter(ledger, directory, collector_id="c").export().events == 3
    assert not list(directory.glob("date=*/.*.tmp"))
