"""Durable Parquet files: partitioning, naming, and the atomic write protocol.

A file is written under a hidden temporary name, flushed to disk, renamed to its
final name, and the directory entry is flushed too. Readers therefore see either
no file or the whole file, and a file that was renamed survives a power loss.

File names sort in sequence order and say what they hold::

    date=2026-11-01/<collector>-<first sequence:020>-<last sequence:020>.parquet
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tollmeter.collector.export._schema import DICTIONARY_COLUMNS, SCHEMA

__all__ = [
    "ExportFile",
    "FileFormat",
    "file_name",
    "fsync_directory",
    "list_export_files",
    "remove_temporary_files",
    "safe_collector_name",
    "split_by_date",
    "write_atomically",
]

_FILE = re.compile(r"^(?P<collector>.+)-(?P<first>\d{20})-(?P<last>\d{20})\.parquet$")
_PARTITION = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A final export file found on disk, parsed from its name."""

    path: Path
    collector: str
    first_sequence: int
    last_sequence: int


@dataclass(frozen=True, slots=True)
class FileFormat:
    """How files are encoded."""

    row_group_size: int = 100_000
    compression_level: int = 3


def safe_collector_name(collector_id: str | None) -> str:
    """The collector id as a file name part: no separators, no hidden-file prefix."""
    name = _UNSAFE.sub("_", collector_id or "").lstrip("._")
    return name or "collector"


def file_name(collector: str, first_sequence: int, last_sequence: int) -> str:
    return f"{collector}-{first_sequence:020d}-{last_sequence:020d}.parquet"


def split_by_date(table: pa.Table, timezone: str) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(YYYY-MM-DD, rows)`` per local date of ``event_time``, in date order.

    Rows keep their order (ascending sequence) inside each partition.
    """
    times = table.column("event_time")
    if timezone != "UTC":
        times = times.cast(pa.timestamp("us", tz=timezone))
    days = pc.local_timestamp(times).cast(pa.date32())
    unique = pc.unique(days).sort()
    if len(unique) == 1:
        yield unique[0].as_py().isoformat(), table
        return
    for day in unique:
        yield day.as_py().isoformat(), table.filter(pc.equal(days, day))


def write_atomically(
    table: pa.Table,
    path: Path,
    *,
    file_format: FileFormat,
    metadata: dict[str, str],
    checkpoint: Callable[[str], None],
) -> None:
    """Write ``table`` to ``path`` so that ``path`` appears complete or not at all.

    ``checkpoint`` is called with ``"temp_written"`` once the temporary file is on
    disk and ``"renamed"`` after the rename, so tests can stop the process there.
    """
    partition_dir = path.parent
    if not partition_dir.is_dir():
        partition_dir.mkdir(parents=True, exist_ok=True)
        fsync_directory(partition_dir.parent)
    temporary = partition_dir / f".{path.name}.{os.getpid()}{_TEMP_SUFFIX}"
    schema_metadata = {
        **(SCHEMA.metadata or {}),
        **{k.encode(): v.encode() for k, v in metadata.items()},
    }
    pq.write_table(
        table.replace_schema_metadata(schema_metadata),
        temporary,
        row_group_size=file_format.row_group_size,
        compression="zstd",
        compression_level=file_format.compression_level,
        use_dictionary=list(DICTIONARY_COLUMNS),
        write_statistics=True,
    )
    _fsync_file(temporary)
    checkpoint("temp_written")
    os.replace(temporary, path)
    fsync_directory(partition_dir)
    checkpoint("renamed")


def list_export_files(directory: Path, collector: str) -> list[ExportFile]:
    """Every final file of ``collector`` under ``directory``'s date partitions."""
    found: list[ExportFile] = []
    if not directory.is_dir():
        return found
    for partition in directory.iterdir():
        if not (_PARTITION.match(partition.name) and partition.is_dir()):
            continue
        for entry in partition.iterdir():
            match = _FILE.match(entry.name)
            if match and match.group("collector") == collector:
                found.append(
                    ExportFile(
                        entry,
                        collector,
                        int(match.group("first")),
                        int(match.group("last")),
                    )
                )
    found.sort(key=lambda file: (file.first_sequence, file.path.name, file.path.parent.name))
    return found


def remove_temporary_files(directory: Path) -> int:
    """Delete temporary files left by an interrupted write; return how many."""
    removed = 0
    if not directory.is_dir():
        return removed
    for partition in directory.iterdir():
        if not (_PARTITION.match(partition.name) and partition.is_dir()):
            continue
        for entry in partition.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(_TEMP_SUFFIX):
                entry.unlink(missing_ok=True)
                removed += 1
    return removed


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
