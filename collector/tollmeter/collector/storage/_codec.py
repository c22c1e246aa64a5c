"""Usage events to and from the ledger's rows: the one place that knows the row layout.

A row holds the columns of ``usage_events`` in ``ROW_COLUMNS`` order: every
``UsageEvent`` field, ``sequence`` last. The cost travels as decimal text, since SQLite
has no decimal type and its REAL would round. The ledger writes rows, and the Parquet
export and the events API read them; none of them spells the columns out again.

``EVENT_COLUMNS`` is written out, not derived from ``UsageEvent``: the ledger's tables
are literal per schema version (``_schema.py``), and a test fails when a new event field
has no column (and so no migration) yet.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from tollmeter.collector._records import UsageEvent

__all__ = [
    "EVENT_COLUMNS",
    "ROW_COLUMNS",
    "EventRow",
    "event_from_row",
    "event_to_json",
    "event_values",
    "stamp_sequence",
]

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_time_ns",
    "provider",
    "operation",
    "tenant_id",
    "input_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "total_tokens",
    "usage_source",
    "project_id",
    "user_id",
    "api_key_id",
    "feature",
    "environment",
    "service_name",
    "request_id",
    "workflow_id",
    "trace_id",
    "span_id",
    "request_model",
    "response_model",
    "response_id",
    "cost",
    "currency",
    "price_source",
    "duration_s",
    "status",
    "error_type",
    "attempt",
    "reservation_id",
    "collector_id",
    "hidden_input_tokens",
    "time_to_first_token_s",
    "decode_s_per_output_token",
    "org_id",
    "policy",
    "plan",
    "internal",
)
"""The columns ``usage_events`` stores for an event, in ``UsageEvent`` field order."""

ROW_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "sequence")

EventRow = tuple[Any, ...]
"""One event as plain values in ``ROW_COLUMNS`` order. Text may come as ``str`` or as
UTF-8 ``bytes``; ``cost`` is decimal text."""

_COST = EVENT_COLUMNS.index("cost")
_INTERNAL = EVENT_COLUMNS.index("internal")
_VALUES = operator.attrgetter(*EVENT_COLUMNS)
_new_event: Callable[..., UsageEvent] = UsageEvent
_set_sequence: Callable[[UsageEvent, int], None] = vars(UsageEvent)["sequence"].__set__


def event_values(event: UsageEvent) -> EventRow:
    """The stored values of ``event`` in ``EVENT_COLUMNS`` order (no sequence)."""
    values: EventRow = _VALUES(event)
    if event.cost is not None:
        values = (*values[:_COST], str(event.cost), *values[_COST + 1 :])
    # Stored as 0 or 1, as both backends read it back: the hash chain encodes a row as read.
    values = (*values[:_INTERNAL], int(event.internal), *values[_INTERNAL + 1 :])
    return values


def event_from_row(row: Sequence[object]) -> UsageEvent:
    """The event a row in ``ROW_COLUMNS`` order (text as ``str``) stands for."""
    values = list(row)
    if values[_COST] is not None:
        values[_COST] = Decimal(str(values[_COST]))
    values[_INTERNAL] = bool(values[_INTERNAL])
    return _new_event(*values)


def stamp_sequence(event: UsageEvent, sequence: int) -> UsageEvent:
    """Give ``event``, just committed, its ``sequence``, in place, and return it.

    An event handed to ``Ledger.append`` belongs to the ledger from then on: stamping it
    keeps the commit path from building every event a second time (the frozen
    ``__setattr__`` stays closed to everyone else; the slot is written directly).
    """
    _set_sequence(event, sequence)
    return event


def event_to_json(event: UsageEvent) -> dict[str, Any]:
    """``event`` as the events API shows it: every field, the cost as decimal text."""
    out = {field.name: getattr(event, field.name) for field in dataclasses.fields(event)}
    out["cost"] = None if event.cost is None else str(event.cost)
    return out
