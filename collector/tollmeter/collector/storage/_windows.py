"""Calendar windows in UTC: minute, hour, day and month buckets as epoch seconds.

Rollups keep those four; a usage query may also ask for weeks (Monday 00:00 UTC to
the next Monday), which are summed from days.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Literal

__all__ = [
    "QUERY_WINDOWS",
    "WINDOWS",
    "QueryWindow",
    "Window",
    "bucket_start",
    "bucket_starts",
    "is_aligned",
]

Window = Literal["minute", "hour", "day", "month"]
WINDOWS: tuple[Window, ...] = ("minute", "hour", "day", "month")
QueryWindow = Literal["minute", "hour", "day", "week", "month"]
QUERY_WINDOWS: tuple[QueryWindow, ...] = ("minute", "hour", "day", "week", "month")

_FIXED_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@functools.lru_cache(maxsize=4096)
def _month_of_day(day_start: int) -> int:
    moment = datetime.fromtimestamp(day_start, tz=timezone.utc)
    return int(datetime(moment.year, moment.month, 1, tzinfo=timezone.utc).timestamp())


def bucket_start(window: Window, epoch_s: int) -> int:
    """The first second of the ``window`` bucket holding ``epoch_s``."""
    if window == "month":
        return _month_of_day(epoch_s - epoch_s % 86400)
    size = _FIXED_SECONDS[window]
    return epoch_s - epoch_s % size


def bucket_starts(epoch_s: int) -> tuple[int, int, int, int]:
    """Minute, hour, day and month bucket starts of one instant, in ``WINDOWS`` order."""
    day = epoch_s - epoch_s % 86400
    return (epoch_s - epoch_s % 60, epoch_s - epoch_s % 3600, day, _month_of_day(day))


def is_aligned(window: Window, epoch_s: int) -> bool:
    return bucket_start(window, epoch_s) == epoch_s
