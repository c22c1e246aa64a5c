"""A real PostgreSQL server for tests and benchmarks: Debian's programs, run unprivileged.

``PostgresServer`` runs ``initdb`` in a temporary directory and ``pg_ctl start`` on a
free loopback port. PostgreSQL refuses to run as root, which is what the tests run as, so
the server's processes run as ``nobody`` in a directory that user owns. The programs are
found on PATH or under ``/usr/lib/postgresql/<version>/bin``, where Debian keeps them.

Fixtures: ``postgres_server`` (one per session, stopped at the end) and ``postgres_url``
(a fresh database per test).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresMissing", "PostgresServer", "postgres_server", "postgres_url"]

_USER = "nobody"
_SEARCH = "/usr/lib/postgresql/*/bin"


class PostgresMissing(RuntimeError):
    """PostgreSQL's programs are not installed."""


def _program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"{_SEARCH}/{name}"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if not candidates:
        raise PostgresMissing(
            f"PostgreSQL's {name} not found: install the Debian package postgresql"
        )
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, reachable as user ``postgres``.

    ``settings`` are extra ``-c name=value`` server settings (tests turn fsync off).
    """

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self._pg_ctl = _program("pg_ctl")
        self._initdb = _program("initdb")
        self._settings = settings or {}
        self._account = pwd.getpwnam(_USER)
        self.directory = Path(tempfile.mkdtemp(prefix="tollmeter-pg-"))
        os.chown(self.directory, self._account.pw_uid, self._account.pw_gid)
        self.data = self.directory / "data"
        self.port = _free_port()
        self.running = False

    def _run(self, *command: str, timeout: float = 120) -> None:
        result = subprocess.run(
            command,
            user=self._account.pw_uid,
            group=self._account.pw_gid,
            extra_groups=[],
            cwd=self.directory,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(self.directory)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed: {result.stdout}{result.stderr}\n{tail}"
            )

    def init(self) -> PostgresServer:
        self._run(
            self._initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            "-c max_connections=200",
            *(f"-c {name}={value}" for name, value in self._settings.items()),
        ]
        self._run(
            self._pg_ctl, "start", "-D", str(self.data), "-w", "-t", "60",
            "-l", str(self.directory / "server.log"), "-o", " ".join(options),
        )  # fmt: skip
        self.running = True

    def stop(self) -> None:
        """Stop at once (fast mode: open sessions are cut, as when the server goes away)."""
        if self.running:
            self._run(self._pg_ctl, "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
            self.running = False

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def __enter__(self) -> PostgresServer:
        self.init()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session; tests that stop it must start it again."""
    try:
        server = PostgresServer(settings={"fsync": "off", "synchronous_commit": "off"})
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a database of its own for this test."""
    if not postgres_server.running:
        postgres_server.start()
    return postgres_server.create_database()
