"""Where export files go: the store interface, and the one place that picks a store.

The exporter speaks to a store only through :class:`ExportStore`, so the exactly-once
protocol is written once and each store supplies the one guarantee it rests on: a
file at its final name is complete or absent. A local directory gets it from a
temporary file renamed into place; S3-compatible storage from the atomic PUT of an
object at its final key (S3 has no rename).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tollmeter.collector.export._config import ExportConfig
from tollmeter.collector.export._writer import FileFormat

__all__ = ["ExportFile", "ExportStore", "StoredFile", "open_store", "parse_export_file"]

_FILE = re.compile(
    r"^(?P<partition>date=\d{4}-\d{2}-\d{2})/"
    r"(?P<collector>.+)-(?P<first>\d{20})-(?P<last>\d{20})\.parquet$"
)
MARKER = "_tollmeter_export.json"


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A final export file, parsed from its name relative to the store's root."""

    relative: str
    collector: str
    first_sequence: int
    last_sequence: int


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A Parquet file seen in a store: name relative to the root, size, modification time."""

    relative: str
    size: int
    mtime: float


def parse_export_file(relative: str) -> ExportFile | None:
    """The export file named ``date=YYYY-MM-DD/<collector>-<first>-<last>.parquet``."""
    match = _FILE.match(relative)
    if match is None:
        return None
    return ExportFile(
        relative, match.group("collector"), int(match.group("first")), int(match.group("last"))
    )


class ExportStore(abc.ABC):
    """A place export files are written to: a local directory or an object store prefix.

    Failures raise ``OSError`` (or ``ExportStoreError`` with a one-line reason); the
    exporter turns them into a failed result and retries on its next run.
    """

    #: Shown in results and logs: a path, or ``s3://bucket/prefix``. Never holds secrets.
    location: str

    @abc.abstractmethod
    def lock(self, timeout_s: float) -> AbstractContextManager[object]:
        """Exclusive use of the store across processes sharing this data directory;
        raises ``ExportBusy`` after ``timeout_s``."""

    @abc.abstractmethod
    def identity(self) -> str:
        """The store's random identity from its marker, created on first use."""

    @abc.abstractmethod
    def export_files(self) -> list[ExportFile]:
        """Every final export file, of every collector."""

    @abc.abstractmethod
    def remove_leftovers(self) -> int:
        """Delete what an interrupted write can leave besides final files; return how many."""

    @abc.abstractmethod
    def delete(self, relative: str) -> None:
        """Delete one final file; a missing file is not an error."""

    @abc.abstractmethod
    def write(
        self,
        relative: str,
        table: pa.Table,
        *,
        file_format: FileFormat,
        metadata: dict[str, str],
        checkpoint: Callable[[str], None],
    ) -> str:
        """Write ``table`` as Parquet so that ``relative`` appears complete or not at all;
        the SHA-256 (hex) of the bytes written."""

    @abc.abstractmethod
    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write a small file (a manifest) so that it appears complete or not at all."""

    @abc.abstractmethod
    def read_bytes(self, relative: str) -> bytes | None:
        """A small file's content, ``None`` when it does not exist."""

    @abc.abstractmethod
    def list_parquet(self, limit: int) -> tuple[list[StoredFile], bool]:
        """Up to ``limit`` Parquet files, and whether that is all of them."""


def open_store(config: ExportConfig, *, data_dir: Path) -> ExportStore:
    """The store ``config`` names: ``export.url`` ``s3://...`` or a local directory."""
    if config.s3_url is not None:
        # Imported here: pyarrow's S3 support loads the AWS SDK, which local exports never need.
        from tollmeter.collector.export._s3 import S3Store

        return S3Store(config.s3_url, config.s3, lock_directory=data_dir)
    from tollmeter.collector.export._local import LocalStore

    return LocalStore(config.resolve_directory(data_dir))
