"""The ledger contract every storage backend fulfils."""

from __future__ import annotations

import abc
import dataclasses
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage._query import UsageQuery, UsageRow
from tollmeter.semconv.errors import TollmeterError

__all__ = ["EVENT_ROW_COLUMNS", "AppendResult", "EventRow", "Ledger", "StorageError"]

EVENT_ROW_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(UsageEvent))
"""The values of an ``EventRow``: every ``UsageEvent`` field, in field order."""

EventRow = tuple[Any, ...]
"""One event as plain values in ``EVENT_ROW_COLUMNS`` order. Text may come as ``str`` or
as UTF-8 ``bytes``; ``cost`` is decimal text."""

_EVENT_VALUES = operator.attrgetter(*EVENT_ROW_COLUMNS)
_ROW_COST = EVENT_ROW_COLUMNS.index("cost")


class StorageError(TollmeterError):
    """The storage backend failed (disk full, corrupt file, lock timeout...).

    The driver's own exception is kept as ``__cause__``.
    """


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one ``append`` stored.

    ``committed`` holds the new events with their sequences, in sequence order;
    ``duplicates`` counts the events dropped because their ``event_id`` was already
    in the ledger or earlier in the same batch.
    """

    committed: list[UsageEvent] = field(default_factory=list)
    duplicates: int = 0


class Ledger(abc.ABC):
    """Append-only, exactly-once store of usage events.

    Methods are thread-safe and blocking; those that can wait give up with a
    ``StorageError`` after the backend's timeout.
    """

    @abc.abstractmethod
    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        """Store the events not seen within the dedupe window, in one durable transaction.

        Within a batch the first event with a given ``event_id`` wins.
        """

    @abc.abstractmethod
    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        """Up to ``limit`` events with a sequence above ``after_sequence``, ascending."""

    def read_event_rows(self, after_sequence: int, limit: int) -> list[EventRow]:
        """``read_events`` as plain tuples, for bulk readers such as the Parquet export.

        Backends override it to skip building one ``UsageEvent`` per row.
        """
        rows: list[EventRow] = []
        for event in self.read_events(after_sequence, limit):
            values: EventRow = _EVENT_VALUES(event)
            if event.cost is not None:
                values = (*values[:_ROW_COST], str(event.cost), *values[_ROW_COST + 1 :])
            rows.append(values)
        return rows

    @abc.abstractmethod
    def last_sequence(self) -> int:
        """The highest committed sequence, 0 for an empty ledger."""

    @abc.abstractmethod
    def query_usage(self, query: UsageQuery) -> list[UsageRow]:
        """Usage totals matching ``query``, ordered by window then grouped dimensions."""

    @abc.abstractmethod
    def get_state(self, key: str) -> str | None:
        """A value stored with ``set_state``, or ``None``."""

    @abc.abstractmethod
    def set_state(self, key: str, value: str) -> None:
        """Durably store a small value (an export cursor, hook state...)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection. Idempotent; other calls fail afterwards."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
