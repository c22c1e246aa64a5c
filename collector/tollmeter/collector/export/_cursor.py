"""Where the exporter stands: a cursor kept in the ledger, and the export directory's identity.

The cursor lives in the ledger's durable key-value state, next to the events it
points into, rather than in the export directory:

- restoring the ledger from a backup restores the matching cursor, and the
  exporter then removes this collector's files beyond it and writes them again
  from the ledger, which stays the source of truth;
- the export directory carries a random identity in ``_tollmeter_export.json``.
  The cursor records the identity of the directory it was written for, so a
  wiped, replaced or newly configured directory is detected and filled again
  from the first event instead of silently missing history.

The record also holds the *intent*: the first and last sequence of the batch
being written. It is stored before any file of that batch is written, so a
re-run after a crash rewrites exactly the same batch under the same file names,
even if new events arrived in between.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.errors import ExportBusy
from tollmeter.collector.export._writer import fsync_directory

__all__ = [
    "CURSOR_KEY",
    "Cursor",
    "DirectoryLock",
    "ExportSource",
    "directory_identity",
    "load_cursor",
    "save_cursor",
]

CURSOR_KEY = "export.parquet.cursor"
_MARKER = "_tollmeter_export.json"
_LOCK = ".tollmeter-export.lock"


class ExportSource(Protocol):
    """The part of the ledger the exporter reads from."""

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]: ...

    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Cursor:
    """Every event up to ``sequence`` is exported; ``pending`` is the batch being written."""

    sequence: int = 0
    pending: tuple[int, int] | None = None
    directory_id: str | None = None


def load_cursor(source: ExportSource) -> Cursor:
    raw = source.get_state(CURSOR_KEY)
    if raw is None:
        return Cursor()
    data = json.loads(raw)
    pending = data.get("pending")
    return Cursor(
        sequence=int(data["sequence"]),
        pending=(int(pending[0]), int(pending[1])) if pending else None,
        directory_id=data.get("directory_id"),
    )


def save_cursor(source: ExportSource, cursor: Cursor) -> None:
    value = {
        "sequence": cursor.sequence,
        "pending": list(cursor.pending) if cursor.pending else None,
        "directory_id": cursor.directory_id,
    }
    source.set_state(CURSOR_KEY, json.dumps(value, sort_keys=True))


def directory_identity(directory: Path) -> str:
    """The export directory's identity, created (durably) on first use."""
    marker = directory / _MARKER
    try:
        identity = json.loads(marker.read_text(encoding="utf-8"))["directory_id"]
        if isinstance(identity, str) and identity:
            return identity
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError):
        # A damaged marker cannot vouch for the files beside it: start a new identity.
        pass
    directory.mkdir(parents=True, exist_ok=True)
    identity = secrets.token_hex(16)
    temporary = directory / f".{_MARKER}.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump({"directory_id": identity, "format": "tollmeter parquet export"}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, marker)
    fsync_directory(directory)
    return identity


class DirectoryLock:
    """An exclusive ``flock`` on the export directory, across processes.

    A collector and a ``tollmeter export`` run against the same directory take
    turns instead of writing the same batch twice.
    """

    def __init__(self, directory: Path, *, timeout_s: float) -> None:
        self._path = directory / _LOCK
        self._timeout_s = timeout_s
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ExportBusy(f"another export holds {self._path}") from None
                time.sleep(0.05)
            else:
                self._fd = fd
                return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
