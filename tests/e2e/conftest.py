"""End-to-end fixtures: the real ``tollmeter collector`` process on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

TOLLMETER = str(Path(sys.executable).with_name("tollmeter"))


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class CollectorProcess:
    """``tollmeter collector`` as a child process, with its output kept in files."""

    def __init__(
        self,
        workdir: Path,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        command: str = TOLLMETER,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.workdir = workdir
        self.command = command
        self.args = list(args)
        self.env = env or {}
        # With TLS configured: the client context that trusts the collector.
        self.tls = tls
        scheme = "http" if tls is None else "https"
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        grpc_port, http_port, management_port = free_ports(3)
        self.grpc_endpoint = f"127.0.0.1:{grpc_port}"
        self.http_endpoint = f"{scheme}://127.0.0.1:{http_port}"
        self.management_url = f"{scheme}://127.0.0.1:{management_port}"

    @property
    def stdout(self) -> str:
        return (self.workdir / f"stdout-{self.runs}.txt").read_text()

    @property
    def stderr(self) -> str:
        return (self.workdir / f"stderr-{self.runs}.txt").read_text()

    def start(self, timeout: float = 60.0) -> CollectorProcess:
        """Start (again) on the same ports and data, and wait until ``/readyz`` says ready."""
        self.runs += 1
        command = [
            self.command,
            "collector",
            "--grpc-endpoint", self.grpc_endpoint,
            "--http-endpoint", self.http_endpoint.split("://")[1],
            "--management-endpoint", self.management_url.split("://")[1],
            *self.args,
        ]  # fmt: skip
        with (
            open(self.workdir / f"stdout-{self.runs}.txt", "wb") as out,
            open(self.workdir / f"stderr-{self.runs}.txt", "wb") as err,
        ):
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env={**os.environ, **self.env}, stdout=out, stderr=err
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited {self.process.returncode}:\n{self.stderr}")
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(
                    f"{self.management_url}/readyz", timeout=1, verify=self.tls or True
                )
                if ready.status_code == 200:
                    return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"collector not ready within {timeout}s:\n{self.stderr}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and return the exit code."""
        if self.process is None:
            raise RuntimeError("not started")
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def wait_for_events(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The ledger's events (``GET /api/v1/events``) once there are ``count``, or what
        there is when ``timeout`` runs out (the caller asserts on it)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = httpx.get(
                f"{self.management_url}/api/v1/events", params={"limit": 1000}, timeout=10
            )
            assert reply.status_code == 200, reply.text
            events: list[dict[str, Any]] = reply.json()["events"]
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def usage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``tollmeter usage`` against this collector."""
        return subprocess.run(
            [TOLLMETER, "usage", "--url", self.management_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """``collector_process(args=[...], env={...}, command=..., tls=...)`` -> a started collector
    process in its own working directory (so the default ``./tollmeter-data`` lands in
    ``tmp_path``); ``command`` is the ``tollmeter`` executable, by default the test run's own;
    ``workdir`` an existing working directory instead of a new one; ``tls`` the client
    context trusting a collector configured for TLS."""
    processes: list[CollectorProcess] = []

    def factory(
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        command: str = TOLLMETER,
        workdir: Path | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> CollectorProcess:
        if workdir is None:
            workdir = tmp_path / f"collector-{len(processes)}"
            workdir.mkdir()
        process = CollectorProcess(workdir, args=args, env=env, command=command, tls=tls)
        processes.append(process)
        return process.start()

    yield factory
    for process in processes:
        process.kill()


@pytest.fixture
def run_app(tmp_path: Path) -> Callable[..., Any]:
    """``run_app(source, **env)``: run ``source`` as a script in ``tmp_path`` with this
    interpreter, no ``OTEL_*`` variables of the test run and ``env`` added; it must exit 0.
    Returns the JSON value of its last line of output."""

    def run(source: str, **env: str) -> Any:
        script = tmp_path / "app.py"
        script.write_text(source)
        variables = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        done = subprocess.run(
            [sys.executable, str(script)],
            env={**variables, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run
