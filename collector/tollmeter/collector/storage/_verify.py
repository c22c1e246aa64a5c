"""Recompute the ledger's hash chain and name the first event that breaks it.

The walk goes through the links in commit order and the events in sequence order
together. Each link lists the sequences it inserted with a prefix of each row's digest,
so a break is placed on one event:

- ``inserted``: an event whose sequence no link lists;
- ``removed``: a sequence a link lists with no event;
- ``altered``: an event whose digest differs from the one its link recorded;
- ``chain``: the links themselves do not hold together (a link missing, a head that its
  rows do not give, a column it names that the ledger no longer has).

Only what was committed when the walk starts is checked, so a collector may keep
appending meanwhile. When retention pruned the oldest events, the walk starts at its
checkpoint (the head after the last pruned commit, which must be the head that commit's
link recorded) and reports the range as pruned: it cannot be checked, and is not removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from tollmeter.collector.storage._base import Ledger
from tollmeter.collector.storage._chain import (
    GENESIS,
    ChainLink,
    Checkpoint,
    row_digest,
    unpack_digests,
)
from tollmeter.collector.storage._codec import EVENT_COLUMNS, ROW_COLUMNS

__all__ = ["Break", "LedgerVerdict", "verify_ledger"]

Kind = Literal["altered", "removed", "inserted", "chain"]
_PAGE = 5_000
_EVENT_ID = EVENT_COLUMNS.index("event_id")


@dataclass(frozen=True, slots=True)
class Break:
    """The first place the chain does not hold."""

    kind: Kind
    commit: int | None
    sequence: int | None
    event_id: str | None
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "commit": self.commit,
            "sequence": self.sequence,
            "event_id": self.event_id,
            "detail": self.detail,
        }

    def describe(self) -> str:
        where = [f"commit {self.commit}" if self.commit is not None else "outside every commit"]
        if self.sequence is not None:
            where.append(f"sequence {self.sequence}")
        if self.event_id is not None:
            where.append(f"event {self.event_id}")
        return f"{self.kind}: {', '.join(where)}: {self.detail}"


@dataclass(frozen=True, slots=True)
class LedgerVerdict:
    """What ``verify_ledger`` found: the commits and events it checked (with those before
    the retention ``checkpoint``, pruned, in ``commits``), the head it reached, and the
    first break (``None`` when the chain holds)."""

    commits: int
    events: int
    head: str
    problem: Break | None
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "commits": self.commits,
            "events": self.events,
            "head": self.head,
            "problem": None if self.problem is None else self.problem.to_json(),
            "pruned": None if self.checkpoint is None else self.checkpoint.to_json(),
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Rows:
    """The ledger's rows up to ``end`` in sequence order, one at a time, with a look-ahead."""

    def __init__(self, ledger: Ledger, end: int, after: int) -> None:
        self._ledger = ledger
        self._end = end
        self._page: list[Any] = []
        self._index = 0
        self._after = after

    def peek(self) -> tuple[Any, ...] | None:
        if self._index == len(self._page):
            if self._after >= self._end:
                return None
            self._page = self._ledger.read_event_rows(self._after, _PAGE)
            self._page = [row for row in self._page if row[-1] <= self._end]
            self._index = 0
            if not self._page:
                self._after = self._end
                return None
            self._after = int(self._page[-1][-1])
        row: tuple[Any, ...] = self._page[self._index]
        return row

    def take(self) -> None:
        self._index += 1


def _links(ledger: Ledger, after: int) -> Iterator[ChainLink]:
    while True:
        page = ledger.read_chain(after, 1_000)
        yield from page
        if len(page) < 1_000:
            return
        after = page[-1].commit


def verify_ledger(ledger: Ledger) -> LedgerVerdict:
    """Walk the chain of ``ledger`` and its events (see the module docstring)."""
    checkpoint = ledger.chain_checkpoint()
    end = ledger.last_sequence()
    head, commits, events = GENESIS, 0, 0
    if checkpoint is not None:
        head, commits = bytes.fromhex(checkpoint.head), checkpoint.commit
    rows = _Rows(ledger, end, 0 if checkpoint is None else checkpoint.last_sequence)

    def verdict(problem: Break | None) -> LedgerVerdict:
        return LedgerVerdict(commits, events, head.hex(), problem, checkpoint)

    if checkpoint is not None:
        cut = ledger.read_chain(checkpoint.commit - 1, 1)
        if not cut or cut[0].commit != checkpoint.commit or cut[0].head != checkpoint.head:
            return verdict(
                Break(
                    "chain",
                    checkpoint.commit,
                    None,
                    None,
                    "the retention checkpoint is not the head its commit recorded",
                )
            )
    for link in _links(ledger, commits):
        if link.first_sequence > end:
            if ledger.read_event_rows(link.first_sequence - 1, 1):
                break  # committed after the walk began
            return verdict(
                Break(
                    "removed",
                    link.commit,
                    link.first_sequence,
                    None,
                    "the commit's events are gone",
                )
            )
        if link.commit != commits + 1:
            return verdict(
                Break("chain", commits + 1, None, None, f"link missing (next is {link.commit})")
            )
        unknown = [name for name in link.columns if name not in ROW_COLUMNS]
        if unknown or "cost" not in link.columns or link.columns[-1] != "sequence":
            return verdict(
                Break("chain", link.commit, None, None, f"link names columns {link.columns}")
            )
        picks = [ROW_COLUMNS.index(name) for name in link.columns]
        cost = link.columns.index("cost")
        running = head
        for sequence, prefix in unpack_digests(link.first_sequence, link.digests):
            row = rows.peek()
            if row is not None and row[-1] < sequence:
                return verdict(
                    Break(
                        "inserted",
                        link.commit if row[-1] >= link.first_sequence else None,
                        int(row[-1]),
                        _text(row[_EVENT_ID]),
                        "no commit lists this sequence",
                    )
                )
            if row is None or row[-1] > sequence:
                return verdict(
                    Break("removed", link.commit, sequence, None, "the commit's event is gone")
                )
            rows.take()
            digest = row_digest([row[index] for index in picks], cost)
            if digest[:8] != prefix:
                return verdict(
                    Break(
                        "altered",
                        link.commit,
                        sequence,
                        _text(row[_EVENT_ID]),
                        "the event differs from what was committed",
                    )
                )
            running = hashlib.sha256(running + digest).digest()
            events += 1
        if running.hex() != link.head:
            return verdict(
                Break(
                    "chain",
                    link.commit,
                    None,
                    None,
                    "the link's head is not the one its events and the previous head give",
                )
            )
        head, commits = running, link.commit
    row = rows.peek()
    if row is not None:
        return verdict(
            Break(
                "inserted",
                None,
                int(row[-1]),
                _text(row[_EVENT_ID]),
                "no commit lists this sequence",
            )
        )
    return verdict(None)
