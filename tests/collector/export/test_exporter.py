from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.export import (
    CURSOR_KEY,
    SCHEMA,
    Exporter,
    ExportStatus,
    FileFormat,
)
from tollmeter.collector.pricing import Pricer
from tollmeter.collector.storage import Ledger


def _totals(events: list[UsageEvent]) -> dict[str, tuple[int, int, Decimal]]:
    sums: dict[str, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for event in events:
        row = sums[event.tenant_id]
        row[0] += event.input_tokens
        row[1] += event.output_tokens
        row[2] += event.cost or Decimal(0)
    return {tenant: (i, o, c) for tenant, (i, o, c) in sums.items()}


def _dataset_totals(directory: Path) -> dict[str, tuple[int, int, Decimal]]:
    table = ds.dataset(directory, format="parquet", partitioning="hive").to_table()
    sums: dict[str, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for row in table.select(["tenant_id", "input_tokens", "output_tokens", "cost"]).to_pylist():
        sums[row["tenant_id"]][0] += row["input_tokens"]
        sums[row["tenant_id"]][1] += row["output_tokens"]
        sums[row["tenant_id"]][2] += row["cost"] or Decimal(0)
    return {tenant: (i, o, c) for tenant, (i, o, c) in sums.items()}


def _duckdb_totals(directory: Path) -> dict[str, tuple[int, int, Decimal]]:
    query = f"""
        SELECT tenant_id, sum(input_tokens), sum(output_tokens), coalesce(sum(cost), 0)
        FROM read_parquet('{directory}/*/*.parquet', hive_partitioning = true)
        GROUP BY tenant_id
    """
    with duckdb.connect() as con:
        return {t: (int(i), int(o), Decimal(c)) for t, i, o, c in con.sql(query).fetchall()}


def _exported_ids(directory: Path) -> list[str]:
    table = ds.dataset(directory, format="parquet", partitioning="hive").to_table()
    return table.column("event_id").to_pylist()


def test_export_writes_every_event_once_readable_by_pyarrow_and_duckdb(
    ledger: Ledger, export_dir: Path, make_events
) -> None:
    events = make_events(1000)
    ledger.append(events)
    exporter = Exporter(ledger, export_dir, collector_id="col-1", batch_size=300)
    result = exporter.export()
    assert result.status is ExportStatus.SUCCESS
    assert (result.events, result.cursor, result.caught_up) == (1000, 1000, True)
    # Four batches of at most 300 events, each spread over three days.
    assert len(result.files) == 12
    assert sorted(_exported_ids(export_dir)) == sorted(e.event_id for e in events)

    expected = _totals(ledger.read_events(0, 10_000))
    assert _dataset_totals(export_dir) == expected
    assert _duckdb_totals(export_dir) == expected

    again = exporter.export()
    assert (again.status, again.events, again.files) == (ExportStatus.SUCCESS, 0, ())


def test_layout_names_encoding_and_metadata(ledger: Ledger, export_dir: Path, make_events) -> None:
    ledger.append(make_events(30))
    exporter = Exporter(
        ledger, export_dir, collector_id="eu/west 1", file_format=FileFormat(row_group_size=4)
    )
    result = exporter.export()
    assert sorted(p.name for p in export_dir.iterdir() if p.is_dir()) == [
        "date=2026-11-01",
        "date=2026-11-02",
        "date=2026-11-03",
    ]
    first = export_dir / result.files[0]
    assert (
        result.files[0]
        == "date=2026-11-01/eu_west_1-00000000000000000001-00000000000000000028.parquet"
    )
    parquet = pq.ParquetFile(first)
    assert parquet.schema_arrow.equals(SCHEMA)
    meta = parquet.schema_arrow.metadata
    assert meta[b"tollmeter.first_sequence"] == b"1"
    assert meta[b"tollmeter.last_sequence"] == b"28"
    assert parquet.metadata.num_row_groups == 3  # 10 rows, row groups of 4
    columns = {parquet.metadata.row_group(0).column(i).path_in_schema: i for i in range(37)}
    tenant = parquet.metadata.row_group(0).column(columns["tenant_id"])
    event_id = parquet.metadata.row_group(0).column(columns["event_id"])
    assert tenant.compression == "ZSTD"
    assert "RLE_DICTIONARY" in tenant.encodings
    assert "RLE_DICTIONARY" not in event_id.encodings
    # Hidden bookkeeping files are ignored by pyarrow and DuckDB's *.parquet glob.
    assert (export_dir / "_tollmeter_export.json").exists()
    assert ds.dataset(export_dir, format="parquet", partitioning="hive").count_rows() == 30


def test_new_events_go_to_new_files_and_old_files_never_change(
    ledger: Ledger, export_dir: Path, make_events
) -> None:
    ledger.append(make_events(10))
    exporter = Exporter(ledger, export_dir, collector_id="c")
    first = exporter.export()
    stamps = {name: (export_dir / name).stat().st_mtime_ns for name in first.files}
    ledger.append(make_events(5, start=10))
    second = exporter.export()
    assert second.events == 5
    assert not set(first.files) & set(second.files)
    assert {name: (export_dir / name).stat().st_mtime_ns for name in first.files} == stamps
    assert len(_exported_ids(export_dir)) == 15


def test_partitions_follow_the_configured_time_zone(ledger: Ledger, export_dir: Path) -> None:
    late_evening_utc = dt.datetime(2026, 11, 1, 23, 30, tzinfo=dt.timezone.utc)
    event = UsageEvent(
        event_id="tz",
        event_time_ns=int(late_evening_utc.timestamp()) * 10**9,
        provider="openai",
        operation="chat",
        tenant_id="acme",
    )
    ledger.append([event])
    tokyo = Exporter(ledger, export_dir, collector_id="c", timezone="Asia/Tokyo").export()
    assert tokyo.files[0].startswith("date=2026-11-02/")


def test_wiped_directory_is_filled_again(ledger: Ledger, export_dir: Path, make_events) -> None:
    ledger.append(make_events(20))
    Exporter(ledger, export_dir, collector_id="c").export()
    for path in sorted(export_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    again = Exporter(ledger, export_dir, collector_id="c").export()
    assert again.events == 20
    assert len(_exported_ids(export_dir)) == 20


def test_restored_cursor_removes_files_beyond_it_and_rewrites_them(
    ledger: Ledger, export_dir: Path, make_events
) -> None:
    ledger.append(make_events(10))
    exporter = Exporter(ledger, export_dir, collector_id="c", batch_size=4)
    exporter.export()
    state = json.loads(ledger.get_state(CURSOR_KEY) or "{}")
    # As after restoring a ledger backup taken when only 5 events were exported.
    ledger.set_state(CURSOR_KEY, json.dumps({**state, "sequence": 5}))
    other_collector = (
        export_dir / "date=2026-11-01" / ("other-00000000000000000006-00000000000000000009.parquet")
    )
    other_collector.write_bytes(b"not ours")
    result = Exporter(ledger, export_dir, collector_id="c", batch_size=4).export()
    # The file holding sequences 5..8 straddled the restored cursor: 5..10 are rewritten.
    assert (result.events, result.cursor) == (6, 10)
    assert sorted(_exported_ids_of(export_dir, "c")) == sorted(e.event_id for e in make_events(10))
    assert other_collector.read_bytes() == b"not ours"


def _exported_ids_of(directory: Path, collector: str) -> list[str]:
    files = sorted(str(p) for p in directory.glob(f"*/{collector}-*.parquet"))
    return ds.dataset(files, format="parquet").to_table().column("event_id").to_pylist()


def test_unpriced_events_are_priced_at_export_and_priced_ones_kept(
    ledger: Ledger, export_dir: Path
) -> None:
    base = {
        "event_time_ns": 1_793_577_600 * 10**9,
        "provider": "openai",
        "operation": "chat",
        "tenant_id": "acme",
        "request_model": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 500,
    }
    ledger.append(
        [
            UsageEvent(event_id="raw", **base),
            UsageEvent(event_id="kept", cost=Decimal("1.5"), price_source="contract", **base),
            UsageEvent(event_id="odd", **{**base, "request_model": "mystery-9"}),
        ]
    )
    Exporter(ledger, export_dir, collector_id="c", pricer=Pricer()).export()
    rows = {
        r["event_id"]: r for r in ds.dataset(export_dir, partitioning="hive").to_table().to_pylist()
    }
    assert rows["raw"]["cost"] == Decimal("0.007500000000")
    assert rows["kept"]["cost"] == Decimal("1.5")
    assert rows["kept"]["price_source"] == "contract"
    assert rows["odd"]["cost"] is None
    assert rows["odd"]["price_source"] == "unpriced: unknown model mystery-9"


def test_concurrent_export_into_the_same_directory_is_busy_not_duplicated(
    ledger: Ledger, export_dir: Path, make_events
) -> None:
    ledger.append(make_events(5))
    inside: list[object] = []

    def nested(step: str) -> None:
        if step == "intent_recorded" and not inside:
            other = Exporter(ledger, export_dir, collector_id="c", timeout_s=0.2)
            inside.append(other.export())

    Exporter(ledger, export_dir, collector_id="c", checkpoint=nested).export()
    (busy,) = inside
    assert busy.status is ExportStatus.BUSY  # type: ignore[attr-defined]
    assert len(_exported_ids(export_dir)) == 5


def test_failures_are_results_and_the_next_run_recovers(
    ledger: Ledger, tmp_path: Path, make_events
) -> None:
    ledger.append(make_events(6))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the export directory should be")
    failed = Exporter(ledger, blocked, collector_id="c").export()
    assert failed.status is ExportStatus.FAILURE
    assert failed.error

    directory = tmp_path / "export"
    calls = []

    def fail_once(step: str) -> None:
        if step == "renamed" and not calls:
            calls.append(step)
            raise OSError("disk full")

    exporter = Exporter(ledger, directory, collector_id="c", checkpoint=fail_once)
    assert exporter.export().status is ExportStatus.FAILURE
    recovered = exporter.export()
    assert recovered.status is ExportStatus.SUCCESS
    assert sorted(_exported_ids(directory)) == sorted(e.event_id for e in make_events(6))


def test_deadline_stops_between_batches(ledger: Ledger, export_dir: Path, make_events) -> None:
    ledger.append(make_events(9))
    exporter = Exporter(ledger, export_dir, collector_id="c", batch_size=3)
    partial = exporter.export(timeout=0)
    assert partial.status is ExportStatus.BUSY or not partial.caught_up
    finished = exporter.export()
    assert finished.caught_up
    assert len(_exported_ids(export_dir)) == 9


def test_reset_exports_everything_again(ledger: Ledger, export_dir: Path, make_events) -> None:
    ledger.append(make_events(4))
    exporter = Exporter(ledger, export_dir, collector_id="c", batch_size=3)
    exporter.export()
    exporter.reset()
    assert exporter.export().events == 4
    assert len(_exported_ids(export_dir)) == 4


@pytest.mark.parametrize(("batch_size", "read_chunk_size"), [(1, 10), (7, 10), (7, 3), (20, 4)])
def test_batches_of_any_size_give_the_same_rows(
    ledger: Ledger, export_dir: Path, make_events, batch_size: int, read_chunk_size: int
) -> None:
    ledger.append(make_events(15))
    Exporter(
        ledger,
        export_dir,
        collector_id="c",
        batch_size=batch_size,
        read_chunk_size=read_chunk_size,
    ).export()
    table = ds.dataset(export_dir, partitioning="hive").to_table().sort_by("sequence")
    assert table.column("sequence").to_pylist() == list(range(1, 16))


def test_interrupted_chunked_batch_is_rewritten_under_the_same_names(
    ledger: Ledger, export_dir: Path, make_events
) -> None:
    ledger.append(make_events(10))
    written: list[str] = []

    def fail_after_first_file(step: str) -> None:
        if step == "renamed" and not written:
            written.extend(p.name for p in export_dir.glob("date=*/*.parquet"))
            raise OSError("power cut")

    interrupted = Exporter(
        ledger,
        export_dir,
        collector_id="c",
        batch_size=8,
        read_chunk_size=3,
        checkpoint=fail_after_first_file,
    )
    assert interrupted.export().status is ExportStatus.FAILURE
    ledger.append(make_events(5, start=10))
    resumed = Exporter(ledger, export_dir, collector_id="c", batch_size=8, read_chunk_size=3)
    result = resumed.export()
    assert (result.events, result.cursor) == (15, 15)
    names = [name.split("/")[1] for name in result.files]
    assert written[0] in names
    # The first batch still ends at sequence 8, as recorded before the failure.
    ranges = [tuple(int(part) for part in name[:-8].split("-")[1:]) for name in names]
    assert all(last <= 8 for first, last in ranges if first <= 8)
    assert all(first > 8 for first, last in ranges if last > 8)
    assert sorted(_exported_ids(export_dir)) == sorted(e.event_id for e in make_events(15))
