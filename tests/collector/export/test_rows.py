"""The columnar read path: ledger rows give exactly the table and files of the event objects."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from tollmeter.collector._records import USAGE_SOURCES, UsageEvent
from tollmeter.collector.export import Exporter, events_to_table
from tollmeter.collector.export._local import LocalStore
from tollmeter.collector.export._schema import rows_to_table
from tollmeter.collector.observability import TimedLedger
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.storage import Ledger, SQLiteLedger
from tollmeter.collector.storage._codec import event_values

_FIELDS = tuple(f.name for f in dataclasses.fields(UsageEvent))
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_COUNTS = st.integers(0, 2**40)
_TWELVE_DECIMALS = st.decimals(
    min_value=Decimal("-1e6"), max_value=Decimal("1e9"), places=12, allow_nan=False
)


@st.composite
def _events(draw: st.DrawFn) -> list[UsageEvent]:
    count = draw(st.integers(1, 25))
    events = []
    for index in range(count):
        cache_read, cache_write = draw(_COUNTS), draw(_COUNTS)
        priced = draw(st.booleans())
        events.append(
            UsageEvent(
                event_id=f"{index}-{draw(_TEXT)}",
                event_time_ns=draw(st.integers(0, 2**62)),
                provider=draw(st.sampled_from(["openai", "anthropic", "ünïcödé 🚀"])),
                operation=draw(st.sampled_from(["chat", "embeddings"])),
                tenant_id=draw(_TEXT),
                input_tokens=cache_read + cache_write + draw(_COUNTS),
                cache_read_input_tokens=cache_read,
                cache_write_input_tokens=cache_write,
                output_tokens=draw(_COUNTS),
                reasoning_output_tokens=draw(_COUNTS),
                total_tokens=draw(_COUNTS),
                usage_source=draw(st.sampled_from(USAGE_SOURCES)),
                project_id=draw(st.none() | _TEXT),
                user_id=draw(st.none() | _TEXT),
                feature=draw(st.none() | st.just("")),
                request_model=draw(st.none() | _TEXT),
                response_id=draw(st.none() | _TEXT),
                cost=draw(_TWELVE_DECIMALS) if priced else None,
                currency="USD" if priced else None,
                price_source="test prices" if priced else draw(st.none() | st.just("unpriced")),
                duration_s=draw(st.none() | st.floats(0, 1e6)),
                status=draw(st.sampled_from(["ok", "error"])),
                error_type=draw(st.none() | _TEXT),
                attempt=draw(st.none() | st.integers(0, 2**31 - 1)),
                collector_id=draw(st.none() | st.sampled_from(["", "own"])),
            )
        )
    return events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events(), collector_id=st.none() | st.just("fallback"))
def test_rows_give_the_table_of_the_events(
    events: list[UsageEvent], collector_id: str | None
) -> None:
    with SQLiteLedger(None) as ledger:
        committed = ledger.append(events).committed
        rows = ledger.read_event_rows(0, len(events))
        stored = ledger.read_events(0, len(events))
    expected = events_to_table(committed, collector_id=collector_id)
    assert events_to_table(stored, collector_id=collector_id).equals(expected)
    table = rows_to_table(rows, collector_id=collector_id)
    assert table.schema.equals(expected.schema, check_metadata=True)
    assert table.equals(expected)


def test_the_default_row_reader_matches_the_sqlite_one(ledger: Ledger, make_events) -> None:
    ledger.append(make_events(40))
    # TimedLedger does not override read_event_rows: it uses the base class's.
    histogram = Histogram("commit_seconds", "test", registry=CollectorRegistry())
    wrapped = TimedLedger(ledger, histogram)
    rows = wrapped.read_event_rows(5, 20)
    assert len(rows) == 20
    assert all(isinstance(row[_FIELDS.index("tenant_id")], str) for row in rows)
    own = ledger.read_event_rows(5, 20)
    assert rows_to_table(rows, collector_id="c").equals(rows_to_table(own, collector_id="c"))
    assert rows_to_table(rows, collector_id="c").equals(
        events_to_table(ledger.read_events(5, 20), collector_id="c")
    )


@pytest.mark.parametrize(
    "cost",
    [Decimal("0.0000000000001"), Decimal("1e30"), Decimal("NaN"), Decimal("-Infinity")],
)
def test_costs_the_column_cannot_hold_are_treated_as_for_events(cost: Decimal) -> None:
    events = [
        UsageEvent("a", 1, "openai", "chat", "t", cost=Decimal("0.5"), sequence=1),
        UsageEvent("b", 2, "openai", "chat", "t", cost=cost, sequence=2),
    ]
    rows = [(*event_values(event), event.sequence) for event in events]
    table = rows_to_table(rows, collector_id=None)
    assert table.equals(events_to_table(events, collector_id=None))
    assert table.column("cost")[0].as_py() == Decimal("0.5")


def test_no_rows_give_an_empty_table() -> None:
    table = rows_to_table([], collector_id="c")
    assert table.num_rows == 0
    assert table.equals(events_to_table([], collector_id="c"))


class _ObjectsOnly:
    """The ledger seen through ``read_events`` only: the exporter's object path."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        return self._ledger.read_events(after_sequence, limit)

    def get_state(self, key: str) -> str | None:
        return self._ledger.get_state(f"objects.{key}")

    def set_state(self, key: str, value: str) -> None:
        self._ledger.set_state(f"objects.{key}", value)


def _exported(directory: Path) -> tuple[list[str], pa.Table]:
    files = sorted(
        LocalStore(directory).export_files(), key=lambda f: (f.first_sequence, f.relative)
    )
    names = [file.relative for file in files if file.collector == "c"]
    tables = [pq.read_table(directory / name) for name in names]
    return names, pa.concat_tables(tables)


@pytest.mark.parametrize("priced", [False, True])
def test_exporter_writes_the_same_files_from_rows_and_from_events(
    ledger: Ledger, make_events, tmp_path: Path, priced: bool
) -> None:
    events = make_events(700, days=3)
    # Unpriced events (no price source) are priced by an exporter that has a pricer.
    events[::7] = [
        dataclasses.replace(e, cost=None, currency=None, price_source=None) for e in events[::7]
    ]
    ledger.append(events)
    pricer = Pricer() if priced else None
    results = [
        Exporter(
            source,
            tmp_path / name,
            collector_id="c",
            batch_size=300,
            read_chunk_size=64,
            pricer=pricer,
        ).export()
        for name, source in (("rows", ledger), ("objects", _ObjectsOnly(ledger)))
    ]
    assert [result.events for result in results] == [700, 700]
    assert results[0].files == results[1].files
    names, table = _exported(tmp_path / "rows")
    object_names, object_table = _exported(tmp_path / "objects")
    assert names == object_names
    assert table.equals(object_table, check_metadata=True)
    assert sorted(table.column("sequence").to_pylist()) == list(range(1, 701))
    prices = table.column("price_source").to_pylist()
    assert (None in prices) is not priced
