"""A real redis-server for the tests: one per session on a free loopback port, no
persistence, flushed before each test that asks for it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_PROGRAM = "redis-server"


class RedisServer:
    """``url``; ``stop()`` and ``start()`` (same port) for outage tests.

    With ``appendfsync`` (``always``, ``everysec``) the server keeps an append-only file in
    ``directory`` and comes back from a restart with its data; without, it starts empty.
    """

    def __init__(self, directory: Path, *, appendfsync: str | None = None) -> None:
        program = shutil.which(_PROGRAM) or "/usr/bin/redis-server"
        if not Path(program).exists():
            pytest.fail(
                "redis-server not found: install the Debian package redis-server", pytrace=False
            )
        self._program = program
        self._directory = directory
        self._appendfsync = appendfsync
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self._program, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--dir", str(self._directory)]
        if self._appendfsync is None:
            command += ["--appendonly", "no"]
        else:
            command += ["--appendonly", "yes", "--appendfsync", self._appendfsync]
        with (self._directory / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    @property
    def running(self) -> bool:
        return self._process is not None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            client.flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test (restarted if a test left it stopped)."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flush()
    return redis_server.url
