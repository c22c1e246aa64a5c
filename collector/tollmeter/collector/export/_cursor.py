"""Where the exporter stands: a cursor kept in the ledger, and the export directory's identity.

The cursor lives in the ledger's durable key-value state, next to the events it
points into, rather than in the export directory:

- restoring the ledger from a backup restores the matching cursor, and the
  exporter then removes this collector's files beyond it and writes them again
  from the ledger, which stays the source of truth;
- the export directory (or object store prefix) carries a random identity in
  ``_tollmeter_export.json``. The cursor records the identity of the store it was
  written for, so a wiped, replaced or newly configured store is detected and
  filled again from the first event instead of silently missing history.

The record also holds the *intent*: the first and last sequence of the batch
being written, and the collector name its files carry. It is stored before any
file of that batch is written, so a re-run after a crash, by this collector or by
another replica sharing the ledger, rewrites exactly the same batch under the same
file names, even if new events arrived in between.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from tollmeter.collector._records import UsageEvent

__all__ = [
    "CURSOR_KEY",
    "Cursor",
    "ExportSource",
    "load_cursor",
    "save_cursor",
]

CURSOR_KEY = "export.parquet.cursor"


class ExportSource(Protocol):
    """The part of the ledger the exporter reads from."""

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]: ...

    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Cursor:
    """Every event up to ``sequence`` is exported; ``pending`` is the batch being written
    and ``writer`` the collector name in its file names."""

    sequence: int = 0
    pending: tuple[int, int] | None = None
    directory_id: str | None = None
    writer: str | None = None


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
        writer=data.get("writer"),
    )


def save_cursor(source: ExportSource, cursor: Cursor) -> None:
    value = {
        "sequence": cursor.sequence,
        "pending": list(cursor.pending) if cursor.pending else None,
        "directory_id": cursor.directory_id,
        "writer": cursor.writer,
    }
    source.set_state(CURSOR_KEY, json.dumps(value, sort_keys=True))
