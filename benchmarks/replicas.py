"""Collector replicas on one PostgreSQL ledger and one Redis: ingest and check latency.

Ingest: 1, 2 and 3 collector processes share one PostgreSQL database (a server this
script starts with Debian's programs, as an unprivileged user, durable settings: fsync
and synchronous commit on). ``--senders`` load-generator processes, spread evenly over
the replicas, send unique pre-serialized GenAI-only ``ExportTraceServiceRequest``
batches over raw gRPC, one request at a time (the senders, payloads and ``/proc``
readings of ``benchmarks/ingest.py``). Reported per replica count: accepted spans per
second, per CPU second of all the collectors together, and per CPU second of PostgreSQL
(utime + stime of the postmaster and every server process, exited ones included
through the postmaster's children times), plus whether the ledger's request count
equals the accepted spans.

Checks: one collector with ``limits.storage: redis://`` on a redis-server started here
(no persistence). p50/p99 of ``POST /api/v1/check`` over one keep-alive connection, of
``RedisLimitEngine.check`` called in this process, and, as the same-run baseline, of a
bare ``EVALSHA`` of a script that returns 1 (one Redis round trip, nothing else).

Prints one JSON object. Usage: ``python benchmarks/replicas.py --spans 60000``. Needs
the Debian packages ``postgresql`` and ``redis-server`` and the ``postgres`` and
``redis`` extras.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import _free_ports, _proc_cpu_seconds, ledger_requests, send_load

from tests._postgres import PostgresServer
from tests._redis import RedisServer
from tollmeter.collector.limits import CheckRequest, LimitsConfig
from tollmeter.collector.limits._redis_engine import RedisLimitEngine

# Limits no check reaches, so that every check reserves: a token bucket and a day.
LIMITS: dict[str, Any] = {
    "reservation_ttl": "1h",
    "rules": [
        {"name": "tpm", "limit": 1e12, "window": {"per": "1m"}, "action": "throttle"},
        {"name": "daily", "limit": 1e15, "window": "day"},
    ],
}
_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The fields after the parenthesized command name of /proc/<pid>/stat.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def postgres_cpu_seconds(server: PostgresServer) -> float:
    """CPU seconds of the whole PostgreSQL server so far: the postmaster's own and reaped
    children's times, plus every live server process's utime + stime."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    fields = _stat_fields(postmaster)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            child = _stat_fields(int(entry.name))
            if int(child[1]) == postmaster:
                ticks += int(child[11]) + int(child[12])
    return ticks / _TICK


class Replica:
    """``tollmeter collector`` as a process on free ports with ``settings`` as its file."""

    def __init__(self, workdir: Path, name: str, settings: dict[str, Any]) -> None:
        grpc_port, http_port, management_port = _free_ports(3)
        workdir.mkdir(parents=True)
        config = workdir / "tollmeter.yaml"
        config.write_text(
            json.dumps(
                {
                    "data_dir": str(workdir / "data"),
                    "log_level": "warning",
                    "receivers": {
                        "grpc": {
                            "endpoint": f"127.0.0.1:{grpc_port}",
                            "max_message_bytes": "64MiB",
                        },
                        "http": {"endpoint": f"127.0.0.1:{http_port}"},
                    },
                    "management": {"endpoint": f"127.0.0.1:{management_port}"},
                    "export": {"enabled": False},
                    **settings,
                }
            )
        )
        self.target = f"127.0.0.1:{grpc_port}"
        self.api = f"http://127.0.0.1:{management_port}"
        self._log = workdir / "collector.log"
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tollmeter.collector.cli", "collector", "--config", config],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TOLLMETER_COLLECTOR_ID": name},
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self._log.read_text()[-2000:])
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.api}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"collector not ready within {timeout}s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def measure_ingest(
    workdir: Path, server: PostgresServer, replicas: int, spans: int, senders: int, batch: int
) -> dict[str, Any]:
    """Accepted spans per second and per CPU second with ``replicas`` collectors."""
    url = server.create_database()
    group = [
        Replica(workdir / f"ingest-{replicas}-{n}", f"r{n}", {"storage": {"url": url}})
        for n in range(replicas)
    ]
    requests = max(1, spans // (batch * senders))
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(
            target=send_load,
            args=(n, group[n % replicas].target, batch, requests, "genai", start, results),
        )
        for n in range(senders)
    ]
    try:
        for replica in group:
            replica.wait_ready()
        for process in processes:
            process.start()
        # Let the senders build their payloads and connect before the clock starts.
        time.sleep(1 + batch * requests * 4e-6)
        pids = [replica.process.pid for replica in group]
        collectors = sum(_proc_cpu_seconds(pid) for pid in pids)
        database, wall = postgres_cpu_seconds(server), time.perf_counter()
        start.set()
        outcomes = [results.get(timeout=900) for _ in processes]
        wall = time.perf_counter() - wall
        collectors = sum(_proc_cpu_seconds(pid) for pid in pids) - collectors
        database = postgres_cpu_seconds(server) - database
        for process in processes:
            process.join(60)
        in_ledger = ledger_requests(group[-1].api)
    finally:
        for replica in group:
            replica.stop()
    latencies = sorted(x for outcome in outcomes for x in outcome["latencies"])
    accepted = sum(outcome["accepted"] for outcome in outcomes)
    return {
        "replicas": replicas,
        "senders": senders,
        "batch": batch,
        "accepted_spans": accepted,
        "failed_requests": sum(outcome["failed"] for outcome in outcomes),
        "ledger_matches_accepted": in_ledger == accepted,
        "seconds": round(wall, 3),
        "collectors_cpu_seconds": round(collectors, 3),
        "postgres_cpu_seconds": round(database, 3),
        "spans_per_s": round(accepted / wall),
        "spans_per_collector_cpu_s": round(accepted / collectors) if collectors else None,
        "spans_per_postgres_cpu_s": round(accepted / database) if database else None,
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "latency_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 2),
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 3),
    }


