"""What the ledger answers: usage totals filtered, grouped and bucketed by window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from tollmeter.collector._dimensions import (
    DIMENSIONS,
    EVENT_DIMENSIONS,
    QUERY_DIMENSIONS,
    Dimension,
    QueryDimension,
)
from tollmeter.collector.errors import InvalidQuery
from tollmeter.collector.storage._windows import QUERY_WINDOWS, QueryWindow

__all__ = [
    "DIMENSIONS",
    "MAX_RAW_RANGE",
    "QUERY_DIMENSIONS",
    "Dimension",
    "QueryDimension",
    "UsageQuery",
    "UsageRow",
]


MAX_ROWS = 10_000_000
MAX_RAW_RANGE = timedelta(days=31)
"""The longest range a query answered from the raw events (rollups cannot) may cover."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageQuery:
    """Usage in ``[start, end)`` (UTC), filtered by exact dimension values.

    ``group_by`` splits the totals by dimensions; ``window`` further splits them by
    calendar bucket. Without either, one row holds the totals of everything that matches.
    """

    tenant: str | None = None
    project: str | None = None
    model: str | None = None
    feature: str | None = None
    api_key: str | None = None
    usage_source: str | None = None
    plan: str | None = None
    """The plan the events were metered under (kept on raw events only, like ``internal``)."""
    internal: bool | None = None
    """Only the operator's own usage (``True``) or only the rest (``False``). Rollups do not
    keep the mark apart, so such a query reads the raw events of a bounded range."""
    start: datetime | None = None
    end: datetime | None = None
    group_by: tuple[QueryDimension, ...] = ()
    window: QueryWindow | None = None
    limit: int = 10_000
    costs: bool = True
    """``False`` leaves ``cost`` and ``currency`` out (``None``): summing exact decimals is
    the slow part of a query over many rows, and a token chart needs none."""

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            moment = getattr(self, name)
            if moment is None:
                continue
            if moment.tzinfo is None:
                raise InvalidQuery(f"{name} must carry a time zone")
            try:
                in_range = 0 <= epoch_ns(moment) < _MAX_NS
            except (OverflowError, ValueError):
                in_range = False
            if not in_range:
                raise InvalidQuery(f"{name} must be between 1970 and 2200")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise InvalidQuery("start must be before end")
        unknown = [name for name in self.group_by if name not in QUERY_DIMENSIONS]
        if unknown:
            raise InvalidQuery(
                f"cannot group by {', '.join(unknown)}; choose from {', '.join(QUERY_DIMENSIONS)}"
            )
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidQuery("group_by repeats a dimension")
        if self.window is not None and self.window not in QUERY_WINDOWS:
            raise InvalidQuery(
                f"unknown window {self.window!r}; choose from {', '.join(QUERY_WINDOWS)}"
            )
        if self.internal is not None:
            self._check_raw_range("an internal filter")
        if self.plan is not None or "plan" in self.group_by:
            self._check_raw_range("a plan filter or grouping")
        if not 1 <= self.limit <= MAX_ROWS:
            raise InvalidQuery(f"limit must be between 1 and {MAX_ROWS}")

    def _check_raw_range(self, what: str) -> None:
        if self.start is None or self.end is None:
            raise InvalidQuery(f"{what} needs start and end")
        if self.end - self.start > MAX_RAW_RANGE:
            raise InvalidQuery(f"{what} covers at most {MAX_RAW_RANGE.days} days")

    @property
    def needs_events(self) -> bool:
        """Whether only the raw events can answer: it asks for what rollups do not keep."""
        return self.internal is not None or any(
            name in self.group_by or getattr(self, name) is not None for name in EVENT_DIMENSIONS
        )

    def filters(self) -> dict[QueryDimension, str]:
        """The dimensions this query pins to one value."""
        return {
            name: value for name in QUERY_DIMENSIONS if (value := getattr(self, name)) is not None
        }

    def start_ns(self) -> int | None:
        return None if self.start is None else epoch_ns(self.start)

    def end_ns(self) -> int | None:
        return None if self.end is None else epoch_ns(self.end)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_NS = 7_258_118_400 * 1_000_000_000  # 2200-01-01, well inside int64 nanoseconds


def epoch_ns(moment: datetime) -> int:
    """Exact nanoseconds since the Unix epoch (``timestamp()`` would round through a float)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRow:
    """Totals of one group. Dimensions not grouped by are ``None``.

    ``cost`` sums the costs of the events that carry one (``None`` when none does);
    token counts follow ``UsageEvent``: input includes cache, output includes reasoning.
    """

    window_start: datetime | None = None
    tenant: str | None = None
    project: str | None = None
    model: str | None = None
    feature: str | None = None
    api_key: str | None = None
    usage_source: str | None = None
    plan: str | None = None
    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    cost: Decimal | None = None
    currency: str | None = None

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_input_tokens - self.cache_write_input_tokens

    @property
    def non_reasoning_output_tokens(self) -> int:
        return self.output_tokens - self.reasoning_output_tokens

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping: times as ISO 8601, the cost as a decimal string.

        Besides the OpenTelemetry totals it lists the five exclusive token buckets
        (uncached input, cache read, cache write, non-reasoning output, reasoning).
        """
        return {
            "window_start": None if self.window_start is None else self.window_start.isoformat(),
            "tenant": self.tenant,
            "project": self.project,
            "model": self.model,
            "feature": self.feature,
            "api_key": self.api_key,
            "usage_source": self.usage_source,
            "plan": self.plan,
            "input_tokens": self.input_tokens,
            "uncached_input_tokens": self.uncached_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_write_input_tokens": self.cache_write_input_tokens,
            "output_tokens": self.output_tokens,
            "non_reasoning_output_tokens": self.non_reasoning_output_tokens,
            "reasoning_output_tokens": self.reasoning_output_tokens,
            "total_tokens": self.total_tokens,
            "requests": self.requests,
            "cost": None if self.cost is None else str(self.cost),
            "currency": self.currency,
        }


def utc_from_epoch(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc)
