"""The compose stack's traffic app and collector configuration, run for real on loopback: the
app with the compose file's environment (host names swapped for local addresses), a collector
with the compose configuration and keys, and a second collector standing in for Jaeger."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOLLMETER = str(Path(sys.executable).with_name("tollmeter"))
TENANTS = {"acme", "initech", "globex"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with the variables unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", lambda match: match.group(1), value)


class Collector:
    """``tollmeter collector`` started on free loopback ports, its errors kept in a file."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        workdir.mkdir()
        self.workdir = workdir
        self.grpc_port, self.http_port, management_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{management_port}"
        (workdir / "tollmeter.yaml").write_text(yaml.safe_dump(config))
        command = [
            TOLLMETER, "collector", "--config", "tollmeter.yaml",
            "--grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--http-endpoint", f"127.0.0.1:{self.http_port}",
            "--management-endpoint", f"127.0.0.1:{management_port}",
            "--data-dir", str(workdir / "data"),
        ]  # fmt: skip
        with open(workdir / "stderr.txt", "wb") as err:
            self.process = subprocess.Popen(
                command,
                cwd=workdir,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def wait_ready(self) -> None:
        for _ in until(60, "the collector to be ready"):
            if self.process.poll() is not None:
                raise RuntimeError((self.workdir / "stderr.txt").read_text())
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return

    def tenants(self, headers: dict[str, str] | None = None) -> set[str]:
        answer = httpx.get(
            f"{self.url}/api/v1/events", params={"limit": 1000}, headers=headers, timeout=10
        )
        answer.raise_for_status()
        return {event["tenant_id"] for event in answer.json()["events"]}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def until(timeout: float, what: str) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    started: list[Collector] = []
    yield started
    for collector in started:
        collector.stop()


def test_traffic_app_reaches_the_collector_and_jaeger(
    tmp_path: Path, fake_llm: Any, collectors: list[Collector]
) -> None:
    stack = yaml.safe_load((EXAMPLES / "docker-compose.yaml").read_text())["services"]
    jaeger = Collector(tmp_path / "jaeger", {}, {})  # any OTLP receiver will do
    collectors.append(jaeger)

    config = yaml.safe_load((EXAMPLES / "compose" / "tollmeter.yaml").read_text())
    (forward,) = config["forward"]
    assert forward["endpoint"] == "jaeger:4317"
    forward["endpoint"] = f"127.0.0.1:{jaeger.grpc_port}"
    keys = {key: interpolate(value) for key, value in stack["tollmeter"]["environment"].items()}
    collector = Collector(tmp_path / "tollmeter", config, keys)
    collectors.append(collector)
    for started in collectors:  # both start at once
        started.wait_ready()

    env = {key: interpolate(str(value)) for key, value in stack["traffic"]["environment"].items()}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = env["OTEL_EXPORTER_OTLP_ENDPOINT"].replace(
        "tollmeter:4317", f"127.0.0.1:{collector.grpc_port}"
    )
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        env[name] = env[name].replace("http://fake-llm:8080", fake_llm.url)
    env |= {"TRAFFIC_INTERVAL": "0.2", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with open(tmp_path / "traffic.txt", "wb") as output:
        traffic = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "compose" / "traffic.py")],
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        admin = {"authorization": f"Bearer {keys['TOLLMETER_ADMIN_KEYS']}"}
        for _ in until(60, "usage of every tenant"):
            assert traffic.poll() is None, (tmp_path / "traffic.txt").read_text()
            if collector.tenants(admin) == TENANTS:
                break
        for _ in until(60, "the traces forwarded to the Jaeger stand-in"):
            if jaeger.tenants() == TENANTS:
                break
    finally:
        traffic.send_signal(signal.SIGTERM)
        exit_code = traffic.wait(30)
    log = (tmp_path / "traffic.txt").read_text()
    assert exit_code == 0, log
    assert "Traceback" not in log
    assert "round failed" not in log

    # The management API needs the admin key; /metrics, scraped by Prometheus, does not.
    assert httpx.get(f"{collector.url}/api/v1/events", timeout=10).status_code == 401
    metrics = httpx.get(f"{collector.url}/metrics", timeout=10).text
    for tenant in TENANTS:
        assert f'tenant="{tenant}"' in metrics
    # Without the ingest key the collector refuses the app's data.
    refused = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        content=b"",
        headers={"content-type": "application/x-protobuf"},
        timeout=10,
    )
    assert refused.status_code == 401
