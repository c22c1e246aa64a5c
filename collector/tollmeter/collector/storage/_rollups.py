"""Rollup maintenance and usage queries over rollups or, when they cannot answer, raw events."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage._query import UsageQuery, UsageRow, utc_from_epoch
from tollmeter.collector.storage._windows import WINDOWS, Window, bucket_starts, is_aligned

__all__ = ["rollup_rows", "select_usage"]

_NS = 1_000_000_000
_FIXED_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

_ROLLUP_COLUMNS = {
    "tenant": "tenant",
    "project": "project",
    "model": "model",
    "feature": "feature",
    "api_key": "api_key",
    "usage_source": "usage_source",
}
_EVENT_COLUMNS = {
    "tenant": "tenant_id",
    "project": "COALESCE(project_id, '')",
    "model": "COALESCE(NULLIF(response_model, ''), request_model, '')",
    "feature": "COALESCE(feature, '')",
    "api_key": "COALESCE(api_key_id, '')",
    "usage_source": "usage_source",
}
_ROLLUP_SUMS = (
    "SUM(input_tokens), SUM(cache_read_input_tokens), SUM(cache_write_input_tokens), "
    "SUM(output_tokens), SUM(reasoning_output_tokens), SUM(total_tokens), SUM(requests), "
    "tm_decimal_sum(cost), MAX(currency)"
)
_EVENT_SUMS = (
    "SUM(input_tokens), SUM(cache_read_input_tokens), SUM(cache_write_input_tokens), "
    "SUM(output_tokens), SUM(reasoning_output_tokens), SUM(total_tokens), COUNT(*), "
    "tm_decimal_sum(cost), MAX(currency)"
)


def rollup_rows(events: Sequence[UsageEvent]) -> list[tuple[object, ...]]:
    """Per-bucket sums of ``events`` for every window, ready for the rollup upsert."""
    counts: dict[tuple[object, ...], list[int]] = {}
    costs: dict[tuple[object, ...], tuple[Decimal, str | None]] = {}
    for event in events:
        dims = (
            event.tenant_id,
            event.project_id or "",
            event.model,
            event.feature or "",
            event.api_key_id or "",
            event.usage_source,
        )
        values = (
            event.input_tokens,
            event.cache_read_input_tokens,
            event.cache_write_input_tokens,
            event.output_tokens,
            event.reasoning_output_tokens,
            event.total_tokens,
            1,
        )
        for window, bucket in zip(WINDOWS, bucket_starts(event.event_time_ns // _NS), strict=True):
            key = (window, bucket, *dims)
            acc = counts.get(key)
            if acc is None:
                counts[key] = list(values)
            else:
                for index, value in enumerate(values):
                    acc[index] += value
            if event.cost is not None:
                previous = costs.get(key)
                costs[key] = (
                    (event.cost, event.currency)
                    if previous is None
                    else (previous[0] + event.cost, previous[1] or event.currency)
                )
    rows: list[tuple[object, ...]] = []
    for rollup_key, acc in counts.items():
        cost = costs.get(rollup_key)
        rows.append(
            (*rollup_key, *acc, None, None)
            if cost is None
            else (*rollup_key, *acc, str(cost[0]), cost[1])
        )
    return rows


def _granularity(query: UsageQuery) -> Window | None:
    """The coarsest rollup whose buckets tile the query exactly, or ``None`` (raw events)."""
    limit = len(WINDOWS) if query.window is None else WINDOWS.index(query.window) + 1
    bounds = [ns for ns in (query.start_ns(), query.end_ns()) if ns is not None]
    if any(ns % _NS for ns in bounds):
        return None
    for window in reversed(WINDOWS[:limit]):
        if all(is_aligned(window, ns // _NS) for ns in bounds):
            return window
    return None


def _bucket_expression(window: Window, seconds: str) -> str:
    if window == "month":
        return f"CAST(strftime('%s', {seconds}, 'unixepoch', 'start of month') AS INTEGER)"
    size = _FIXED_SECONDS[window]
    return f"({seconds} - {seconds} % {size})"


def select_usage(conn: sqlite3.Connection, query: UsageQuery) -> list[UsageRow]:
    granularity = _granularity(query)
    start_ns, end_ns = query.start_ns(), query.end_ns()
    where: list[str] = []
    params: list[object] = []
    if granularity is None:
        columns, sums, table, seconds = _EVENT_COLUMNS, _EVENT_SUMS, "usage_events", None
        if start_ns is not None:
            where.append("event_time_ns >= ?")
            params.append(start_ns)
        if end_ns is not None:
            where.append("event_time_ns < ?")
            params.append(end_ns)
    else:
        columns, sums, table, seconds = _ROLLUP_COLUMNS, _ROLLUP_SUMS, "rollups", "bucket"
        where.append("granularity = ?")
        params.append(granularity)
        if start_ns is not None:
            where.append("bucket >= ?")
            params.append(start_ns // _NS)
        if end_ns is not None:
            where.append("bucket < ?")
            params.append(end_ns // _NS)
    for name, value in query.filters().items():
        where.append(f"{columns[name]} = ?")
        params.append(value)
    if query.window is None:
        window_sql = "NULL"
    elif granularity == query.window:
        window_sql = "bucket"
    else:
        window_sql = _bucket_expression(query.window, seconds or f"(event_time_ns / {_NS})")
    group_sql = [columns[name] for name in query.group_by]
    sql = f"SELECT {window_sql}, {', '.join([*group_sql, sums])} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    keys = ["1", *(str(i + 2) for i in range(len(group_sql)))]
    sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)} LIMIT ?"
    params.append(query.limit)
    return [_row(query, row) for row in conn.execute(sql, params)]


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
