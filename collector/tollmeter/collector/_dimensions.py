"""The usage dimensions: what usage is grouped, filtered and keyed by, in one order.

Rollups key their rows by ``DIMENSIONS`` in this order, usage queries group by them,
and meters and limits key by ``METER_DIMENSIONS`` (the usage source is a fact about a
call, not something a quota is set on). ``dimension_key`` is the only place that reads
an event's dimensions; absent values are ``""`` so that a key treats them as one value.
"""

from __future__ import annotations

from typing import Literal, get_args

from tollmeter.collector._records import UsageEvent

__all__ = ["DIMENSIONS", "METER_DIMENSIONS", "Dimension", "DimensionKey", "dimension_key"]

Dimension = Literal["tenant", "project", "model", "feature", "api_key", "usage_source"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
METER_DIMENSIONS: tuple[Dimension, ...] = DIMENSIONS[:5]

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
