"""Typed values read out of the ``limits:`` and ``hooks:`` mappings, beside the
collector's config toolkit (:mod:`tollmeter.collector._config_values`), which reads
their sections and durations.

Each reader takes the value and its dotted key path and raises ``InvalidSetting``
(a ``ConfigurationError``) naming that path and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tollmeter.collector.errors import InvalidSetting

__all__ = ["MAX_NUMBER", "choice", "error", "number", "text", "timezone"]

MAX_NUMBER = 1e15
"""The largest limit, weight or threshold accepted: above any real quota, and small enough
that every counter stays exact in a float."""


def error(message: str) -> InvalidSetting:
    """``"<key path>: <reason>"`` as the collector config's error type."""
    key, _, reason = message.partition(": ")
    return InvalidSetting(key, reason)


def _finite(value: float, path: str) -> float:
    # A huge int does not fit a float, and json reads 1e400 as infinity: both refused here,
    # before anything does arithmetic with them.
    if isinstance(value, int) and abs(value) > MAX_NUMBER:
        raise error(f"{path}: at most {MAX_NUMBER:g}, got {_short(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise error(f"{path}: expected a finite number, got {value!r}")
    return number


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def choice(value: object, choices: Sequence[str], path: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise error(f"{path}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def number(value: object, path: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{path}: expected a number, got {_short(value)}")
    number = _finite(value, path)
    if positive and number <= 0:
        raise error(f"{path}: must be positive, got {value!r}")
    if not positive and number < 0:
        raise error(f"{path}: must not be negative, got {value!r}")
    if number > MAX_NUMBER:
        raise error(f"{path}: at most {MAX_NUMBER:g}, got {value!r}")
    return number


def text(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise error(f"{path}: expected a non-empty string, got {value!r}")
    return value


def timezone(value: object, path: str) -> str:
    name = text(value, path)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise error(f"{path}: unknown time zone {name!r}") from exc
    return name
