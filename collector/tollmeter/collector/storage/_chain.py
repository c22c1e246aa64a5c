"""The ledger's hash chain: the canonical encoding of a row and how commits link.

A row is encoded as the JSON array of its values, in the order of the column list
recorded with its commit (``ROW_COLUMNS`` when it was committed: the codec's field
order, ``sequence`` last), exactly as Python's ``json.dumps(values, separators=(",",
":"), ensure_ascii=False)`` writes it, in UTF-8. Before that, each value is made
canonical:

- NULL is ``null``; text is a JSON string (UTF-8 bytes from a driver are decoded first);
- integers are JSON numbers; a floating-point number with an integral value is written
  as that integer (``2``, not ``2.0``: a driver may return either for the same stored
  value), any other as Python's shortest round-trip ``repr``;
- decimals, and the ``cost`` column whatever its type (SQLite keeps it as text,
  PostgreSQL as ``NUMERIC``), are JSON strings in plain notation without exponent
  (``"0.00015"``, never ``1.5E-4``), keeping the stored scale.

A row's digest is SHA-256 of its encoding; the head after a row is SHA-256 of the head
before it (32 bytes) and the row's digest. The first head is 32 zero bytes. A commit
stores the head after its last row, and, to locate a row that no longer matches, the
sequence offset (4 bytes, big-endian) and the first 8 bytes of the digest of every row
it inserted.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from tollmeter.collector.errors import StorageError
from tollmeter.collector.storage._codec import ROW_COLUMNS

__all__ = [
    "GENESIS",
    "ChainLink",
    "Checkpoint",
    "cut_events",
    "fold",
    "genesis_link",
    "link_rows",
    "pack_digests",
    "row_digest",
    "select_checkpoint",
    "unpack_digests",
]

GENESIS = bytes(32)
"""The head before the first row."""

_ENTRY = struct.Struct(">I8s")
_sha256 = hashlib.sha256


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One commit of the chain as ``ledger_chain`` stores it."""

    commit: int
    first_sequence: int
    last_sequence: int
    head: str
    committed_ns: int
    columns: tuple[str, ...]
    digests: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the chain was cut: events up to ``last_sequence`` (commits up to ``commit``)
    are pruned, and ``head`` is the chain's head after them."""

    commit: int
    last_sequence: int
    head: str
    first_pruned_ns: int | None
    last_pruned_ns: int | None
    pruned_events: int
    cut_ns: int

    def to_json(self) -> dict[str, object]:
        return {
            "commit": self.commit,
            "last_sequence": self.last_sequence,
            "head": self.head,
            "first_pruned_ns": self.first_pruned_ns,
            "last_pruned_ns": self.last_pruned_ns,
            "pruned_events": self.pruned_events,
            "cut_ns": self.cut_ns,
        }


def _plain(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"no canonical encoding for {type(value).__name__}")


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_plain).encode


def encode_row(row: Sequence[object], decimal_index: int) -> bytes:
    """The canonical encoding of ``row``; ``decimal_index`` is the ``cost`` column's
    (``-1`` when the row has no text decimals)."""
    values = [
        value.decode()
        if type(value) is bytes
        else int(value)
        if type(value) is float and value.is_integer()
        else value
        for value in row
    ]
    if decimal_index >= 0 and values[decimal_index] is not None:
        values[decimal_index] = format(Decimal(str(values[decimal_index])), "f")
    return _dumps(values).encode()


def row_digest(row: Sequence[object], decimal_index: int) -> bytes:
    return _sha256(encode_row(row, decimal_index)).digest()


def fold(head: bytes, digests: Iterable[bytes]) -> bytes:
    """The head after rows with ``digests``, starting from ``head``."""
    for digest in digests:
        head = _sha256(head + digest).digest()
    return head


def pack_digests(first_sequence: int, entries: Iterable[tuple[int, bytes]]) -> bytes:
    """``(sequence, digest)`` of a commit's rows as ``ledger_chain.row_digests``."""
    return b"".join(
        _ENTRY.pack(sequence - first_sequence, digest[:8]) for sequence, digest in entries
    )


def unpack_digests(first_sequence: int, packed: bytes) -> Iterator[tuple[int, bytes]]:
    """``(sequence, digest prefix)`` of each row of a commit, in sequence order."""
    for offset, prefix in _ENTRY.iter_unpack(packed):
        yield first_sequence + offset, prefix


