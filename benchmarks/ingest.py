"""Ingest throughput: end to end over OTLP/gRPC, and stage by stage in one process.

End to end (``--mode e2e``): the real collector runs as its own process (``python -m
tollmeter.collector.cli collector``, temporary data directory, free ports) and
``--senders`` load-generator processes each send pre-serialized, unique
``ExportTraceServiceRequest`` batches over a raw gRPC channel, one request at a time:
``--traffic genai`` (chat and embeddings spans only) and ``mixed`` (one model call in
ten spans, the others HTTP and database spans of the same app). Reported per traffic
and batch size: accepted spans (from the responses' partial success) per second and per
collector CPU second (utime + stime of the collector from ``/proc``, i.e. spans per
core), beside the parse-only floor of the same run (``ParseFromString`` of the same
payloads in this process) and the ratio to it, p50/p99 export latency, the collector's
peak RSS (``VmHWM``), and whether the ledger's request count equals the accepted model
calls. Every acknowledgement follows a durable (``synchronous=FULL``) commit.

Stages (``--mode stages``), on the same synthetic spans in this process:

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

Stage rates are spans per wall-clock second and per CPU second of this process (all
threads). Prints one JSON object. Usage: ``python benchmarks/ingest.py`` (both modes,
short), ``python benchmarks/ingest.py --mode e2e --e2e-spans 200000 --batch 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import multiprocessing
import os
import pstats
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tollmeter.collector._extract import Extractor
from tollmeter.collector._meters import Meters
from tollmeter.collector._pipeline import Pipeline
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import open_ledger
from tollmeter.collector.storage._codec import EVENT_COLUMNS

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


# --- End-to-end: the collector process under load from separate sender processes ---

# The sizing figure the issue quotes for the Go OpenTelemetry Collector, as a reference
# constant (not measured here): roughly 12-15k spans/s per core.
GO_COLLECTOR_SPANS_PER_CORE = (12_000, 15_000)
GOAL_SPANS_PER_CORE = {"genai": 50_000, "mixed": 200_000}
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Stands for (sender, request) in every response id and trace id of a template, so one
# serialized template yields unique requests by a same-length byte substitution.
PLACEHOLDER = b"@@@@@@@@"
_CALLS: tuple[tuple[str, str, str, str, str], ...] = (
    ("chat", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "chatcmpl-"),
    ("chat", "openai", "gpt-4.1", "gpt-4.1-2025-04-14", "chatcmpl-"),
    ("chat", "anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "msg_"),
    ("embeddings", "openai", "text-embedding-3-small", "text-embedding-3-small", "emb-"),
)


# The ordinary spans of an app's trace around its model calls: the server span, its
# database queries and outgoing HTTP calls, with the attributes their instrumentations set.
_APP_SPANS: tuple[tuple[str, int, dict[str, str | int]], ...] = (
    (
        "GET /api/orders/{id}",
        Span.SPAN_KIND_SERVER,
        {
            "http.request.method": "GET",
            "http.route": "/api/orders/{id}",
            "http.response.status_code": 200,
            "url.scheme": "https",
            "url.path": "/api/orders/12345",
            "server.address": "shop.example.com",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
            "client.address": "10.0.3.17",
            "network.protocol.version": "1.1",
        },
    ),
    (
        "SELECT orders",
        Span.SPAN_KIND_CLIENT,
        {
            "db.system.name": "postgresql",
            "db.namespace": "shop",
            "db.collection.name": "orders",
            "db.operation.name": "SELECT",
            "db.query.text": "SELECT id, total, status FROM orders WHERE customer_id = $1",
            "server.address": "db.internal",
            "server.port": 5432,
        },
    ),
    (
        "POST",
        Span.SPAN_KIND_CLIENT,
        {
            "http.request.method": "POST",
            "http.response.status_code": 201,
            "url.full": "https://payments.internal/v1/charges",
            "server.address": "payments.internal",
            "server.port": 443,
            "network.peer.address": "10.0.7.4",
        },
    ),
)
TRAFFIC = ("genai", "mixed")
"""``genai``: every span a model call; ``mixed``: one in ten, the rest ordinary app spans."""


def _app_span(i: int, start: int) -> Span:
    name, kind, attributes = _APP_SPANS[i % len(_APP_SPANS)]
    return Span(
        trace_id=PLACEHOLDER + i.to_bytes(8, "big"),
        span_id=(i + 1).to_bytes(8, "big"),
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 12_000_000,
        attributes=[_kv(k, v) for k, v in attributes.items()],
    )


def e2e_template(batch: int, now_ns: int, traffic: str = "genai") -> bytes:
    """One request of ``batch`` spans whose ids contain PLACEHOLDER.

    With ``traffic="genai"`` every span is a chat or embeddings call; with ``"mixed"``
    one span in ten is, and the others are HTTP and database spans of the same app.
    """
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
    calls = 0
    for i in range(batch):
        start = now_ns - (batch - i) * 1_000_000
        if traffic == "mixed" and i % 10:
            scope.spans.append(_app_span(i, start))
            continue
        calls += 1
        operation, provider, model, response_model, id_prefix = _CALLS[i % len(_CALLS)]
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": response_model,
            "gen_ai.response.id": f"{id_prefix}{PLACEHOLDER.decode()}{i:016d}",
            "gen_ai.usage.input_tokens": 200 + i * 37 % 4000,
            "server.address": f"api.{provider}.com",
            "server.port": 443,
            "tollmeter.tenant.id": f"tenant-{i % 50}",
            "tollmeter.project.id": f"project-{i % 50 % 7}",
            "tollmeter.feature": ("search", "chat", "summarize")[i % 3],
            "tollmeter.usage.source": "provider",
        }
        if operation == "chat":
            attributes.update(
                {
                    "gen_ai.response.finish_reasons": "stop",
                    "gen_ai.request.max_tokens": 1024,
                    "gen_ai.usage.output_tokens": 50 + i * 13 % 900,
                    "gen_ai.usage.cache_read.input_tokens": 1024 * (i % 2),
                }
            )
        scope.spans.append(
            Span(
                trace_id=PLACEHOLDER + i.to_bytes(8, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                name=f"{operation} {model}",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + 800_000_000,
                attributes=[_kv(k, v) for k, v in attributes.items()],
            )
        )
    raw = message.SerializeToString()
    # Every trace id holds the placeholder, and every model call's response id.
    if raw.count(PLACEHOLDER) != batch + calls:
        raise RuntimeError("placeholder collides with other payload bytes")
    return raw


def sender_payloads(
    sender: int, batch: int, requests: int, traffic: str, now_ns: int
) -> list[bytes]:
    template = e2e_template(batch, now_ns, traffic)
    return [template.replace(PLACEHOLDER, b"%02d%06d" % (sender, n)) for n in range(requests)]


def send_load(
    sender: int, target: str, batch: int, requests: int, traffic: str, start: Any, results: Any
) -> None:
    """One sender process: ``requests`` unique pre-serialized requests, one at a time."""
    payloads = sender_payloads(sender, batch, requests, traffic, time.time_ns())
    channel = grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    export = channel.unary_unary(
        EXPORT_METHOD,
        request_serializer=None,  # the payloads are serialized already
        response_deserializer=ExportTraceServiceResponse.FromString,
    )
    grpc.channel_ready_future(channel).result(timeout=30)
    start.wait(60)
    latencies, accepted, rejected, failed = [], 0, 0, 0
    for raw in payloads:
        began = time.perf_counter()
        try:
            response = export(raw, timeout=60)
        except grpc.RpcError:
            failed += 1
            continue
        latencies.append(time.perf_counter() - began)
        rejected += response.partial_success.rejected_spans
        accepted += batch - response.partial_success.rejected_spans
    channel.close()
    results.put(
        {"latencies": latencies, "accepted": accepted, "rejected": rejected, "failed": failed}
    )


def _proc_cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/<pid>/stat (after the parenthesized name): utime, stime.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_collector(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """The collector as a process on free ports; returns it, its gRPC target and API URL."""
    grpc_port, http_port, management_port = _free_ports(3)
    config = workdir / "tollmeter.yaml"
    config.write_text(
        f"data_dir: {workdir / 'data'}\n"
        "log_level: warning\n"
        "receivers:\n"
        f"  grpc: {{endpoint: 127.0.0.1:{grpc_port}, max_message_bytes: 64MiB}}\n"
        f"  http: {{endpoint: 127.0.0.1:{http_port}}}\n"
        f"management: {{endpoint: 127.0.0.1:{management_port}}}\n"
    )
    api = f"http://127.0.0.1:{management_port}"
    with open(workdir / "collector.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tollmeter.collector.cli", "collector", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "collector.log").read_text()[-2000:])
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{api}/readyz", timeout=1).status_code == 200:
                return process, f"127.0.0.1:{grpc_port}", api
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("collector not ready within 60s")


def ledger_requests(api: str) -> int:
    response = httpx.get(
        f"{api}/api/v1/usage",
        params={"start": "2000-01-01T00:00:00+00:00", "end": "2100-01-01T00:00:00+00:00"},
        timeout=60,
    )
    response.raise_for_status()
    return sum(int(row["requests"]) for row in response.json()["rows"])


def _calls(batch: int, traffic: str) -> int:
    """Model calls in one request of ``batch`` spans."""
    return batch if traffic == "genai" else len(range(0, batch, 10))


def parse_floor(batch: int, requests: int, senders: int, traffic: str) -> float:
    """Spans per CPU second that decoding the senders' payloads alone costs in Python.

    The same requests the senders send, each parsed once with ``ParseFromString``: what
    any Python OTLP receiver pays before looking at a span.
    """
    now_ns = time.time_ns()
    payloads = [
        raw
        for sender in range(senders)
        for raw in sender_payloads(sender, batch, requests, traffic, now_ns)
    ]
    cpu = time.process_time()
    for raw in payloads:
        ExportTraceServiceRequest().ParseFromString(raw)
    cpu = time.process_time() - cpu
    return len(payloads) * batch / cpu if cpu > 0 else 0.0


def ledger_bytes_per_event(data_dir: Path, events: int) -> dict[str, float]:
    """On-disk bytes per committed event of the ledger, per table with its indexes."""
    groups = {
        "usage_events": ("usage_events", "sqlite_autoindex_usage_events_1", "usage_events_time"),
        "dedupe_keys": ("dedupe_keys", "dedupe_keys_seen"),
        "rollups": ("rollups", "sqlite_autoindex_rollups_1"),
    }
    path = data_dir / "ledger.db"
    conn = sqlite3.connect(path)
    try:
        sizes = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    finally:
        conn.close()
    out = {
        group: round(sum(sizes.get(name, 0) for name in names) / events, 1)
        for group, names in groups.items()
    }
    out["file"] = round(sum(sizes.values()) / events, 1)
    return out


def measure_end_to_end(
    workdir: Path, batch: int, spans: int, senders: int, traffic: str = "genai"
) -> dict[str, Any]:
    """Accepted spans per collector CPU second, latency and RSS for one batch size."""
    requests = max(1, spans // (batch * senders))
    rundir = workdir / f"e2e-{traffic}-{batch}"
    rundir.mkdir()
    collector, target, api = start_collector(rundir)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(
            target=send_load, args=(n, target, batch, requests, traffic, start, results)
        )
        for n in range(senders)
    ]
    try:
        for process in processes:
            process.start()
        # Let the senders build their payloads and connect before the clock starts.
        time.sleep(1 + batch * requests * 4e-6)
        cpu, wall = _proc_cpu_seconds(collector.pid), time.perf_counter()
        start.set()
        outcomes = [results.get(timeout=600) for _ in processes]
        wall = time.perf_counter() - wall
        cpu = _proc_cpu_seconds(collector.pid) - cpu
        for process in processes:
            process.join(60)
        peak_rss_kib = _proc_status_kib(collector.pid, "VmHWM")
        in_ledger = ledger_requests(api)
    finally:
        collector.terminate()
        collector.wait(60)
    on_disk = ledger_bytes_per_event(rundir / "data", in_ledger) if in_ledger else None
    latencies = sorted(x for outcome in outcomes for x in outcome["latencies"])
    accepted = sum(outcome["accepted"] for outcome in outcomes)
    per_core = accepted / cpu if cpu > 0 else 0.0
    floor = parse_floor(batch, requests, senders, traffic)
    return {
        "traffic": traffic,
        "batch": batch,
        "senders": senders,
        "requests": len(latencies),
        "accepted_spans": accepted,
        "rejected_spans": sum(outcome["rejected"] for outcome in outcomes),
        "failed_requests": sum(outcome["failed"] for outcome in outcomes),
        "ledger_requests": in_ledger,
        "ledger_matches_accepted": in_ledger == accepted * _calls(batch, traffic) // batch,
        "seconds": round(wall, 3),
        "collector_cpu_seconds": round(cpu, 3),
        "spans_per_s": round(accepted / wall),
        "spans_per_collector_cpu_s": round(per_core),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "latency_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 2),
        "collector_peak_rss_mib": round(peak_rss_kib / 1024, 1),
        # dedupe_keys holds every event of the dedupe window (a week by default).
        "ledger_bytes_per_event": on_disk,
        "vs_go_collector_per_core": [
            round(per_core / GO_COLLECTOR_SPANS_PER_CORE[1], 2),
            round(per_core / GO_COLLECTOR_SPANS_PER_CORE[0], 2),
        ],
        "goal_spans_per_core": GOAL_SPANS_PER_CORE[traffic],
        "vs_goal_per_core": round(per_core / GOAL_SPANS_PER_CORE[traffic], 2),
        "parse_floor_spans_per_cpu_s": round(floor),
        "vs_parse_floor": round(per_core / floor, 3) if floor else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode", default="all", choices=["all", "e2e", "stages"], help="which part to run"
    )
    parser.add_argument("--batch", type=int, action="append", help="spans per request")
    parser.add_argument("--e2e-spans", type=int, default=40_000, help="end-to-end spans per batch")
    parser.add_argument("--senders", type=int, default=4, help="end-to-end sender processes")
    parser.add_argument(
        "--traffic", action="append", choices=TRAFFIC, help="end-to-end span mix (default: both)"
    )
    parser.add_argument("--spans", type=int, default=10_000, help="stage spans per batch size")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--synchronous", default="full", choices=["off", "normal", "full"])
    parser.add_argument("--rebuild-events", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    parser.add_argument("--profile", action="store_true", help="add the top functions by own time")
    args = parser.parse_args()
    batches = args.batch or [100, 1000]
    workdir = Path(tempfile.mkdtemp(prefix="tollmeter-bench-", dir=args.dir))
    report: dict[str, Any] = {"benchmark": "ingest"}
    try:
        if args.mode in ("all", "e2e"):
            report["end_to_end"] = {
                "go_collector_spans_per_core_reference": list(GO_COLLECTOR_SPANS_PER_CORE),
                "goal_spans_per_core": GOAL_SPANS_PER_CORE,
                "batches": [
                    measure_end_to_end(workdir, batch, args.e2e_spans, args.senders, traffic)
                    for traffic in args.traffic or TRAFFIC
                    for batch in batches
                ],
            }
        if args.mode in ("all", "stages"):
            report["stages"] = {
                "synchronous": args.synchronous,
                "batches": [
                    measure_batch(workdir, args.spans, batch, args.concurrency, args.synchronous)
                    for batch in batches
                ],
                "rebuild": measure_rebuild(workdir, args.rebuild_events)
                if args.rebuild_events
                else None,
            }
            if args.profile:
                report["stages"]["profile"] = profile_top(min(args.spans, 10_000), 1000, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
