"""What the console pages show, read through the same layers as the management API.

Usage comes from ``ledger.query_usage`` (the usage API's query), limit state from the
limits service's tenant status (``GET /api/v1/tenants/{id}/status``), health from the
sources of ``/metrics`` and ``/readyz``. Every function here may block: call them off
the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol, get_args

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Dimension, Ledger, UsageQuery, UsageRow, Window

__all__ = [
    "PERIODS",
    "RECENT_CALLS_SCAN",
    "SERIES_BUCKETS",
    "Period",
    "PeriodName",
    "Series",
    "TenantLimits",
    "Usage",
    "period",
    "read_recent_calls",
    "read_series",
    "read_usage",
    "top",
]

PeriodName = Literal["hour", "day", "month"]
PERIODS: tuple[PeriodName, ...] = get_args(PeriodName)
_PERIOD_SHAPE: Mapping[PeriodName, tuple[str, Window, timedelta, int]] = {
    "hour": ("last hour", "minute", timedelta(minutes=1), 60),
    "day": ("last day", "hour", timedelta(hours=1), 24),
    "month": ("last 30 days", "day", timedelta(days=1), 30),
}
_MAX_GROUPS = 1_000_000
# Recent calls walk back from the newest event; this bounds the walk for a quiet tenant.
RECENT_CALLS_SCAN = 50_000
_SCAN_STEP = 5_000

SERIES_BUCKETS: tuple[tuple[str, str], ...] = (
    ("uncached_input_tokens", "input"),
    ("cache_read_input_tokens", "cache read"),
    ("cache_write_input_tokens", "cache write"),
    ("non_reasoning_output_tokens", "output"),
    ("reasoning_output_tokens", "reasoning"),
)


class TenantLimits(Protocol):
    def status(self, tenant: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Period:
    """A chart's time range: whole buckets of ``window`` ending with the current one."""

    name: PeriodName
    label: str
    window: Window
    step: timedelta
    start: datetime
    end: datetime

    def bucket_starts(self) -> list[datetime]:
        count = (self.end - self.start) // self.step
        return [self.start + index * self.step for index in range(count)]


def period(name: PeriodName, now: datetime | None = None) -> Period:
    """The range of ``name`` ending after the bucket that holds ``now``."""
    label, window, step, count = _PERIOD_SHAPE[name]
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    floor = moment.replace(microsecond=0, second=0)
    if window in ("hour", "day"):
        floor = floor.replace(minute=0)
    if window == "day":
        floor = floor.replace(hour=0)
    end = floor + step
    return Period(name, label, window, step, end - count * step, end)


@dataclass(frozen=True, slots=True)
class Series:
    """Tokens per bucket for each of the five exclusive token types."""

    times: list[int]
    values: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "t": self.times,
            "series": [
                {"label": label, "values": self.values[name]} for name, label in SERIES_BUCKETS
            ],
        }


def read_series(ledger: Ledger, span: Period, *, tenant: str | None = None) -> Series:
    """Tokens over ``span`` per bucket and token type (zeros where nothing was used)."""
    rows = ledger.query_usage(
        UsageQuery(tenant=tenant, start=span.start, end=span.end, window=span.window, costs=False)
    )
    by_start = {row.window_start: row for row in rows}
    starts = span.bucket_starts()
    values: dict[str, list[int]] = {name: [] for name, _ in SERIES_BUCKETS}
    for start in starts:
        row = by_start.get(start)
        for name, _ in SERIES_BUCKETS:
            values[name].append(0 if row is None else int(getattr(row, name)))
    return Series([int(start.timestamp()) for start in starts], values)


@dataclass(frozen=True, slots=True)
class Usage:
    """A period's totals and its usage split by tenant, model and feature."""

    total: UsageRow
    by: Mapping[str, list[UsageRow]]


def read_usage(
    ledger: Ledger,
    span: Period,
    *,
    tenant: str | None = None,
    dimensions: Sequence[Dimension] = ("tenant", "model", "feature"),
) -> Usage:
    """Totals of ``span`` (one tenant's or everyone's) and the rows per dimension.

    One usage query grouped by every dimension at once, folded here: each query scans the
    whole range of rollups, and sums of integers and exact decimals do not depend on the
    order they are added in, so the folded rows equal the API's rows grouped by one.
    """
    rows = ledger.query_usage(
        UsageQuery(
            tenant=tenant,
            start=span.start,
            end=span.end,
            group_by=tuple(dimensions),
            limit=_MAX_GROUPS,
        )
    )
    by: dict[str, list[UsageRow]] = {}
    for dimension in dimensions:
        groups: dict[str | None, list[UsageRow]] = {}
        for row in rows:
            groups.setdefault(getattr(row, dimension), []).append(row)
        by[dimension] = [
            _fold(group, **{dimension: value})
            for value, group in sorted(groups.items(), key=lambda item: item[0] or "")
        ]
    return Usage(_fold(rows) if rows else UsageRow(), by)


def _fold(rows: Sequence[UsageRow], **dimension: str | None) -> UsageRow:
    """The sum of ``rows`` as the ledger would sum their events (cost ``None`` when no
    row has one, the largest currency)."""
    costs = [row.cost for row in rows if row.cost is not None]
    currencies = [row.currency for row in rows if row.currency is not None]
    return UsageRow(
        **dimension,  # type: ignore[arg-type]  # one dimension name and its value
        input_tokens=sum(row.input_tokens for row in rows),
        cache_read_input_tokens=sum(row.cache_read_input_tokens for row in rows),
        cache_write_input_tokens=sum(row.cache_write_input_tokens for row in rows),
        output_tokens=sum(row.output_tokens for row in rows),
        reasoning_output_tokens=sum(row.reasoning_output_tokens for row in rows),
        total_tokens=sum(row.total_tokens for row in rows),
        requests=sum(row.requests for row in rows),
        cost=sum(costs[1:], costs[0]) if costs else None,
        currency=max(currencies) if currencies else None,
    )


def top(rows: Sequence[UsageRow], key: Callable[[UsageRow], Any], count: int) -> list[UsageRow]:
    """The ``count`` largest rows by ``key``, ties in the order given."""
    return sorted(rows, key=key, reverse=True)[:count]


def read_recent_calls(ledger: Ledger, tenant: str, count: int) -> tuple[list[UsageEvent], int]:
    """The tenant's newest ``count`` calls among the newest :data:`RECENT_CALLS_SCAN`
    events of the ledger, newest first, and how many events were looked at."""
    found: list[UsageEvent] = []
    high = ledger.last_sequence()
    scanned = 0
    while high > 0 and scanned < RECENT_CALLS_SCAN and len(found) < count:
        low = max(0, high - _SCAN_STEP)
        page = ledger.read_events(low, high - low)
        scanned += len(page)
        found.extend(event for event in reversed(page) if event.tenant_id == tenant)
        high = low
    return found[:count], scanned
