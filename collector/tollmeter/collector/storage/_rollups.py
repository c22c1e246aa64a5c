"""Rollup maintenance and usage queries over rollups or, when they cannot answer, raw events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from tollmeter.collector._dimensions import DIMENSIONS, QueryDimension, dimension_key
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage._query import UsageQuery, UsageRow, utc_from_epoch
from tollmeter.collector.storage._settings import positive
from tollmeter.collector.storage._windows import (
    WINDOWS,
    QueryWindow,
    Window,
    bucket_starts,
    is_aligned,
)

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Dialect",
    "Horizons",
    "MinuteKey",
    "MinuteSums",
    "minute_sums",
    "rollup_rows",
    "select_usage",
]

MinuteKey = tuple[int, str, str, str, str, str, str]
"""A minute's start (Unix seconds) followed by a ``DimensionKey``."""
MinuteSums = dict[MinuteKey, list[Any]]
"""Per minute and dimensions: input, cache read, cache write, output, reasoning and total
tokens, requests, cost (``Decimal`` or ``None`` when nothing was priced) and currency."""


class _Cursor(Protocol):
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection a usage query needs (sqlite3's and psycopg's)."""

    def execute(self, sql: Any, params: Any = ..., /) -> _Cursor: ...


_NS = 1_000_000_000
_FIXED_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_WEEK_S = 7 * 86400
_MONDAY_OFFSET_S = 3 * 86400
"""The Unix epoch fell on a Thursday: shifted by three days, weeks start on Monday."""

_ROLLUP_COLUMNS: Mapping[QueryDimension, str] = {name: name for name in DIMENSIONS}
_EVENT_COLUMNS: Mapping[QueryDimension, str] = {
    "tenant": "tenant_id",
    "project": "COALESCE(project_id, '')",
    "model": "COALESCE(NULLIF(response_model, ''), request_model, '')",
    "feature": "COALESCE(feature, '')",
    "api_key": "COALESCE(api_key_id, '')",
    "usage_source": "usage_source",
    "plan": "COALESCE(plan, '')",
}
_TOKEN_COLUMNS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "total_tokens",
)


@dataclass(frozen=True, slots=True)
class Dialect:
    """What a usage query spells differently per database; the rest is standard SQL."""

    param: str
    """The driver's placeholder."""
    integer_sum: str
    """``SUM`` of an integer column named ``{}``, as an integer."""
    cost_sum: str
    """The exact decimal sum of ``cost``, as decimal text."""
    month_start: str
    """The first second of the UTC month holding the Unix time ``{}``."""
    modulo: str
    """``{0}`` modulo ``{1}``."""


SQLITE = Dialect(
    param="?",
    integer_sum="SUM({})",
    cost_sum="tm_decimal_sum(cost)",
    month_start="CAST(strftime('%s', {}, 'unixepoch', 'start of month') AS INTEGER)",
    modulo="{0} % {1}",
)
POSTGRES = Dialect(
    param="%s",
    # PostgreSQL sums BIGINT into NUMERIC; the driver would hand over Decimals.
    integer_sum="CAST(SUM({}) AS BIGINT)",
    cost_sum="CAST(SUM(cost) AS TEXT)",
    month_start="CAST(EXTRACT(EPOCH FROM date_trunc('month', "
    "to_timestamp({}) AT TIME ZONE 'UTC')) AS BIGINT)",
    # psycopg reads every % as a placeholder.
    modulo="mod({0}, {1})",
)


def minute_sums(events: Sequence[UsageEvent]) -> MinuteSums:
    """``events`` summed per minute and dimensions: one dictionary update per event.

    The one place a commit's events are summed: the rollups are folded from the result,
    and the ledger hands it on to meters and metrics with the committed events.
    """
    minutes: MinuteSums = {}
    for event in events:
        seconds = event.event_time_ns // _NS
        key = (seconds - seconds % 60, *dimension_key(event))
        acc = minutes.get(key)
        if acc is None:
            minutes[key] = [
                event.input_tokens,
                event.cache_read_input_tokens,
                event.cache_write_input_tokens,
                event.output_tokens,
                event.reasoning_output_tokens,
                event.total_tokens,
                1,
                event.cost,
                event.currency,
            ]
            continue
        acc[0] += event.input_tokens
        acc[1] += event.cache_read_input_tokens
        acc[2] += event.cache_write_input_tokens
        acc[3] += event.output_tokens
        acc[4] += event.reasoning_output_tokens
        acc[5] += event.total_tokens
        acc[6] += 1
        if event.cost is not None:
            acc[7] = event.cost if acc[7] is None else acc[7] + event.cost
            acc[8] = acc[8] or event.currency
    return minutes


