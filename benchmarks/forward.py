"""Forwarding overhead: what passing OTLP on costs ingest, with the downstream up or dead.

Measures, in one run:

- ``offer``: ``ForwardExporter.offer`` alone, call by call (the only forwarding work on
  the ingest path), with its worker sending to a live downstream; baseline
  ``offer_noop``: a Python call doing nothing, timed the same way;
- ``ingest_*``: OTLP/gRPC ingest throughput of a real in-process collector driven by
  ``--clients`` concurrent clients sending ``--requests`` requests of ``--batch`` spans,
  in three modes: ``none`` (no forwarding), ``live`` (forwarding every request to a
  second ``tollmeter collector`` process) and ``dead`` (forwarding to a closed port,
  small queue: retries and drops all the way). Each mode reports requests/s, spans/s, client latency
  percentiles and, for forwarding, the exporter's sent/dropped/retried counts.

Prints one JSON object. Usage:
``python benchmarks/forward.py --clients 8 --requests 2000 --batch 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tollmeter.collector import Collector, Config
from tollmeter.collector.forward import ExporterConfig, ForwardExporter, make_transport

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def request(index: int, batch: int) -> bytes:
    spans = []
    for n in range(batch):
        unique = index * batch + n
        spans.append(
            Span(
                trace_id=os.urandom(16),
                span_id=os.urandom(8),
                name="chat gpt-4o-mini",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=time.time_ns(),
                end_time_unix_nano=time.time_ns(),
                attributes=[
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.provider.name", "openai"),
                    _kv("gen_ai.request.model", "gpt-4o-mini"),
                    _kv("gen_ai.response.id", f"resp-{unique}"),
                    _kv("gen_ai.usage.input_tokens", 120),
                    _kv("gen_ai.usage.output_tokens", 30),
                    _kv("tollmeter.tenant.id", f"tenant-{unique % 10}"),
                ],
            )
        )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    ).SerializeToString()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Downstream:
    """``tollmeter collector`` in its own process, so that its work is not measured."""

    def __init__(self, data_dir: Path) -> None:
        grpc_port, http_port, management_port = free_port(), free_port(), free_port()
        self.grpc_endpoint = f"127.0.0.1:{grpc_port}"
        tollmeter = str(Path(sys.executable).with_name("tollmeter"))
        self.process = subprocess.Popen(
            [
                tollmeter,
                "collector",
                "--grpc-endpoint",
                self.grpc_endpoint,
                "--http-endpoint",
                f"127.0.0.1:{http_port}",
                "--management-endpoint",
                f"127.0.0.1:{management_port}",
                "--data-dir",
                str(data_dir),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{management_port}/readyz", timeout=1)
                if ready.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the downstream collector did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Running:
    """A collector on its own event loop thread."""

    def __init__(self, data_dir: Path, **sections: Any) -> None:
        config = Config.from_mapping(
            {
                "collector_id": data_dir.name,
                "data_dir": str(data_dir),
                "shutdown_grace": "2s",
                "log_level": "warning",
                "export": {"enabled": False},
                "receivers": {
                    "grpc": {"endpoint": "127.0.0.1:0"},
                    "http": {"endpoint": "127.0.0.1:0"},
                },
                "management": {"endpoint": "127.0.0.1:0"},
                **sections,
            }
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.collector = Collector(config)
        asyncio.run_coroutine_threadsafe(self.collector.start(), self.loop).result(60)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.collector.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def drive(endpoint: str, bodies: list[bytes], clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        with grpc.insecure_channel(endpoint) as channel:
            stub = channel.unary_unary(TRACES)
            mine = []
            for body in share:
                started = time.perf_counter()
                stub(body, timeout=60)
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    shares = [bodies[i::clients] for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": round(len(bodies) / elapsed),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def ingest(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    downstream: Downstream | None = None
    forward: list[dict[str, Any]] = []
    if mode == "live":
        downstream = Downstream(workdir / f"{mode}-downstream")
        forward = [{"name": "live", "endpoint": downstream.grpc_endpoint}]
    elif mode == "dead":
        forward = [
            {
                "name": "dead",
                "endpoint": f"127.0.0.1:{free_port()}",
                "queue_size": 100,
                "retry": {"initial_backoff": "10ms", "max_backoff": "100ms", "max_elapsed": "1s"},
            }
        ]
    for exporter in forward:
        exporter["tls"] = {"insecure": True}
    upstream = Running(workdir / f"{mode}-upstream", forward=forward)
    offset = {"none": 0, "live": 1, "dead": 2}[mode] * args.requests
    bodies = [request(offset + i, args.batch) for i in range(args.requests)]
    try:
        result = drive(upstream.collector.grpc_endpoint, bodies, args.clients)
        result["spans_per_s"] = result["requests_per_s"] * args.batch
        forwarder = upstream.collector.forwarder
        if forwarder is not None:
            time.sleep(0.5)  # let the worker catch up before reading its counters
            (stats,) = forwarder.stats().values()
            result["forward"] = {
                "sent": stats.sent.get("traces", 0),
                "dropped": sum(stats.dropped.values()),
                "retries": stats.retries,
                "batches": stats.batches,
            }
    finally:
        upstream.stop()
        if downstream is not None:
            downstream.stop()
    return result


def time_calls(call: Any, count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    return {
        "ns_p50": samples[len(samples) // 2],
        "ns_p99": samples[int(len(samples) * 0.99) - 1],
        "ns_mean": round(statistics.fmean(samples)),
    }


def offer(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    downstream = Downstream(workdir / "offer-downstream")
    config = ExporterConfig.from_mapping(
        {
            "name": "bench",
            "endpoint": downstream.grpc_endpoint,
            "tls": {"insecure": True},
            "queue_size": args.offers,
        },
        "forward[0]",
    )
    exporter = ForwardExporter(config, make_transport(config))
    exporter.start()
    body = request(0, args.batch)
    try:
        measured = time_calls(lambda: exporter.offer("traces", body), args.offers)
    finally:
        exporter.shutdown(0)  # only the offers are measured; what is queued is dropped
        downstream.stop()
    return {"offer": measured, "offer_noop": time_calls(lambda: None, args.offers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--offers", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results: dict[str, Any] = {
            "clients": args.clients,
            "requests": args.requests,
            "batch": args.batch,
            **offer(args, workdir),
        }
        for mode in ("none", "live", "dead"):
            results[f"ingest_{mode}"] = ingest(mode, args, workdir)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
