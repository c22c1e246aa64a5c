"""The usage dimensions: what usage is grouped, filtered and keyed by, in one order.

Rollups key their rows by ``DIMENSIONS`` in this order, usage queries group by them,
and meters and limits key by ``METER_DIMENSIONS`` (the usage source is a fact about a
call, not something a quota is set on). ``dimension_key`` is the only place that reads
an event's dimensions; absent values are ``""`` so that a key treats them as one value.

Usage queries may also filter and group by ``EVENT_DIMENSIONS``, which only the raw
events keep (the plan an event was metered under): such a query reads events.
"""

from __future__ import annotations

from typing import Literal, get_args

from tollmeter.collector._records import UsageEvent

__all__ = [
    "DIMENSIONS",
    "EVENT_DIMENSIONS",
    "METER_DIMENSIONS",
    "QUERY_DIMENSIONS",
    "Dimension",
    "DimensionKey",
    "QueryDimension",
    "dimension_key",
]

Dimension = Literal["tenant", "project", "model", "feature", "api_key", "usage_source"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
METER_DIMENSIONS: tuple[Dimension, ...] = DIMENSIONS[:5]
EventDimension = Literal["plan"]
EVENT_DIMENSIONS: tuple[EventDimension, ...] = get_args(EventDimension)
QueryDimension = Literal[Dimension, EventDimension]
QUERY_DIMENSIONS: tuple[QueryDimension, ...] = (*DIMENSIONS, *EVENT_DIMENSIONS)

DimensionKey = tuple[str, str, str, str, str, str]
"""An event's values of ``DIMENSIONS``, in order, absent ones as ``""``."""


def dimension_key(event: UsageEvent) -> DimensionKey:
    return (
        event.tenant_id,
        event.project_id or "",
        event.model,
        event.feature or "",
        event.api_key_id or "",
        event.usage_source,
    )
