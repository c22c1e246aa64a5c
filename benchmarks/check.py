"""Check latency and throughput, in process and over HTTP, against baselines in the same run.

Measures:

- ``in_process``: ``LimitEngine.check`` (one reservation against two matching limits, a
  token bucket and a calendar day) timed call by call; baseline ``in_process_noop``: a
  Python function call doing nothing, timed the same way.
- ``in_process_hierarchy``: the same check for a tenant of an organisation naming a
  project, so that it also reserves on a project limit and an organisation limit: three
  levels (project, tenant, organisation) and four counters instead of one level and two.
  Both run against the same rules, so the difference is the hierarchy alone.
- ``http``: ``POST /api/v1/check`` on a uvicorn server in its own process (one core),
  driven by ``--clients`` concurrent keep-alive connections from a bare asyncio client
  in this process;
  baseline ``http_noop``: a ``POST`` route on the same server that reads the JSON body
  and answers ``{}``. The ratio isolates the limits work from HTTP and client costs.
  ``http_one_client`` (and its no-op baseline) is the latency of one client alone;
  ``http_one_client_hierarchy`` and ``http_hierarchy`` are the same with three levels.
  The routes take turns in ``--rounds`` rounds, so that a load on the machine that comes
  and goes, or the heap of open reservations that grows, weighs on each of them alike.
  Each HTTP figure carries the server process's CPU time per request and how busy it was
  (CPU seconds per second), read from ``/proc``: a throughput ratio taken while the
  server was not busy measures the clients or the other work on the machine, so
  ``ratio_vs_noop`` gives the ratio of the server's CPU time per request beside it.

Prints one JSON object. Usage: ``python benchmarks/check.py --clients 16 --requests 20000``.
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
import time
from typing import Any, NamedTuple

from tollmeter.collector._organisations import OrganisationsConfig
from tollmeter.collector.limits import CheckRequest, LimitEngine, LimitsConfig

LIMITS = {
    "reservation_ttl": "1h",
    "rules": [
        {"name": "tpm", "limit": 1e12, "window": {"per": "1m"}, "action": "throttle"},
        {"name": "daily", "limit": 1e15, "window": "day", "alert_at": [0.8]},
        {
            "name": "project-daily",
            "match": {"project": "*"},
            "group_by": ["tenant", "project"],
            "limit": 1e15,
            "window": "day",
        },
        {
            "name": "org-daily",
            "match": {"org": "*"},
            "group_by": ["org"],
            "limit": 1e15,
            "window": "day",
        },
    ],
}
# Tenants ``tenant-*`` belong to no organisation and name no project: they match the two
# tenant limits only. Each ``org-tenant-*`` belongs to one of ten organisations and names
# a project: it matches all four limits, on three levels.
ORGANISATIONS = {
    f"org-{o}": {"tenants": [f"org-tenant-{i}" for i in range(o, 100, 10)]} for o in range(10)
}


def _bodies(hierarchy: bool) -> list[dict[str, Any]]:
    if not hierarchy:
        return [
            {"tenant": f"tenant-{i}", "model": "gpt-4o", "estimated_input_tokens": 500}
            for i in range(100)
        ]
    return [
        {
            "tenant": f"org-tenant-{i}",
            "project": f"project-{i % 3}",
            "model": "gpt-4o",
            "estimated_input_tokens": 500,
        }
        for i in range(100)
    ]


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000,
        "mean_us": statistics.fmean(ordered) / 1000,
    }


def _time_checks(requests: list[CheckRequest]) -> list[int]:
    engine = LimitEngine(LimitsConfig.from_mapping(LIMITS))
    clock = time.perf_counter_ns
    samples = []
    for request in requests:
        started = clock()
        engine.check(request)
        samples.append(clock() - started)
    return samples


def bench_in_process(count: int) -> dict[str, Any]:
    org_of = OrganisationsConfig.from_mapping(ORGANISATIONS, "organisations").org_of_tenant
    flat, nested = _bodies(False), _bodies(True)
    requests = [CheckRequest(**flat[i % 100]) for i in range(count)]
    # The service fills in the organisation from the configuration before the engine.
    hierarchy = [
        CheckRequest(**nested[i % 100], org=org_of[nested[i % 100]["tenant"]]) for i in range(count)
    ]
    samples = _time_checks(requests)
    samples_hierarchy = _time_checks(hierarchy)

    def noop(request: CheckRequest) -> None:
        return None

    clock = time.perf_counter_ns
    baseline = []
    for request in requests:
        started = clock()
        noop(request)
        baseline.append(clock() - started)
    return {
        "in_process": _percentiles(samples),
        "in_process_hierarchy": _percentiles(samples_hierarchy),
        "in_process_noop": _percentiles(baseline),
    }


def serve(port: int) -> None:
    """The server process: the limits routes plus a no-op route, on one event loop."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from tollmeter.collector.limits import LimitsService, limits_routes

    organisations = OrganisationsConfig.from_mapping(ORGANISATIONS, "organisations")
    service = LimitsService(LimitsConfig.from_mapping(LIMITS), organisations=organisations)
    service.start()

    async def noop(request: Request) -> Response:
        await request.json()
        return JSONResponse({})

    routes = [*limits_routes(service), Route("/noop", noop, methods=["POST"])]
    uvicorn.run(
        Starlette(routes=routes),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> int:
    """One keep-alive HTTP/1.1 exchange; returns the status code."""
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


def _payload(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) that process ``pid`` has used, where ``/proc`` tells."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Phase(NamedTuple):
    samples_ns: list[int]
    elapsed_s: float
    server_cpu_s: float | None


async def _drive(
    port: int, path: str, clients: int, total: int, *, server: int, hierarchy: bool = False
) -> _Phase:
    """``clients`` keep-alive connections, each sending its share of ``total`` requests.

    A bare asyncio client keeps the load generator cheap, so that the server is measured.
    """
    samples: list[int] = []
    per_client = total // clients
    payloads = [_payload(path, body) for body in _bodies(hierarchy)]

    async def one(worker: int, count: int, record: bool) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(count):
                started = time.perf_counter_ns()
                status = await _request(reader, writer, payloads[(worker + i) % 100])
                if record:
                    samples.append(time.perf_counter_ns() - started)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}")
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(one(w, 50, False) for w in range(clients)))  # warm up
    cpu_before = _cpu_s(server)
    started = time.perf_counter()
    await asyncio.gather(*(one(w, per_client, True) for w in range(clients)))
    elapsed = time.perf_counter() - started
    cpu_after = _cpu_s(server)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return _Phase(samples, elapsed, cpu)


