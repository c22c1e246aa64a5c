"""Compiled limit rules: what a limit matches, what it measures and how its window moves.

Pure functions of their inputs and an explicit ``now`` (Unix seconds): no clock, no
lock, no I/O, so the engine can call them under its lock and tests can drive time.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits._config import (
    CalendarWindowConfig,
    InFlightConfig,
    LimitConfig,
    RollingWindowConfig,
)
from tollmeter.collector.storage._query import UsageRow

__all__ = [
    "INTERNAL",
    "Attributes",
    "CalendarWindow",
    "CostEstimator",
    "Counter",
    "Estimate",
    "InFlight",
    "Rule",
    "TokenBucket",
    "Window",
    "attributes_of_event",
    "rules_by_name",
]

Attributes = Mapping[str, "str | None"]
"""Request attributes keyed by ``DIMENSIONS`` (tenant, project, model, feature, api_key, org),
``plan`` and ``INTERNAL``."""

INTERNAL = "internal"
"""Attribute set (to ``"true"``) on the operator's own usage; not a dimension to match or
group by, only what makes a rule without ``include_internal`` pass the call by."""

CostEstimator = Callable[[str, int, int], "float | None"]
"""(model, input tokens, output tokens) -> estimated cost, or None when unpriced."""


def rules_by_name(rules: Iterable[Rule], plan: str | None = None) -> dict[str, Rule]:
    """The rule of each name, for settling counters where the plan is not at hand.

    Limits of one name in several plans share their counters; the one with the largest
    capacity stands for them, so that a bucket is never clamped below what the plan of
    its tenant allows (the next check brings it back to its own plan's capacity). With
    ``plan`` (a tenant's, known), that plan's rule stands for its names instead.
    """
    rules = tuple(rules)
    by_name: dict[str, Rule] = {}
    for rule in rules:
        held = by_name.get(rule.name)
        if held is None or rule.window.capacity > held.window.capacity:
            by_name[rule.name] = rule
    if plan is not None:
        by_name.update((r.name, r) for r in rules if r.config.match.get("plan") == (plan,))
    return by_name


def attributes_of_event(event: UsageEvent) -> dict[str, str | None]:
    return {
        "tenant": event.tenant_id,
        "project": event.project_id,
        "model": event.model or None,
        "api_key": event.api_key_id,
        "feature": event.feature,
        "org": event.org_id,
        "plan": event.plan,
        INTERNAL: "true" if event.internal else None,
    }


class Estimate(NamedTuple):
    """What a check expects a call to use, before it happens."""

    input_tokens: int
    output_tokens: int
    cost: float | None = None


class Counter:
    """Mutable state of one limit for one key.

    Token bucket: ``level`` = tokens available, ``stamp`` = when last refilled.
    Calendar: ``level`` = amount used, ``stamp`` = start of the current period.
    """

    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class Window(Protocol):
    capacity: float
    retention_s: float

    def new_counter(self, now: float) -> Counter: ...
    def advance(self, counter: Counter, now: float) -> None: ...
    def available(self, counter: Counter) -> float: ...
    def charge(self, counter: Counter, amount: float) -> None: ...
    def used_fraction(self, counter: Counter) -> float: ...
    def wait_for(self, counter: Counter, amount: float, now: float) -> float | None: ...
    def reset_at(self, counter: Counter, now: float) -> float: ...
    def window_id(self, counter: Counter, now: float) -> str: ...
    def period_of(self, when: float) -> float | None: ...


class TokenBucket:
    """Refills ``limit`` units every ``per_s`` seconds, holding at most ``burst`` units.

    Charges may drive the level below zero (actual usage above the estimate): that
    debt is paid back by refill before the next request fits.
    """

    __slots__ = ("capacity", "per_s", "rate", "retention_s")

    def __init__(self, limit: float, config: RollingWindowConfig) -> None:
        self.capacity = config.burst if config.burst is not None else limit
        self.per_s = config.per_s
        self.rate = limit / config.per_s
        self.retention_s = 2 * config.per_s

    def new_counter(self, now: float) -> Counter:
        return Counter(self.capacity, now)

    def advance(self, counter: Counter, now: float) -> None:
        if now > counter.stamp:
            counter.level = min(self.capacity, counter.level + (now - counter.stamp) * self.rate)
            counter.stamp = now

    def available(self, counter: Counter) -> float:
        return counter.level

    def charge(self, counter: Counter, amount: float) -> None:
        counter.level = min(self.capacity, counter.level - amount)

    def used_fraction(self, counter: Counter) -> float:
        return (self.capacity - counter.level) / self.capacity

    def wait_for(self, counter: Counter, amount: float, now: float) -> float | None:
        if amount > self.capacity:
            return None
        return max(0.0, (amount - counter.level) / self.rate)

    def reset_at(self, counter: Counter, now: float) -> float:
        return now + max(0.0, (self.capacity - counter.level) / self.rate)

    def window_id(self, counter: Counter, now: float) -> str:
        return str(math.floor(now / self.per_s))

    def period_of(self, when: float) -> float | None:
        return None


class CalendarWindow:
    """A day, ISO week or month in a time zone, reset at the period boundary."""

    __slots__ = ("_current", "capacity", "period", "retention_s", "tz")

    def __init__(self, limit: float, config: CalendarWindowConfig) -> None:
        self.capacity = limit
        self.period = config.period
        self.tz = ZoneInfo(config.timezone)
        self.retention_s = 32 * 86400.0
        # (start, end, label) of the period last asked about: checks hit it almost always.
        self._current = (0.0, 0.0, "")

    def _bounds(self, when: float) -> tuple[float, float, str]:
        current = self._current
        if current[0] <= when < current[1]:
            return current
        local = datetime.fromtimestamp(when, self.tz)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        if self.period == "week":
            start -= timedelta(days=start.weekday())
        elif self.period == "month":
            start = start.replace(day=1)
        # Aware arithmetic with a ZoneInfo is wall-clock arithmetic: a day that crosses a
        # DST change still ends at local midnight.
        if self.period == "day":
            end = start + timedelta(days=1)
        elif self.period == "week":
            end = start + timedelta(days=7)
        elif start.month == 12:
            end = start.replace(year=start.year + 1, month=1)
        else:
            end = start.replace(month=start.month + 1)
        bounds = (start.timestamp(), end.timestamp(), start.date().isoformat())
        self._current = bounds
        return bounds

    def period_of(self, when: float) -> float:
        return self._bounds(when)[0]

    def bounds(self, when: float) -> tuple[float, float, str]:
        """Start, end and label (its first local date) of the period holding ``when``."""
        return self._bounds(when)

    def new_counter(self, now: float) -> Counter:
        return Counter(0.0, self.period_of(now))

    def advance(self, counter: Counter, now: float) -> None:
        start = self.period_of(now)
        if start > counter.stamp:
            counter.level = 0.0
            counter.stamp = start

    def available(self, counter: Counter) -> float:
        return self.capacity - counter.level

    def charge(self, counter: Counter, amount: float) -> None:
        counter.level = max(0.0, counter.level + amount)

    def used_fraction(self, counter: Counter) -> float:
        return counter.level / self.capacity

    def wait_for(self, counter: Counter, amount: float, now: float) -> float | None:
        if amount > self.capacity:
            return None
        if amount <= self.available(counter):
            return 0.0
        return self.reset_at(counter, now) - now

    def reset_at(self, counter: Counter, now: float) -> float:
        return self._bounds(counter.stamp)[1]

    def window_id(self, counter: Counter, now: float) -> str:
        return self._bounds(counter.stamp)[2]


class InFlight:
    """Calls in flight: ``level`` = open reservations holding a slot, ``stamp`` unused.

    A check takes a slot, its reconcile, release or expiry gives it back. When a slot
    frees is not known ahead, so a throttled check is told to retry after
    ``RETRY_S``; ``period_of`` is ``None`` as for a bucket, so a slot is always given
    back whenever its reservation ends.
    """

    __slots__ = ("capacity", "retention_s")

    RETRY_S = 1.0

    def __init__(self, limit: float) -> None:
        self.capacity = limit
        self.retention_s = 0.0

    def new_counter(self, now: float) -> Counter:
        return Counter(0.0, 0.0)

    def advance(self, counter: Counter, now: float) -> None:
        return None

    def available(self, counter: Counter) -> float:
        return self.capacity - counter.level

    def charge(self, counter: Counter, amount: float) -> None:
        counter.level = max(0.0, counter.level + amount)

    def used_fraction(self, counter: Counter) -> float:
        return counter.level / self.capacity

    def wait_for(self, counter: Counter, amount: float, now: float) -> float | None:
        if amount > self.capacity:
            return None
        return 0.0 if amount <= self.available(counter) else self.RETRY_S

    def reset_at(self, counter: Counter, now: float) -> float:
        return now + (self.wait_for(counter, 1.0, now) or 0.0)

    def window_id(self, counter: Counter, now: float) -> str:
        return "in-flight"

    def period_of(self, when: float) -> float | None:
        return None


def _window_of(config: LimitConfig) -> Window:
    if isinstance(config.window, RollingWindowConfig):
        return TokenBucket(config.limit, config.window)
    if isinstance(config.window, InFlightConfig):
        return InFlight(config.limit)
    return CalendarWindow(config.limit, config.window)


class Rule:
    """One compiled limit."""

    __slots__ = ("_patterns", "config", "name", "window")

    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self.name = config.name
        self.window: Window = _window_of(config)
        self._patterns = {
            dim: re.compile("|".join(fnmatch.translate(p) for p in patterns))
            for dim, patterns in config.match.items()
        }

    def matches(self, attrs: Attributes) -> bool:
        if attrs.get(INTERNAL) is not None and not self.config.include_internal:
            return False
        for dim, pattern in self._patterns.items():
            value = attrs.get(dim)
            if value is None or not pattern.match(value):
                return False
        return True

    def key(self, attrs: Attributes) -> tuple[str, ...]:
        return tuple([attrs.get(dim) or "" for dim in self.config.group_by])

    def estimate_amount(self, estimate: Estimate) -> float:
        measure = self.config.measure
        if measure in ("requests", "concurrency"):
            return 1.0
        if measure == "input":
            return float(estimate.input_tokens)
        if measure == "output":
            return float(estimate.output_tokens)
        if measure == "total":
            return float(estimate.input_tokens + estimate.output_tokens)
        if measure == "cache_read":
            # Cache hits are unknown before the call; the actual usage settles it.
            return 0.0
        if measure == "cost":
            return estimate.cost or 0.0
        w = self.config.weights
        return w["input"] * estimate.input_tokens + w["output"] * estimate.output_tokens

    def usage_amount(self, row: UsageRow) -> float:
        """What a ledger usage row amounts to in this limit's measure (0 for calls in
        flight, which the ledger does not hold)."""
        measure = self.config.measure
        if measure == "requests":
            return float(row.requests)
        if measure in ("input", "output", "cache_read"):
            return float(getattr(row, f"{measure}_tokens"))
        if measure == "total":
            return float(row.total_tokens)
        if measure == "concurrency":
            return 0.0
        if measure == "cost":
            if row.cost is None or (
                self.config.currency and row.currency not in (None, self.config.currency)
            ):
                return 0.0
            return float(row.cost)
        w = self.config.weights
        return (
            w["input"] * row.uncached_input_tokens
            + w["cache_read"] * row.cache_read_input_tokens
            + w["cache_write"] * row.cache_write_input_tokens
            + w["output"] * row.non_reasoning_output_tokens
            + w["reasoning"] * row.reasoning_output_tokens
        )

    def actual_amount(self, event: UsageEvent) -> float:
        if event.internal and not self.config.include_internal:
            # Settles a reservation made before the call was known to be internal to nothing.
            return 0.0
        measure = self.config.measure
        if measure == "requests":
            return 1.0
        if measure == "concurrency":
            # A finished call holds no slot: its usage settles the reservation's slot away.
            return 0.0
        if measure == "input":
            return float(event.input_tokens)
        if measure == "output":
            return float(event.output_tokens)
        if measure == "total":
            return float(event.total_tokens or event.input_tokens + event.output_tokens)
        if measure == "cache_read":
            return float(event.cache_read_input_tokens)
        if measure == "cost":
            if event.cost is None or (
                self.config.currency and event.currency not in (None, self.config.currency)
            ):
                return 0.0
            return float(event.cost)
        w = self.config.weights
        return (
            w["input"] * event.uncached_input_tokens
            + w["cache_read"] * event.cache_read_input_tokens
            + w["cache_write"] * event.cache_write_input_tokens
            + w["output"] * event.non_reasoning_output_tokens
            + w["reasoning"] * event.reasoning_output_tokens
        )
