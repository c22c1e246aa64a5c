"""Parquet export throughput and memory, against bare pyarrow in the same run.

Fills a SQLite ledger with synthetic usage events, then measures:

- ``exporter``: ``Exporter.export()`` end to end in a fresh process: ledger reads
  (plain rows, ``Ledger.read_event_rows``), Arrow conversion, date partitioning,
  zstd Parquet, fsync and rename, cursor updates; its peak RSS is the memory needed
  to export the whole backlog;
- ``exporter_objects`` (with ``--compare-objects``): the same through
  ``read_events``, one ``UsageEvent`` per row, as a source without a row reader;
- ``exporter_write_stage``: the same work without the ledger reads, from ledger
  rows already in memory (a sample of at most ``--sample`` events);
- ``bare_from_events``: ``pa.Table.from_pylist`` of the same events, then one
  ``pyarrow.parquet.write_table`` (the naive way to write them);
- ``bare_write_table``: ``pyarrow.parquet.write_table`` of the finished Arrow table.

Prints one JSON object. Usage: ``python benchmarks/export.py --events 5000000``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.export import Exporter, events_to_table
from tollmeter.collector.storage import Ledger, open_ledger

DAY_NS = 86_400 * 10**9
START_NS = 1_793_577_600 * 10**9  # 2026-11-02 00:00 UTC


def synthetic(start: int, count: int, days: int) -> list[UsageEvent]:
    spread = max(1, days) * DAY_NS
    return [
        UsageEvent(
            event_id=f"bench-{i:012d}",
            event_time_ns=START_NS + (i * 7_919_000_003) % spread,
            provider="openai" if i % 3 else "anthropic",
            operation="chat",
            tenant_id=f"tenant-{i % 50}",
            project_id=f"project-{i % 200}",
            feature=("search", "chat", "summarize")[i % 3],
            environment="prod",
            service_name="api",
            request_model="gpt-4o" if i % 3 else "claude-sonnet-4-5",
            response_model="gpt-4o-2024-08-06" if i % 3 else "claude-sonnet-4-5",
            response_id=f"resp-{i}",
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
            input_tokens=500 + i % 1000,
            cache_read_input_tokens=i % 300,
            output_tokens=100 + i % 400,
            reasoning_output_tokens=i % 50,
            total_tokens=600 + i % 1000 + i % 400,
            cost=Decimal(500 + i % 1000).scaleb(-8),
            currency="USD",
            price_source="genai-prices 0.2.3 (openai/gpt-4o, prices as of 2026-11-02)",
            duration_s=0.5 + (i % 100) / 100,
            attempt=1,
            collector_id="bench",
        )
        for i in range(start, start + count)
    ]


def fill(url: str, count: int, days: int) -> float:
    began = time.perf_counter()
    with open_ledger(url) as ledger:
        chunk = 20_000
        for start in range(0, count, chunk):
            ledger.append(synthetic(start, min(chunk, count - start), days))
    return time.perf_counter() - began


def child_export(url: str, directory: str, batch_size: int, objects: bool) -> None:
    with open_ledger(url) as ledger:
        source = _ObjectsOnly(ledger) if objects else ledger
        exporter = Exporter(source, Path(directory), collector_id="bench", batch_size=batch_size)
        began = time.perf_counter()
        result = exporter.export(timeout=24 * 3600)
        seconds = time.perf_counter() - began
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"events": result.events, "seconds": seconds, "peak_rss_mib": peak_kib / 1024})
    )


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the backlog")
    parser.add_argument("--sample", type=int, default=200_000, help="events for in-memory stages")
    parser.add_argument("--days", type=int, default=3, help="date partitions the events span")
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument(
        "--compare-objects",
        action="store_true",
        help="also export through read_events, one UsageEvent per row",
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("URL", "DIR", "BATCH", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child_export(args.child[0], args.child[1], int(args.child[2]), args.child[3] == "objects")
        return

    with tempfile.TemporaryDirectory(prefix="tollmeter-bench-") as tmp:
        root = Path(tmp)
        url = f"sqlite:///{root / 'ledger.db'}"
        fill_s = fill(url, args.events, args.days)
        exported = _export_in_child(url, root / "export", args.batch_size, "rows")
        by_objects = (
            _export_in_child(url, root / "export-objects", args.batch_size, "objects")
            if args.compare_objects
            else None
        )

        sample = [
            dataclasses.replace(e, sequence=i + 1)
            for i, e in enumerate(synthetic(0, min(args.sample, args.events), args.days))
        ]
        n = len(sample)
        stage_dir = root / "stage"
        rows = [_ledger_row(e) for e in sample]
        stage = Exporter(_MemorySource(rows), stage_dir, collector_id="bench", batch_size=n)
        stage_s = timed(stage.export)
        table = events_to_table(sample, collector_id="bench")
        naive_s = timed(
            lambda: pq.write_table(
                pa.Table.from_pylist([_row(e) for e in sample]), root / "naive.parquet"
            )
        )
        bare_s = timed(lambda: pq.write_table(table, root / "bare.parquet"))

    exporter_rate = exported["events"] / exported["seconds"]
    stage_rate = n / stage_s
    naive_rate = n / naive_s
    bare_rate = n / bare_s
    report: dict[str, object] = {
        "events": args.events,
        "sample_events": n,
        "batch_size": args.batch_size,
        "ledger_fill_events_per_s": round(args.events / fill_s),
        "exporter_events_per_s": round(exporter_rate),
        "exporter_peak_rss_mib": round(exported["peak_rss_mib"], 1),
    }
    if by_objects is not None:
        objects_rate = by_objects["events"] / by_objects["seconds"]
        report["exporter_objects_events_per_s"] = round(objects_rate)
        report["exporter_objects_peak_rss_mib"] = round(by_objects["peak_rss_mib"], 1)
        report["ratio_exporter_vs_exporter_objects"] = round(exporter_rate / objects_rate, 2)
    report |= {
        "exporter_write_stage_events_per_s": round(stage_rate),
        "bare_from_events_events_per_s": round(naive_rate),
        "bare_write_table_events_per_s": round(bare_rate),
        "ratio_write_stage_vs_bare_from_events": round(stage_rate / naive_rate, 2),
        "ratio_write_stage_vs_bare_write_table": round(stage_rate / bare_rate, 2),
        "ratio_exporter_vs_bare_from_events": round(exporter_rate / naive_rate, 2),
        "ratio_exporter_vs_bare_write_table": round(exporter_rate / bare_rate, 2),
    }
    print(json.dumps(report, indent=2))


def _export_in_child(url: str, directory: Path, batch_size: int, path: str) -> dict[str, float]:
    run = subprocess.run(
        [sys.executable, __file__, "--child", url, str(directory), str(batch_size), path],
        capture_output=True,
        text=True,
        check=True,
        timeout=24 * 3600,
    )
    result: dict[str, float] = json.loads(run.stdout)
    return result


def _ledger_row(event: UsageEvent) -> tuple[object, ...]:
    """The event as ``Ledger.read_event_rows`` gives it: field values, cost as text."""
    return tuple(
        str(value) if field.name == "cost" and value is not None else value
        for field, value in zip(dataclasses.fields(event), dataclasses.astuple(event), strict=True)
    )


def _row(event: UsageEvent) -> dict[str, object]:
    row = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    row["uncached_input_tokens"] = event.uncached_input_tokens
    return row


class _ObjectsOnly:
    """A ledger seen through ``read_events`` only, as a source without a row reader."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        return self._ledger.read_events(after_sequence, limit)

    def get_state(self, key: str) -> str | None:
        return self._ledger.get_state(key)

    def set_state(self, key: str, value: str) -> None:
        self._ledger.set_state(key, value)


class _MemorySource:
    """Ledger rows already in memory, with the ledger's read and state interface."""

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self._rows = rows
        self._state: dict[str, str] = {}

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        raise AssertionError("the exporter reads rows when a source offers them")

    def read_event_rows(self, after_sequence: int, limit: int) -> list[tuple[object, ...]]:
        return self._rows[after_sequence : after_sequence + limit]

    def get_state(self, key: str) -> str | None:
        return self._state.get(key)

    def set_state(self, key: str, value: str) -> None:
        self._state[key] = value


if __name__ == "__main__":
    main()