def _timed_calls(call: Callable[[int], object], count: int) -> list[float]:
    samples = []
    for index in range(count):
        began = time.perf_counter()
        call(index)
        samples.append(time.perf_counter() - began)
    return samples


def measure_checks(workdir: Path, checks: int) -> dict[str, Any]:
    """Check latency through Redis, beside a bare EVALSHA round trip of the same run."""
    import redis

    directory = workdir / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    replica = Replica(workdir / "checks", "checks", {"limits": {"storage": server.url, **LIMITS}})
    try:
        replica.wait_ready()
        bare = redis.Redis.from_url(server.url, socket_timeout=5)
        script = bare.script_load("return 1")
        engine = RedisLimitEngine(
            dataclasses.replace(LimitsConfig.from_mapping(LIMITS), storage=server.url)
        )
        requests = [
            CheckRequest(tenant=f"t{i % 50}", estimated_input_tokens=100) for i in range(checks)
        ]
        with httpx.Client(base_url=replica.api, timeout=30) as client:
            bodies = [
                {"tenant": f"t{i % 50}", "estimated_input_tokens": 100} for i in range(checks)
            ]

            def over_http(index: int) -> None:
                client.post("/api/v1/check", json=bodies[index]).raise_for_status()

            calls: dict[str, Callable[[int], object]] = {
                "evalsha_baseline": lambda _: bare.evalsha(script, 0),
                "engine_check": lambda index: engine.check(requests[index]),
                "check_api": over_http,
            }
            for call in calls.values():
                _timed_calls(call, min(200, checks))  # connections, scripts, caches
            result = {
                name: _percentiles(_timed_calls(call, checks)) for name, call in calls.items()
            }
        engine.close()
        bare.close()
    finally:
        replica.stop()
        server.stop()
    base = result["evalsha_baseline"]["p50_ms"]
    return {
        "checks": checks,
        **result,
        "engine_p50_over_evalsha": round(result["engine_check"]["p50_ms"] / base, 2),
        "api_p50_over_evalsha": round(result["check_api"]["p50_ms"] / base, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=60_000, help="spans per replica count")
    parser.add_argument("--senders", type=int, default=6, help="sender processes")
    parser.add_argument("--batch", type=int, default=1000, help="spans per request")
    parser.add_argument("--replicas", type=int, action="append", help="default: 1, 2 and 3")
    parser.add_argument("--checks", type=int, default=2000, help="timed checks per kind")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tollmeter-bench-replicas-"))
    report: dict[str, Any] = {"benchmark": "replicas", "cpus": os.cpu_count()}
    try:
        with PostgresServer() as server:
            report["ingest"] = [
                measure_ingest(workdir, server, count, args.spans, args.senders, args.batch)
                for count in args.replicas or [1, 2, 3]
            ]
        report["checks"] = measure_checks(workdir, args.checks)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
