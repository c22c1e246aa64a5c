"""Parquet files of the export: partitioning, naming and encoding.

File names sort in sequence order and say what they hold::

    date=2026-11-01/<collector>-<first sequence:020>-<last sequence:020>.parquet

Where the bytes go, and how a file appears complete or not at all, is the store's
part (``_local.py``, ``_s3.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tollmeter.collector.export._schema import DICTIONARY_COLUMNS, SCHEMA

__all__ = [
    "FileFormat",
    "file_name",
    "safe_collector_name",
    "split_by_date",
    "write_parquet",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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


def write_parquet(
    table: pa.Table,
    where: str | pa.NativeFile,
    *,
    file_format: FileFormat,
    metadata: dict[str, str],
) -> None:
    """Encode ``table`` as one Parquet file with the export's schema metadata plus
    ``metadata``; the same table and metadata always give the same bytes."""
    schema_metadata = {
        **(SCHEMA.metadata or {}),
        **{k.encode(): v.encode() for k, v in metadata.items()},
    }
    pq.write_table(
        table.replace_schema_metadata(schema_metadata),
        where,
        row_group_size=file_format.row_group_size,
        compression="zstd",
        compression_level=file_format.compression_level,
        use_dictionary=list(DICTIONARY_COLUMNS),
        write_statistics=True,
    )