def _summary(phases: list[_Phase]) -> dict[str, Any]:
    samples = [s for phase in phases for s in phase.samples_ns]
    elapsed = sum(phase.elapsed_s for phase in phases)
    out = {"requests_per_s": len(samples) / elapsed, **_percentiles(samples)}
    cpus = [phase.server_cpu_s for phase in phases]
    if all(cpu is not None for cpu in cpus):
        cpu = sum(c for c in cpus if c is not None)
        # What a request costs the server, and whether the server was the bottleneck
        # (busy near 1.0) or waited on the clients or on a machine shared with other work.
        out["server_cpu_us_per_request"] = cpu / len(samples) * 1e6
        out["server_busy"] = cpu / elapsed
    return out


_ROUTES = {
    "": ("/api/v1/check", False),
    "_hierarchy": ("/api/v1/check", True),
    "_noop": ("/noop", False),
}


def _measure(port: int, server: int, clients: int, total: int, rounds: int) -> dict[str, Any]:
    """Each route in ``rounds`` rounds, their order turning from round to round, so that
    a machine whose load drifts (or a heap that grows) weighs on every route alike."""
    phases: dict[str, list[_Phase]] = {name: [] for name in _ROUTES}
    names = list(_ROUTES)
    for round_ in range(rounds):
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            path, hierarchy = _ROUTES[name]
            phase = _drive(port, path, clients, total // rounds, server=server, hierarchy=hierarchy)
            phases[name].append(asyncio.run(phase))
    return {name: _summary(p) for name, p in phases.items()}


def _ratio(check: dict[str, Any], noop: dict[str, Any]) -> dict[str, float | None]:
    cpu = "server_cpu_us_per_request"
    return {
        "throughput": check["requests_per_s"] / noop["requests_per_s"],
        # The throughput ratio a server with a core of its own would show.
        "server_cpu": noop[cpu] / check[cpu] if cpu in check and cpu in noop else None,
    }


def bench_http(clients: int, total: int, rounds: int) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.05)
        one = _measure(port, server.pid, 1, total // 4, rounds)
        many = _measure(port, server.pid, clients, total, rounds)
    finally:
        server.terminate()
        server.wait(30)
    return {
        **{f"http_one_client{name}": summary for name, summary in one.items()},
        "clients": clients,
        **{f"http{name}": summary for name, summary in many.items()},
        "ratio_vs_noop": _ratio(many[""], many["_noop"]),
        "ratio_hierarchy_vs_noop": _ratio(many["_hierarchy"], many["_noop"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20_000, help="HTTP requests per route")
    parser.add_argument("--in-process", type=int, default=200_000, help="in-process checks")
    parser.add_argument("--rounds", type=int, default=4, help="HTTP rounds per route")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    result = {"benchmark": "check", **bench_in_process(args.in_process)}
    result["in_process_checks_per_s"] = 1e6 / result["in_process"]["mean_us"]
    result.update(bench_http(args.clients, args.requests, args.rounds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
