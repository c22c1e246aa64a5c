"""Retention of raw events: cut the oldest exported commits, leaving a checkpoint.

A cut removes whole commits from the front of the ledger, never the middle, so the hash
chain stays one unbroken run from the checkpoint on. A commit is cut only when:

1. every event in it is exported (its last sequence is at or below the export cursor):
   the Parquet files stay the copy of what is removed;
2. every event in it is older than the cutoff;
3. it is not the newest commit: the ledger's highest sequence must stay in the table,
   since the next append numbers from it;
4. its events still match the chain (sequences, digests and head): the checkpoint signs
   off a range that was intact when it was cut.

The first commit failing one of these ends the cut, so an event exported late or arriving
late holds back every commit after it. The checkpoint (``ledger_chain_checkpoint``, one
row per cut, the newest in force) records the last commit cut, its last sequence and the
head after it; ``verify`` starts from there. The links of cut commits are kept: they are
small and show what was there.
"""

from __future__ import annotations

import hashlib
import time

from tollmeter.collector.storage._base import Ledger, StorageError
from tollmeter.collector.storage._chain import (
    GENESIS,
    ChainLink,
    Checkpoint,
    row_digest,
    unpack_digests,
)
from tollmeter.collector.storage._codec import ROW_COLUMNS

__all__ = ["plan_cut", "prune"]

_EVENT_TIME = ROW_COLUMNS.index("event_time_ns")


def _signed_off(head: bytes, link: ChainLink, rows: list[tuple[object, ...]]) -> bytes:
    """The head after ``link``'s ``rows``; ``StorageError`` when they break the chain."""
    picks = [ROW_COLUMNS.index(name) for name in link.columns]
    cost = link.columns.index("cost")
    entries = list(unpack_digests(link.first_sequence, link.digests))
    if [int(str(row[-1])) for row in rows] != [sequence for sequence, _ in entries]:
        raise StorageError(
            f"refusing to prune: the events of commit {link.commit} are not those it "
            "committed (run tollmeter verify)"
        )
    for row, (sequence, prefix) in zip(rows, entries, strict=True):
        digest = row_digest([row[index] for index in picks], cost)
        if digest[:8] != prefix:
            raise StorageError(
                f"refusing to prune: event {sequence} of commit {link.commit} was altered "
                "(run tollmeter verify)"
            )
        head = hashlib.sha256(head + digest).digest()
    if head.hex() != link.head:
        raise StorageError(f"refusing to prune: commit {link.commit}'s head does not hold")
    return head


def plan_cut(
    ledger: Ledger, *, cutoff_ns: int, exported_through: int, max_events: int
) -> Checkpoint | None:
    """The next checkpoint, cutting at most ``max_events`` events (at least one commit
    whatever its size), or ``None`` when no commit may be cut yet (see the module
    docstring)."""
    previous = ledger.chain_checkpoint()
    newest = ledger.last_sequence()
    commit, sequence, head = (
        (0, 0, GENESIS)
        if previous is None
        else (previous.commit, previous.last_sequence, bytes.fromhex(previous.head))
    )
    first_ns: int | None = None if previous is None else previous.first_pruned_ns
    last_ns: int | None = None if previous is None else previous.last_pruned_ns
    events = 0
    for link in ledger.read_chain(commit, 256):
        if link.commit != commit + 1 or link.first_sequence <= sequence:
            raise StorageError(f"refusing to prune: the chain breaks at commit {commit + 1}")
        if link.last_sequence > exported_through or link.last_sequence >= newest:
            break
        count = link.last_sequence - link.first_sequence + 1
        if events and events + count > max_events:
            break
        rows = [
            tuple(row)
            for row in ledger.read_event_rows(link.first_sequence - 1, count)
            if int(row[-1]) <= link.last_sequence
        ]
        times = [int(str(row[_EVENT_TIME])) for row in rows]
        if max(times, default=cutoff_ns) >= cutoff_ns:
            break
        head = _signed_off(head, link, rows)
        commit, sequence = link.commit, link.last_sequence
        events += len(rows)
        first_ns = min(times) if first_ns is None else min(first_ns, *times)
        last_ns = max(times) if last_ns is None else max(last_ns, *times)
    if commit == (0 if previous is None else previous.commit):
        return None
    return Checkpoint(
        commit,
        sequence,
        head.hex(),
        first_ns,
        last_ns,
        events + (0 if previous is None else previous.pruned_events),
        time.time_ns(),
    )


def prune(
    ledger: Ledger,
    *,
    cutoff_ns: int,
    exported_through: int,
    batch_events: int = 5_000,
    deadline: float | None = None,
) -> int:
    """Cut batch after batch (each its own short transaction) until nothing more may be
    cut or ``deadline`` (``time.monotonic()``) passes; the events deleted."""
    deleted = 0
    while deadline is None or time.monotonic() < deadline:
        previous = ledger.chain_checkpoint()
        checkpoint = plan_cut(
            ledger, cutoff_ns=cutoff_ns, exported_through=exported_through, max_events=batch_events
        )
        if checkpoint is None:
            break
        deleted += ledger.cut(0 if previous is None else previous.commit, checkpoint)
    return deleted
