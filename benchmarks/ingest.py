"""Ingest throughput: OTLP decode, usage extraction and durable ledger commits.

Measures, on the same synthetic GenAI spans (serialized OTLP protobuf requests of
``--batch`` spans each), in one run:

- ``decode``: ``ExportTraceServiceRequest.ParseFromString`` alone (the floor any
  OTLP receiver pays);
- ``decode_extract``: decode plus ``Extractor.extract`` (usage events built);
- ``bare_sqlite``: ``sqlite3`` ``executemany`` of the same event rows into a plain
  table, one transaction per request, WAL and the same ``synchronous`` setting;
- ``ledger_append``: decode, extract and ``Ledger.append`` per request (dedupe,
  rollups, fsync'd commit), one request at a time;
- ``pipeline``: ``Pipeline.ingest_traces`` with ``--concurrency`` requests in flight
  (group commit), with per-request latency percentiles;
- ``rebuild``: ``Meters.rebuild`` from a ledger of ``--rebuild-events`` events;
- ``profile`` (with ``--profile``): the functions with the most own time in the
  decode, extract and append path, as shares of the total.

Rates are spans per wall-clock second and per CPU second of this process (all
threads). Prints one JSON object. Usage:
``python benchmarks/ingest.py --spans 20000 --batch 100 --batch 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tollmeter.collector._extract import Extractor
from tollmeter.collector._meters import Meters
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import open_ledger
from tollmeter.collector.storage._schema import EVENT_COLUMNS

START_NS = 1_793_577_600 * 10**9  # 2026-11-02 00:00 UTC
DAY_NS = 86_400 * 10**9


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def payload(first: int, count: int) -> bytes:
    """One OTLP request of ``count`` chat spans as the OpenTelemetry SDK would send them."""
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [
            _kv("service.name", "shop-api"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", "1.45.2"),
            _kv("deployment.environment.name", "prod"),
        ]
    )
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "tollmeter.instrumentation.openai"
    for i in range(first, first + count):
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": f"chatcmpl-{i:024d}",
            "gen_ai.response.finish_reasons": "stop",
            "gen_ai.request.max_tokens": 1024,
            "gen_ai.usage.input_tokens": 1200 + i % 500,
            "gen_ai.usage.output_tokens": 300 + i % 100,
            "gen_ai.usage.cache_read.input_tokens": 1024,
            "server.address": "api.openai.com",
            "server.port": 443,
            "tollmeter.tenant.id": f"tenant-{i % 50}",
            # Projects belong to tenants: 50 tenants x 3 features = 150 rollup cells.
            "tollmeter.project.id": f"project-{i % 50 % 7}",
            "tollmeter.feature": ("search", "chat", "summarize")[i % 3],
            "tollmeter.usage.source": "provider",
        }
        scope.spans.append(
            Span(
                trace_id=i.to_bytes(16, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                name="chat gpt-4o-mini",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=START_NS + i * 1_000_000,
                end_time_unix_nano=START_NS + i * 1_000_000 + 800_000_000,
                attributes=[_kv(k, v) for k, v in attributes.items()],
            )
        )
    return message.SerializeToString()


def decode(raw: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(raw)
    return message


def _timed(spans: int, work: Callable[[], object]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "seconds": round(wall, 4),
        "cpu_seconds": round(cpu, 4),
        "spans_per_s": round(spans / wall),
        "spans_per_cpu_s": round(spans / cpu) if cpu > 0 else 0,
    }


def bare_sqlite(path: Path, batches: list[list[UsageEvent]], synchronous: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"CREATE TABLE events (sequence INTEGER PRIMARY KEY, {', '.join(EVENT_COLUMNS)})")
    columns, marks = ", ".join(EVENT_COLUMNS), ", ".join("?" * len(EVENT_COLUMNS))
    insert = f"INSERT INTO events ({columns}) VALUES ({marks})"
    for batch in batches:
        rows = [
            tuple(
                str(v) if isinstance(v, Decimal) else v
                for v in (getattr(e, n) for n in EVENT_COLUMNS)
            )
            for e in batch
        ]
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
    conn.close()


async def run_pipeline(
    url: str, payloads: list[bytes], concurrency: int, synchronous: str
) -> tuple[list[float], dict[str, int]]:
    ledger = open_ledger(url, synchronous=synchronous)
    pipeline = Pipeline(ledger=ledger, extractor=Extractor(), max_pending_spans=10**7)
    await pipeline.start()
    latencies: list[float] = []
    queue = list(reversed(payloads))

    async def client() -> None:
        while queue:
            raw = queue.pop()
            began = time.perf_counter()
            await pipeline.ingest_traces(decode(raw))
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    await pipeline.stop(timeout=60)
    stats = pipeline.stats()
    ledger.close()
    return latencies, {"commits": stats.commits, "events": stats.events_committed}


def measure_batch(
    workdir: Path, spans: int, batch: int, concurrency: int, synchronous: str
) -> dict[str, Any]:
    payloads = [payload(first, batch) for first in range(0, spans, batch)]
    total = len(payloads) * batch
    extractor = Extractor()
    decoded = [decode(raw) for raw in payloads]
    events = [extractor.extract(message).events for message in decoded]
    result: dict[str, Any] = {"batch": batch, "spans": total}
    result["decode"] = _timed(total, lambda: [decode(raw) for raw in payloads])
    result["decode_extract"] = _timed(
        total, lambda: [extractor.extract(decode(raw)) for raw in payloads]
    )
    # Extraction runs on the receivers' event loop: the CPU time one request holds it for.
    result["decode_extract"]["loop_cpu_ms_per_request"] = round(
        result["decode_extract"]["cpu_seconds"] / len(payloads) * 1000, 2
    )
    result["bare_sqlite"] = _timed(
        total, lambda: bare_sqlite(workdir / f"bare-{batch}.db", events, synchronous)
    )

    def append_all() -> None:
        with open_ledger(
            f"sqlite:///{workdir}/append-{batch}.db", synchronous=synchronous
        ) as ledger:
            for raw in payloads:
                ledger.append(extractor.extract(decode(raw)).events)

    result["ledger_append"] = _timed(total, append_all)
    outcome: dict[str, Any] = {}

    def pipeline_all() -> None:
        url = f"sqlite:///{workdir}/pipeline-{batch}.db"
        outcome["latencies"], outcome["stats"] = asyncio.run(
            run_pipeline(url, payloads, concurrency, synchronous)
        )

    result["pipeline"] = _timed(total, pipeline_all)
    latencies = sorted(outcome["latencies"])
    result["pipeline"].update(
        concurrency=concurrency,
        commits=outcome["stats"]["commits"],
        latency_p50_ms=round(statistics.median(latencies) * 1000, 2),
        latency_p99_ms=round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    )

    def ratio(name: str, peer: str, rate: str) -> float:
        return round(result[name][rate] / result[peer][rate], 3)

    # Wall-clock ratios include fsync waits; CPU ratios stay meaningful on a busy machine.
    result["ratios"] = {
        rate: {
            "ledger_append_vs_bare_sqlite": ratio("ledger_append", "bare_sqlite", rate),
            "decode_extract_vs_decode": ratio("decode_extract", "decode", rate),
            "pipeline_vs_ledger_append": ratio("pipeline", "ledger_append", rate),
        }
        for rate in ("spans_per_s", "spans_per_cpu_s")
    }
    return result


def profile_top(spans: int, batch: int, workdir: Path, top: int = 12) -> list[dict[str, Any]]:
    """The functions with the most own time while decoding, extracting and appending."""
    payloads = [payload(first, batch) for first in range(0, spans, batch)]
    extractor = Extractor()
    profiler = cProfile.Profile()
    with open_ledger(f"sqlite:///{workdir}/profile.db", synchronous="off") as ledger:
        profiler.enable()
        for raw in payloads:
            ledger.append(extractor.extract(decode(raw)).events)
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)
    return [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "own_share": round(own / total, 3),
            "calls": calls,
        }
        for (file, line, name), (_, calls, own, _cumulative, _callers) in rows[:top]
    ]


def measure_rebuild(workdir: Path, count: int) -> dict[str, Any]:
    url = f"sqlite:///{workdir}/rebuild.db"
    began = time.perf_counter()
    with open_ledger(url, synchronous="off") as ledger:
        chunk = 20_000
        template = Extractor().extract(decode(payload(0, 1))).events[0]
        now_ns = time.time_ns()
        for start in range(0, count, chunk):
            ledger.append(
                [
                    UsageEvent(
                        **{
                            **{name: getattr(template, name) for name in EVENT_COLUMNS},
                            "event_id": f"rebuild-{i}",
                            # Spread over the last 40 days, so every window has work.
                            "event_time_ns": now_ns - (i * 3_456_000_000_000) % (40 * DAY_NS),
                            "tenant_id": f"tenant-{i % 50}",
                            "project_id": f"project-{i % 7}",
                        }
                    )
                    for i in range(start, min(start + chunk, count))
                ]
            )
    filled = time.perf_counter() - began
    with open_ledger(url) as ledger:
        meters = Meters()
        began = time.perf_counter()
        meters.rebuild(ledger)
        rebuilt = time.perf_counter() - began
    return {
        "events": count,
        "fill_seconds": round(filled, 2),
        "rebuild_seconds": round(rebuilt, 3),
        "meter_buckets": meters.bucket_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000, help="spans per batch size")
    parser.add_argument("--batch", type=int, action="append", help="spans per request")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--synchronous", default="full", choices=["off", "normal", "full"])
    parser.add_argument("--rebuild-events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    parser.add_argument("--profile", action="store_true", help="add the top functions by own time")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tollmeter-bench-", dir=args.dir))
    try:
        report = {
            "benchmark": "ingest",
            "synchronous": args.synchronous,
            "batches": [
                measure_batch(workdir, args.spans, batch, args.concurrency, args.synchronous)
                for batch in (args.batch or [100, 1000])
            ],
            "rebuild": measure_rebuild(workdir, args.rebuild_events)
            if args.rebuild_events
            else None,
        }
        if args.profile:
            report["profile"] = profile_top(min(args.spans, 10_000), 1000, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
