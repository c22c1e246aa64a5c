"""Projected usage at the end of a calendar window, from daily history: pure functions.

The method (also in docs/limits.md):

1. History is the daily usage of the key over the complete days before today, at most
   ``LOOKBACK_DAYS``, starting at its first day with usage (days before a key existed
   are not zeros).
2. With at least ``PROFILE_MIN_DAYS`` of history, a day-of-week profile: the mean of
   each weekday over the last four weeks divided by the mean of all of them. Each day
   divided by its weekday's weight gives a deseasonalized series.
3. The rate is the exponentially weighted mean of that series (``HALF_LIFE_DAYS``), so
   recent days count most; without a profile, the plain mean of the days there are.
4. The projection is what the window has used so far plus, for every remaining part of
   a local day until the window ends, the rate times that weekday's weight times the
   part of the day. With no complete day of history the window's own pace (used so
   far over time elapsed) is the rate.

The date the limit is reached is where the cumulated projection passes it, linear
within a day. Amounts that are not finite or are negative are read as zero: nothing a
ledger row holds can turn a projection into ``NaN``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from tollmeter.collector.limits._model import iso_time

__all__ = ["HALF_LIFE_DAYS", "LOOKBACK_DAYS", "PROFILE_MIN_DAYS", "Forecast", "project"]

LOOKBACK_DAYS = 56
PROFILE_MIN_DAYS = 14
HALF_LIFE_DAYS = 7.0
_PROFILE_DAYS = 28
_MIN_PACE_S = 3600.0
"""Less of the window than this elapsed and no history: too little to project from."""

Method = Literal["weekly_profile", "recent_rate", "window_pace"]


class Forecast(NamedTuple):
    """Where a key's usage is heading by the end of its window."""

    projected: float
    reaches_at: float | None
    """When usage reaches the limit (``now`` when it already has), else ``None``."""
    method: Method

    def to_json(self) -> dict[str, Any]:
        return {
            "projected": round(self.projected, 6),
            "reaches_limit_at": None if self.reaches_at is None else iso_time(self.reaches_at),
            "method": self.method,
        }


def _clean(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def _profile(days: Sequence[tuple[date, float]]) -> list[float]:
    """Weight of each weekday (Monday first), mean 1 over the weekdays seen."""
    recent = days[-_PROFILE_DAYS:]
    sums = [0.0] * 7
    counts = [0] * 7
    for day, amount in recent:
        sums[day.weekday()] += amount
        counts[day.weekday()] += 1
    means = [s / c for s, c in zip(sums, counts, strict=True) if c]
    overall = sum(means) / len(means) if means else 0.0
    if overall <= 0:
        return [1.0] * 7
    return [(s / c) / overall if c else 1.0 for s, c in zip(sums, counts, strict=True)]


def _rate(days: Sequence[tuple[date, float]], profile: Sequence[float]) -> float:
    total = weight_sum = 0.0
    last = len(days) - 1
    for i, (day, amount) in enumerate(days):
        weight = profile[day.weekday()]
        if weight <= 0:
            continue  # a weekday that never sees usage says nothing about the rate
        w = 0.5 ** ((last - i) / HALF_LIFE_DAYS)
        total += w * amount / weight
        weight_sum += w
    return total / weight_sum if weight_sum else 0.0


def project(
    *,
    history: Mapping[date, float],
    used: float,
    limit: float,
    start: float,
    end: float,
    now: float,
    tz: ZoneInfo,
) -> Forecast | None:
    """The projection for one key of a window ``[start, end)`` at ``now``.

    ``history`` maps local dates before today to that day's usage (missing days are
    zeros). ``None`` when there is nothing to project from yet.
    """
    used = _clean(used)
    today = datetime.fromtimestamp(now, tz).date()
    cleaned = {d: _clean(a) for d, a in history.items() if d < today}
    first = min((d for d, a in cleaned.items() if a > 0), default=None)
    days: list[tuple[date, float]] = []
    if first is not None:
        first = max(first, today - timedelta(days=LOOKBACK_DAYS))
        span = (today - first).days
        dates = [first + timedelta(days=i) for i in range(span)]
        days = [(d, cleaned.get(d, 0.0)) for d in dates]
    method: Method
    if len(days) >= PROFILE_MIN_DAYS:
        method, profile = "weekly_profile", _profile(days)
        rate = _rate(days, profile)
    elif days:
        # Under two weeks, weighting recent days would mostly weigh the last weekend.
        method, profile = "recent_rate", [1.0] * 7
        rate = sum(a for _, a in days) / len(days)
    else:
        elapsed = now - start
        if elapsed < _MIN_PACE_S:
            return None
        method, profile = "window_pace", [1.0] * 7
        rate = used / elapsed * 86400.0
    return _walk(used, rate, profile, limit, now, end, tz, method)


def _walk(
    used: float,
    rate: float,
    profile: Sequence[float],
    limit: float,
    now: float,
    end: float,
    tz: ZoneInfo,
    method: Method,
) -> Forecast:
    """Add the expected usage of each remaining part of a local day until ``end``."""
    total = used
    reaches = now if used >= limit else None
    moment = now
    while moment < end:
        local = datetime.fromtimestamp(moment, tz)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        day_start = midnight.timestamp()
        day_end = (midnight + timedelta(days=1)).timestamp()
        stop = min(end, day_end)
        expected = rate * profile[local.weekday()] * (stop - moment) / (day_end - day_start)
        if reaches is None and expected > 0 and total + expected >= limit:
            reaches = moment + (limit - total) / expected * (stop - moment)
        total += expected
        moment = stop
    if not math.isfinite(total):
        total = used
    return Forecast(total, reaches, method)
