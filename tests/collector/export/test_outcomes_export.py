"""Outcomes in Parquet beside the events: every outcome once, also when a run stops at
any step of the protocol, and never mixed into the events dataset."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest

from tests.collector.conftest import RunningCollector
from tollmeter.collector._outcomes import Outcome, outcome_id
from tollmeter.collector.export._local import LocalStore
from tollmeter.collector.export._outcomes import OUTCOMES_DIRECTORY, OutcomeExporter
from tollmeter.collector.storage import SQLiteLedger

DAY_NS = 86_400 * 1_000_000_000
BASE_NS = 1_773_500_966 * 1_000_000_000


def _outcomes(count: int, *, start: int = 0) -> list[Outcome]:
    return [
        Outcome(
            outcome_id=outcome_id(f"wf-{n}", "resolved"),
            tenant_id="acme",
            workflow_id=f"wf-{n}",
            name="resolved",
            value=Decimal(n) / 4,
            # Two dates, so that a batch writes two files.
            time_ns=BASE_NS + (n % 2) * DAY_NS,
        )
        for n in range(start, start + count)
    ]


def _exported(directory: Path) -> list[dict[str, object]]:
    table = ds.dataset(directory / OUTCOMES_DIRECTORY, format="parquet", partitioning="hive")
    return sorted(table.to_table().to_pylist(), key=lambda row: int(str(row["sequence"])))


class Stop(Exception):
    pass


def _stopping_at(step: str) -> Callable[[str], None]:
    def checkpoint(name: str) -> None:
        if name == step:
            raise Stop(name)

    return checkpoint


@pytest.mark.parametrize("step", ["intent_recorded", "temp_written", "renamed", "cursor_advanced"])
def test_a_run_stopped_at_any_step_exports_each_outcome_once(tmp_path: Path, step: str) -> None:
    with SQLiteLedger(str(tmp_path / "ledger.db")) as ledger:
        ledger.append_outcomes(_outcomes(5))
        store = LocalStore(tmp_path / "export")
        stopped = OutcomeExporter(
            ledger, store, collector_id="c1", batch_size=3, checkpoint=_stopping_at(step)
        )
        # The checkpoint raises where a crash would stop the process; nothing escapes.
        assert stopped.export(timeout=30) == 0
        # More outcomes arrive before the next run, which must finish the old batch first.
        ledger.append_outcomes(_outcomes(2, start=5))
        exporter = OutcomeExporter(ledger, store, collector_id="c1", batch_size=3)
        exporter.export(timeout=30)
        assert exporter.export(timeout=30) == 0
    rows = _exported(tmp_path / "export")
    assert [row["sequence"] for row in rows] == list(range(1, 8))
    assert [row["value"] for row in rows] == [Decimal(n) / 4 for n in range(7)]
    assert {row["collector_id"] for row in rows} == {"c1"}
    assert {str(row["date"]) for row in rows} == {"2026-03-14", "2026-03-15"}


def test_the_collector_exports_outcomes_beside_the_events(
    collector_factory: Callable[..., RunningCollector],
) -> None:
    collector = collector_factory(export={"interval": "1h"})
    outcomes = [
        {"name": "resolved", "workflow_id": "wf-1", "tenant": "acme", "value": "0.1"},
        {"name": "resolved", "workflow_id": "wf-2", "tenant": "acme"},
    ]
    url = collector.management_url
    assert httpx.post(f"{url}/api/v1/outcomes", json=outcomes, timeout=10).json()["stored"] == 2
    assert httpx.post(f"{url}/api/v1/export", timeout=30).status_code == 200
    # A repeated report and a second run add nothing.
    assert httpx.post(f"{url}/api/v1/outcomes", json=outcomes, timeout=10).json()["stored"] == 0
    assert httpx.post(f"{url}/api/v1/export", timeout=30).status_code == 200
    export_dir = collector.config.data_dir / "export"
    rows = _exported(export_dir)
    assert [(row["workflow_id"], row["value"]) for row in rows] == [
        ("wf-1", Decimal("0.1")),
        ("wf-2", Decimal(1)),
    ]
    # Read as the events dataset, the export holds no outcome rows.
    events = ds.dataset(export_dir, format="parquet", partitioning="hive")
    assert events.files == []