class Horizons:
    """How long a ledger keeps its dedupe keys and its minute and hour rollups, and the
    pruning of what is older, at most once per ``prune_interval_ns``."""

    def __init__(
        self,
        *,
        dedupe_window_ns: int,
        prune_interval_ns: int,
        minute_rollups_s: int,
        hour_rollups_s: int | None,
    ) -> None:
        self._dedupe_window_ns = dedupe_window_ns
        self._prune_interval_ns = prune_interval_ns
        self._minute_rollups_s = minute_rollups_s
        self._hour_rollups_s = hour_rollups_s
        self._last_prune_ns = 0

    @classmethod
    def from_settings(
        cls,
        *,
        dedupe_window_s: float | str,
        prune_interval_s: float | str,
        minute_rollups_s: float | str,
        hour_rollups_s: float | str | None,
    ) -> Horizons:
        """The horizons a ledger's storage URL asks for, each checked to be positive
        (``hour_rollups_s=None``: hour rollups are kept forever)."""
        return cls(
            dedupe_window_ns=int(positive("dedupe_window_s", dedupe_window_s) * 1e9),
            prune_interval_ns=int(positive("prune_interval_s", prune_interval_s) * 1e9),
            minute_rollups_s=int(positive("minute_rollups_s", minute_rollups_s)),
            hour_rollups_s=(
                None if hour_rollups_s is None else int(positive("hour_rollups_s", hour_rollups_s))
            ),
        )

    def minute_s(self, now_ns: int) -> int:
        """The first minute bucket that keeps a minute rollup."""
        horizon = now_ns // 1_000_000_000 - self._minute_rollups_s
        return horizon - horizon % 60

    def hour_s(self, now_ns: int) -> int:
        """The first hour bucket that keeps an hour rollup (0 when hours are kept forever)."""
        if self._hour_rollups_s is None:
            return 0
        horizon = now_ns // 1_000_000_000 - self._hour_rollups_s
        return horizon - horizon % 3600

    def prune_if_due(self, conn: Connection, dialect: Dialect, now_ns: int) -> None:
        """Forget the dedupe keys and rollups past their horizons, unless done lately."""
        if now_ns - self._last_prune_ns < self._prune_interval_ns:
            return
        p = dialect.param
        conn.execute(
            f"DELETE FROM dedupe_keys WHERE seen_ns < {p}", (now_ns - self._dedupe_window_ns,)
        )
        conn.execute(
            f"DELETE FROM rollups WHERE granularity = 'minute' AND bucket < {p}",
            (self.minute_s(now_ns),),
        )
        if self._hour_rollups_s is not None:
            conn.execute(
                f"DELETE FROM rollups WHERE granularity = 'hour' AND bucket < {p}",
                (self.hour_s(now_ns),),
            )
        self._last_prune_ns = now_ns


def rollup_rows(
    minutes: MinuteSums, *, minute_horizon_s: int = 0, hour_horizon_s: int = 0
) -> list[tuple[object, ...]]:
    """Per-bucket sums for every window, folded from ``minute_sums``, ready for the upsert.

    Minutes before ``minute_horizon_s`` get no minute rollup, hours before
    ``hour_horizon_s`` no hour rollup (they would be pruned at once).
    """
    buckets: dict[tuple[Any, ...], list[Any]] = {}
    for key, acc in minutes.items():
        dims = key[1:]
        for window, bucket in zip(WINDOWS, bucket_starts(key[0]), strict=True):
            if (window == "minute" and bucket < minute_horizon_s) or (
                window == "hour" and bucket < hour_horizon_s
            ):
                continue
            bucket_key = (window, bucket, *dims)
            target = buckets.get(bucket_key)
            if target is None:
                buckets[bucket_key] = list(acc)
                continue
            for index in range(7):
                target[index] += acc[index]
            if acc[7] is not None:
                target[7] = acc[7] if target[7] is None else target[7] + acc[7]
                target[8] = target[8] or acc[8]
    return [
        (*key, *acc[:7], None if acc[7] is None else str(acc[7]), acc[8])
        for key, acc in buckets.items()
    ]


