"""Write a data directory with a released collector, for the upgrade tests.

    scripts/make_upgrade_fixture.py TOLLMETER_EXECUTABLE OUT_DIR

TOLLMETER_EXECUTABLE is the ``tollmeter`` command of the release to record (installed from
its wheel into a venv of its own); this script drives it only through its command line, OTLP
and HTTP, so it works with any release. The data directory it leaves behind holds what a
collector stopped without warning holds: a ledger with events, a limit state with counters,
an open reservation and a fired threshold, and an export directory whose cursor is behind
the ledger. ``OUT_DIR/expected.json`` records what the upgraded collector must report.

Run with the dev venv's Python (it needs httpx, PyYAML and the OpenTelemetry SDK).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

CONFIG: dict[str, Any] = {
    "collector_id": "upgrade",
    "data_dir": "data",
    "limits": {
        "timezone": "UTC",
        # Open at the stop, expired by the time any upgrade test runs: it must be charged once.
        "reservation_ttl": "30s",
        "rules": [
            {
                "name": "acme-monthly",
                "match": {"tenant": ["acme"]},
                "measure": "total",
                "window": "month",
                "limit": 1_000_000,
                "action": "block",
                "alert_at": [0.0001],
            },
            {"name": "daily", "measure": "requests", "window": "day", "limit": 1000},
        ],
    },
    "export": {"interval": "1h", "directory": "data/export"},
}

# (tenant, response id, input tokens, output tokens) sent before and after the last export.
BEFORE_EXPORT = [("acme", f"resp-a{n}", 100 + n, 20) for n in range(6)] + [
    ("globex", f"resp-g{n}", 50, 10 + n) for n in range(4)
]
AFTER_EXPORT = [("acme", "resp-a-late", 300, 40), ("globex", "resp-g-late", 70, 7)]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def send(endpoint: str, calls: list[tuple[str, str, int, int]]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "upgrade-fixture"}))
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("upgrade-fixture")
    for tenant, response_id, input_tokens, output_tokens in calls:
        with tracer.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini",
                    "gen_ai.response.id": response_id,
                    "gen_ai.usage.input_tokens": input_tokens,
                    "gen_ai.usage.output_tokens": output_tokens,
                    "tollmeter.tenant.id": tenant,
                }
            )
    provider.shutdown()


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"collector exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("collector not ready in 60 s")


def wait_events(url: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/api/v1/events", params={"limit": 1000}, timeout=10).json()
        if len(body["events"]) >= count:
            return
        time.sleep(0.1)
    raise SystemExit(f"fewer than {count} events arrived")


def main(tollmeter: str, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "collector.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    grpc_port, http_port, management_port = free_ports(3)
    url = f"http://127.0.0.1:{management_port}"
    command = [
        tollmeter, "collector", "--config", "collector.yaml",
        "--grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--http-endpoint", f"127.0.0.1:{http_port}",
        "--management-endpoint", f"127.0.0.1:{management_port}",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=out)
    try:
        wait_ready(url, process)
        send(f"127.0.0.1:{grpc_port}", BEFORE_EXPORT)
        wait_events(url, len(BEFORE_EXPORT))
        httpx.post(f"{url}/api/v1/export", timeout=60).raise_for_status()
        send(f"127.0.0.1:{grpc_port}", AFTER_EXPORT)
        wait_events(url, len(BEFORE_EXPORT) + len(AFTER_EXPORT))
        reservation = httpx.post(
            f"{url}/api/v1/check",
            json={"tenant": "acme", "request_id": "req-open", "estimated_input_tokens": 5000},
            timeout=10,
        ).json()
        usage = httpx.get(f"{url}/api/v1/usage", params={"group_by": "tenant"}, timeout=10)
        status = httpx.get(f"{url}/api/v1/tenants/acme/status", timeout=10).json()
        time.sleep(1.0)  # past the limit state's write-behind interval
    finally:
        process.send_signal(signal.SIGKILL)  # a stop without warning: no final export
        process.wait(30)
    for ledger in (out / "data").glob("*.db"):
        with sqlite3.connect(ledger) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for leftover in (ledger.with_name(ledger.name + suffix) for suffix in ("-wal", "-shm")):
            leftover.unlink(missing_ok=True)
    version = subprocess.run([tollmeter, "--version"], capture_output=True, text=True, check=True)
    expected = {
        "written_by": version.stdout.strip(),
        "usage_by_tenant": usage.json()["rows"],
        "reservation": reservation,
        "acme_status": status,
        "exported_response_ids": sorted(r for _, r, _, _ in BEFORE_EXPORT),
        "unexported_response_ids": sorted(r for _, r, _, _ in AFTER_EXPORT),
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]))
