"""Export into a local directory: temporary file, ``fsync``, rename, ``fsync`` the directory.

Readers therefore see either no file or the whole file, and a renamed file survives
a power loss. A collector and ``tollmeter export`` sharing the directory take turns
on an exclusive ``flock``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from tollmeter.collector.errors import ExportBusy
from tollmeter.collector.export._store import (
    MARKER,
    ExportFile,
    ExportStore,
    StoredFile,
    parse_export_file,
)
from tollmeter.collector.export._writer import FileFormat, write_parquet

__all__ = ["DirectoryLock", "LocalStore"]

_LOCK = ".tollmeter-export.lock"
_TEMP_SUFFIX = ".tmp"


class LocalStore(ExportStore):
    """Export files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.location = str(directory)

    def lock(self, timeout_s: float) -> DirectoryLock:
        return DirectoryLock(self.directory, timeout_s=timeout_s)

    def identity(self) -> str:
        marker = self.directory / MARKER
        try:
            identity = json.loads(marker.read_text(encoding="utf-8"))["directory_id"]
            if isinstance(identity, str) and identity:
                return identity
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError):
            # A damaged marker cannot vouch for the files beside it: start a new identity.
            pass
        self.directory.mkdir(parents=True, exist_ok=True)
        identity = secrets.token_hex(16)
        temporary = self.directory / f".{MARKER}.tmp"
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump({"directory_id": identity, "format": "tollmeter parquet export"}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, marker)
        fsync_directory(self.directory)
        return identity

    def _partitions(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [
            entry
            for entry in self.directory.iterdir()
            if entry.name.startswith("date=") and entry.is_dir()
        ]

    def export_files(self) -> list[ExportFile]:
        found: list[ExportFile] = []
        for partition in self._partitions():
            for entry in partition.iterdir():
                parsed = parse_export_file(f"{partition.name}/{entry.name}")
                if parsed is not None:
                    found.append(parsed)
        return found

    def remove_leftovers(self) -> int:
        removed = 0
        for partition in self._partitions():
            for entry in partition.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(_TEMP_SUFFIX):
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed

    def delete(self, relative: str) -> None:
        (self.directory / relative).unlink(missing_ok=True)

    def write(
        self,
        relative: str,
        table: pa.Table,
        *,
        file_format: FileFormat,
        metadata: dict[str, str],
        checkpoint: Callable[[str], None],
    ) -> str:
        """Temporary file, ``fsync``, rename, ``fsync`` the directory. ``checkpoint`` is
        called with ``"temp_written"`` before the rename and ``"renamed"`` after it."""
        path = self.directory / relative
        partition_dir = path.parent
        if not partition_dir.is_dir():
            partition_dir.mkdir(parents=True, exist_ok=True)
            fsync_directory(partition_dir.parent)
        temporary = partition_dir / f".{path.name}.{os.getpid()}{_TEMP_SUFFIX}"
        write_parquet(table, str(temporary), file_format=file_format, metadata=metadata)
        digest = _sha256_file(temporary)
        _fsync_file(temporary)
        checkpoint("temp_written")
        os.replace(temporary, path)
        fsync_directory(partition_dir)
        checkpoint("renamed")
        return digest

    def write_bytes(self, relative: str, data: bytes) -> None:
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.parent / f".{path.name}.{os.getpid()}{_TEMP_SUFFIX}"
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)

    def read_bytes(self, relative: str) -> bytes | None:
        try:
            return (self.directory / relative).read_bytes()
        except FileNotFoundError:
            return None

    def list_parquet(self, limit: int) -> tuple[list[StoredFile], bool]:
        found: list[StoredFile] = []
        for root, _, names in os.walk(self.directory):
            for name in names:
                if not name.endswith(".parquet"):
                    continue
                if len(found) >= limit:
                    return found, False
                path = Path(root, name)
                try:
                    stat = path.stat()
                except OSError:
                    continue
                found.append(
                    StoredFile(str(path.relative_to(self.directory)), stat.st_size, stat.st_mtime)
                )
        return found, True


class DirectoryLock:
    """An exclusive ``flock`` on a file in ``directory``, across processes."""

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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