def _granularity(query: UsageQuery, minute_horizon_s: int, hour_horizon_s: int) -> Window | None:
    """The coarsest rollup whose buckets tile the query exactly, or ``None`` (raw events).

    Minute rollups only cover the time since ``minute_horizon_s``: older minutes are
    pruned, so a query starting earlier (or without a start) cannot use them. Hour rollups
    are kept forever unless ``hour_horizon_s`` (0 for forever) says the same of them.
    """
    # Weeks are summed from day buckets, which tile them.
    finest = "day" if query.window == "week" else query.window
    limit = len(WINDOWS) if finest is None else WINDOWS.index(finest) + 1
    start_ns = query.start_ns()
    bounds = [ns for ns in (start_ns, query.end_ns()) if ns is not None]
    if any(ns % _NS for ns in bounds):
        return None
    for window in reversed(WINDOWS[:limit]):
        if window == "minute" and (start_ns is None or start_ns // _NS < minute_horizon_s):
            continue
        if (
            window == "hour"
            and hour_horizon_s
            and (start_ns is None or start_ns // _NS < hour_horizon_s)
        ):
            continue
        if all(is_aligned(window, ns // _NS) for ns in bounds):
            return window
    return None


def _bucket_expression(window: QueryWindow, seconds: str, dialect: Dialect) -> str:
    if window == "week":
        shifted = f"({seconds} + {_MONDAY_OFFSET_S})"
        return f"({seconds} - {dialect.modulo.format(shifted, _WEEK_S)})"
    if window == "month":
        return dialect.month_start.format(seconds)
    size = _FIXED_SECONDS[window]
    return f"({seconds} - {dialect.modulo.format(seconds, size)})"


def select_usage(
    conn: Connection,
    query: UsageQuery,
    *,
    minute_horizon_s: int = 0,
    hour_horizon_s: int = 0,
    dialect: Dialect = SQLITE,
) -> list[UsageRow]:
    """Run ``query`` on ``conn``, a DB-API connection to a ledger in ``dialect``."""
    # Rollups sum internal and customer usage, and every plan, together: a query on the
    # mark or the plan reads events.
    granularity = (
        None if query.needs_events else _granularity(query, minute_horizon_s, hour_horizon_s)
    )
    mark = dialect.param
    token_sums = ", ".join(dialect.integer_sum.format(name) for name in _TOKEN_COLUMNS)
    start_ns, end_ns = query.start_ns(), query.end_ns()
    where: list[str] = []
    params: list[object] = []
    if granularity is None:
        columns, table, seconds = _EVENT_COLUMNS, "usage_events", None
        sums = f"{token_sums}, COUNT(*)"
        if start_ns is not None:
            where.append(f"event_time_ns >= {mark}")
            params.append(start_ns)
        if end_ns is not None:
            where.append(f"event_time_ns < {mark}")
            params.append(end_ns)
    else:
        columns, table, seconds = _ROLLUP_COLUMNS, "rollups", "bucket"
        sums = f"{token_sums}, {dialect.integer_sum.format('requests')}"
        where.append(f"granularity = {mark}")
        params.append(granularity)
        if start_ns is not None:
            where.append(f"bucket >= {mark}")
            params.append(start_ns // _NS)
        if end_ns is not None:
            where.append(f"bucket < {mark}")
            params.append(end_ns // _NS)
    for name, value in query.filters().items():
        where.append(f"{columns[name]} = {mark}")
        params.append(value)
    if query.internal is not None:
        where.append(f"internal = {mark}")
        params.append(int(query.internal))
    if query.window is None:
        window_sql = "NULL"
    elif granularity == query.window:
        window_sql = "bucket"
    else:
        window_sql = _bucket_expression(
            query.window, seconds or f"(event_time_ns / {_NS})", dialect
        )
    group_sql = [columns[name] for name in query.group_by]
    costs = f"{dialect.cost_sum}, MAX(currency)" if query.costs else "NULL, NULL"
    sql = f"SELECT {window_sql}, {', '.join([*group_sql, sums, costs])} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    keys = ["1", *(str(i + 2) for i in range(len(group_sql)))]
    sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)} LIMIT {mark}"
    params.append(query.limit)
    return [_row(query, row) for row in conn.execute(sql, params).fetchall()]


def _row(query: UsageQuery, row: tuple[Any, ...]) -> UsageRow:
    dims = {
        name: (value or None)
        for name, value in zip(query.group_by, row[1 : 1 + len(query.group_by)], strict=True)
    }
    counters = row[1 + len(query.group_by) :]
    return UsageRow(
        window_start=None if row[0] is None else utc_from_epoch(row[0]),
        input_tokens=counters[0],
        cache_read_input_tokens=counters[1],
        cache_write_input_tokens=counters[2],
        output_tokens=counters[3],
        reasoning_output_tokens=counters[4],
        total_tokens=counters[5],
        requests=counters[6],
        cost=None if counters[7] is None else Decimal(counters[7]),
        currency=counters[8],
        **dims,
    )
