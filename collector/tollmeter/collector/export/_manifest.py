"""Manifests beside export files, chained so that the files alone can be checked.

Each Parquet file ``X.parquet`` gets ``_X.parquet.manifest.json`` beside it::

    {"format": "tollmeter-export-manifest/1", "file": "date=.../X.parquet",
     "sha256": "<hex of the file's bytes>", "rows": 1000,
     "first_sequence": 1, "last_sequence": 1000,
     "batch": {"after": 0, "last": 1000},
     "previous_head": "<hex>", "head": "<hex>"}

The files of an export form one chain in the order of their first sequence: ``head`` is
``previous_head`` folded with the digest of each row of the file, in file order, as the
ledger's chain folds rows (``storage/_chain.py``), and ``previous_head`` is the ``head`` of
the file before (32 zero bytes for the first). A row is encoded with the same tagged
values as a ledger row, over the file's columns in schema order, times as their integer
microseconds. ``batch`` is the export batch the file belongs to: sequences above
``after`` up to ``last``, so consecutive batches must meet without gap or overlap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tollmeter.collector.storage._chain import GENESIS, fold, row_digest

__all__ = ["FORMAT", "SUFFIX", "Manifest", "chain_head", "manifest_name", "table_digests"]

FORMAT = "tollmeter-export-manifest/1"
SUFFIX = ".manifest.json"


def manifest_name(relative: str) -> str:
    """Where the manifest of the file ``relative`` goes: beside it, with a ``_`` in front so
    that dataset readers (pyarrow, Spark, DuckDB with a ``*.parquet`` glob) skip it."""
    partition, _, name = relative.rpartition("/")
    return f"{partition}/_{name}{SUFFIX}" if partition else f"_{name}{SUFFIX}"


def table_digests(table: pa.Table) -> list[bytes]:
    """The digest of each row of ``table``, in row order."""
    columns: list[list[Any]] = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append(column.to_pylist())
    # No column of the export is the ledger's text cost: decimals are typed, so no index.
    return [row_digest(row, -1) for row in zip(*columns, strict=True)]


def chain_head(previous_head: bytes | None, table: pa.Table) -> bytes:
    """The head after the rows of ``table``; the chain starts at ``GENESIS``."""
    return fold(GENESIS if previous_head is None else previous_head, table_digests(table))


@dataclass(frozen=True, slots=True)
class Manifest:
    file: str
    sha256: str
    rows: int
    first_sequence: int
    last_sequence: int
    batch_after: int
    batch_last: int
    previous_head: str
    head: str

    @classmethod
    def build(
        cls,
        file: str,
        table: pa.Table,
        *,
        sha256: str,
        batch: tuple[int, int],
        previous_head: bytes,
        head: bytes,
    ) -> Manifest:
        """The manifest of ``file`` holding ``table``; ``head`` is ``chain_head`` of it."""
        sequences = table.column("sequence")
        return cls(
            file,
            sha256,
            table.num_rows,
            sequences[0].as_py(),
            sequences[-1].as_py(),
            batch[0],
            batch[1],
            previous_head.hex(),
            head.hex(),
        )

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode()

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "file": self.file,
            "sha256": self.sha256,
            "rows": self.rows,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "batch": {"after": self.batch_after, "last": self.batch_last},
            "previous_head": self.previous_head,
            "head": self.head,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Raises ``ValueError`` for anything but a manifest of this format."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        try:
            batch = raw["batch"]
            return cls(
                str(raw["file"]),
                str(raw["sha256"]),
                int(raw["rows"]),
                int(raw["first_sequence"]),
                int(raw["last_sequence"]),
                int(batch["after"]),
                int(batch["last"]),
                str(raw["previous_head"]),
                str(raw["head"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"manifest field missing or mistyped: {exc}") from exc
