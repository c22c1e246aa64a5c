"""Forecasts of every calendar limit and key, from the ledger's rollups.

Reads usage through the ledger's public query interface (``Ledger.query_usage``), so it
works on every ledger (SQLite, PostgreSQL) and with either limit engine: per limit, one
query for the daily totals of the last weeks and one for the current window so far, each
grouped by the limit's dimensions. The latest projections are kept for the status API
and the metrics; a ``forecast_exceeded`` notice is made for each key projected past its
limit, marked so that it fires once per window and key.

A limit counts what enforcement counts. The rollups are kept per tenant, so a limit on
organisations or plans is projected from usage per tenant, each tenant given the
organisation the configuration maps it to and the plan it is on now (a tenant moved to
another plan keeps its period's usage, as its counters do). The rollups also sum internal
usage with the rest: for a limit without ``include_internal`` the internal usage of the
same ranges is read from the raw events (at most ``MAX_RAW_RANGE`` a query) and taken
back out.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple

from tollmeter.collector._dimensions import METER_DIMENSIONS
from tollmeter.collector.limits._forecast import LOOKBACK_DAYS, Forecast, project
from tollmeter.collector.limits._marks import mark_of
from tollmeter.collector.limits._model import Notice
from tollmeter.collector.limits._rules import CalendarWindow, Rule
from tollmeter.collector.storage._query import MAX_RAW_RANGE, MAX_ROWS, UsageQuery, UsageRow

__all__ = ["Forecaster", "KeyForecast"]

UsageSource = Callable[[UsageQuery], "list[UsageRow]"]

MAX_KEYS = 10_000
"""Keys projected per limit; beyond, the busiest are kept (bounds memory and series)."""


class KeyForecast(NamedTuple):
    limit: str
    key: tuple[str, ...]
    keymap: dict[str, str]
    used: float
    limit_value: float
    window: str
    forecast: Forecast


class Forecaster:
    """Thread-safe holder of the latest projections; ``refresh`` recomputes them.

    ``org_of`` maps tenants to their organisations, ``plan_of`` gives a tenant's plan.
    """

    def __init__(
        self,
        usage: UsageSource,
        *,
        org_of: Mapping[str, str] | None = None,
        plan_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self._usage = usage
        self._org_of = org_of or {}
        self._plan_of = plan_of or (lambda tenant: None)
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, tuple[str, ...]], KeyForecast] = {}

    def refresh(self, rules: Iterable[Rule], now: float) -> list[Notice]:
        """Project every key of every calendar limit; notices for those past their limit."""
        latest: dict[tuple[str, tuple[str, ...]], KeyForecast] = {}
        for rule in rules:
            for item in self._project_rule(rule, now):
                latest[(item.limit, item.key)] = item
        with self._lock:
            self._latest = latest
        return [_notice(item, now) for item in latest.values() if _exceeds(item)]

    def get(self, limit: str, key: tuple[str, ...]) -> Forecast | None:
        with self._lock:
            item = self._latest.get((limit, key))
        return None if item is None else item.forecast

    def all(self) -> list[KeyForecast]:
        with self._lock:
            return list(self._latest.values())

    def _project_rule(self, rule: Rule, now: float) -> list[KeyForecast]:
        window = rule.window
        if not isinstance(window, CalendarWindow):
            return []  # a bucket has no window end, calls in flight no usage to project
        start, end, label = window.bounds(now)
        asked = {*rule.config.group_by, *rule.config.match}
        per_tenant = bool(asked & {"org", "plan"})
        dims = tuple(d for d in METER_DIMENSIONS if d in asked or (per_tenant and d == "tenant"))
        costs = rule.config.measure == "cost"
        today = datetime.fromtimestamp(now, timezone.utc).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        history_query = UsageQuery(
            start=today - timedelta(days=LOOKBACK_DAYS),
            end=today,
            window="day",
            group_by=dims,
            costs=costs,
            limit=MAX_ROWS,
        )
        current_query = UsageQuery(
            start=datetime.fromtimestamp(start, timezone.utc),
            # The window's end, not now: usage stamped ahead by a late clock counts too.
            end=datetime.fromtimestamp(end, timezone.utc),
            group_by=dims,
            costs=costs,
            limit=MAX_ROWS,
        )
        history: dict[tuple[str, ...], dict[date, float]] = {}
        for row, sign in self._rows(rule, history_query):
            key = self._key_of(rule, row, dims, per_tenant)
            if key is not None and row.window_start is not None:
                days = history.setdefault(key, {})
                day = row.window_start.date()
                days[day] = days.get(day, 0.0) + sign * rule.usage_amount(row)
        used: dict[tuple[str, ...], float] = {}
        for row, sign in self._rows(rule, current_query):
            key = self._key_of(rule, row, dims, per_tenant)
            if key is not None:
                used[key] = used.get(key, 0.0) + sign * rule.usage_amount(row)
        keys = sorted(set(history) | set(used), key=lambda k: -used.get(k, 0.0))[:MAX_KEYS]
        out = []
        for key in keys:
            forecast = project(
                history=history.get(key, {}),
                used=used.get(key, 0.0),
                limit=rule.config.limit,
                start=start,
                end=end,
                now=now,
                tz=window.tz,
            )
            if forecast is None:
                continue
            keymap = dict(zip(rule.config.group_by, key, strict=True))
            out.append(
                KeyForecast(
                    rule.name,
                    key,
                    keymap,
                    used.get(key, 0.0),
                    rule.config.limit,
                    label,
                    forecast,
                )
            )
        return out

    def _rows(self, rule: Rule, query: UsageQuery) -> Iterator[tuple[UsageRow, float]]:
        """The rows of ``query`` (bounded), each with the sign to count it with: those of
        internal usage, for a limit that leaves it out, with -1."""
        for row in self._usage(query):
            yield row, 1.0
        start, stop = query.start, query.end
        if rule.config.include_internal or start is None or stop is None:
            return
        while start < stop:
            part = min(stop, start + MAX_RAW_RANGE)
            internal = dataclasses.replace(query, start=start, end=part, internal=True)
            for row in self._usage(internal):
                yield row, -1.0
            start = part

    def _key_of(
        self, rule: Rule, row: UsageRow, dims: tuple[str, ...], per_tenant: bool
    ) -> tuple[str, ...] | None:
        """The limit's key of a usage row, or ``None`` when the limit does not match it;
        ``per_tenant``: the row's tenant stands for its organisation and plan."""
        attrs = {d: getattr(row, d) for d in dims}
        if per_tenant and row.tenant is not None:
            attrs["org"] = self._org_of.get(row.tenant)
            attrs["plan"] = self._plan_of(row.tenant)
        return rule.key(attrs) if rule.matches(attrs) else None


def _exceeds(item: KeyForecast) -> bool:
    return item.forecast.projected > item.limit_value


def _notice(item: KeyForecast, now: float) -> Notice:
    return Notice(
        kind="forecast_exceeded",
        time=now,
        limit=item.limit,
        key=item.keymap,
        tenant=item.keymap.get("tenant"),
        used=round(item.used, 6),
        limit_value=item.limit_value,
        window=item.window,
        mark=mark_of(item.limit, item.key, item.window, "forecast_exceeded", ""),
        projected=round(item.forecast.projected, 6),
        projected_at=item.forecast.reaches_at,
    )