def link_rows(head: bytes, rows: Sequence[Sequence[Any]], cost_index: int) -> tuple[bytes, bytes]:
    """The head after ``rows`` (each ending with its sequence, ascending) and their packed
    digests, for the commit that inserts them."""
    digests = [row_digest(row, cost_index) for row in rows]
    first = int(rows[0][-1])
    packed = pack_digests(
        first, ((int(row[-1]), digest) for row, digest in zip(rows, digests, strict=True))
    )
    return fold(head, digests), packed


class _Connection(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


def genesis_link(conn: _Connection, *, mark: str) -> None:
    """Cover the events of a ledger upgraded to the chain with one first link.

    ``conn`` is inside the migration's transaction; ``mark`` is the driver's parameter
    placeholder. Only the columns the table has at this version are hashed (a later
    migration's columns do not exist yet), recorded with the link like any commit's.
    """
    cursor = conn.execute("SELECT * FROM usage_events LIMIT 0")
    existing = {str(column[0]) for column in cursor.description}
    columns = tuple(name for name in ROW_COLUMNS if name in existing)
    cost_index = columns.index("cost")
    names = ", ".join("CAST(cost AS TEXT)" if name == "cost" else name for name in columns)
    head, first, last, entries = GENESIS, 0, 0, bytearray()
    for row in conn.execute(f"SELECT {names} FROM usage_events ORDER BY sequence"):
        digest = row_digest(row, cost_index)
        head = _sha256(head + digest).digest()
        last = int(row[-1])
        first = first or last
        entries += _ENTRY.pack(last - first, digest[:8])
    if not entries:
        return
    conn.execute(
        "INSERT INTO ledger_chain (commit_number, first_sequence, last_sequence, head, "
        f"committed_ns, columns, row_digests) VALUES ({', '.join([mark] * 7)})",
        (1, first, last, head.hex(), time.time_ns(), ",".join(columns), bytes(entries)),
    )


_CHECKPOINT_COLUMNS = (
    "commit_number, last_sequence, head, first_pruned_ns, last_pruned_ns, pruned_events, cut_ns"
)
_SELECT_CHECKPOINT = (
    f"SELECT {_CHECKPOINT_COLUMNS} FROM ledger_chain_checkpoint ORDER BY commit_number DESC LIMIT 1"
)


def select_checkpoint(conn: _Connection) -> Checkpoint | None:
    """The checkpoint in force (the newest), ``None`` before the first cut."""
    row = conn.execute(_SELECT_CHECKPOINT).fetchone()
    if row is None:
        return None
    commit, last, head, first_ns, last_ns, pruned, cut_ns = row
    return Checkpoint(
        int(commit),
        int(last),
        str(head),
        None if first_ns is None else int(first_ns),
        None if last_ns is None else int(last_ns),
        int(pruned),
        int(cut_ns),
    )


def cut_events(conn: _Connection, mark: str, previous_commit: int, checkpoint: Checkpoint) -> int:
    """Inside the caller's transaction: delete the events the checkpoint in force does not
    cover up to ``checkpoint.last_sequence`` and record ``checkpoint``; the events deleted.

    ``mark`` is the driver's parameter placeholder. Raises ``StorageError`` when the
    checkpoint in force is no longer ``previous_commit``'s (another process cut meanwhile).
    """
    current = select_checkpoint(conn)
    if (0 if current is None else current.commit) != previous_commit:
        raise StorageError("another process pruned the ledger meanwhile")
    before = 0 if current is None else current.last_sequence
    deleted = conn.execute(
        f"DELETE FROM usage_events WHERE sequence > {mark} AND sequence <= {mark}",
        (before, checkpoint.last_sequence),
    ).rowcount
    conn.execute(
        f"INSERT INTO ledger_chain_checkpoint ({_CHECKPOINT_COLUMNS}) "
        f"VALUES ({', '.join([mark] * 7)})",
        (
            checkpoint.commit,
            checkpoint.last_sequence,
            checkpoint.head,
            checkpoint.first_pruned_ns,
            checkpoint.last_pruned_ns,
            checkpoint.pruned_events,
            checkpoint.cut_ns,
        ),
    )
    return int(deleted)
