"""Typed values read out of the ``limits:`` and ``hooks:`` mappings.

Each reader takes the value and its dotted key path and raises ``InvalidSetting``
(a ``ConfigurationError``) naming that path and the reason.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tollmeter.collector._config_values import ConfigProblem
from tollmeter.collector.errors import InvalidConfig, InvalidSetting

__all__ = [
    "MAX_DURATION_S",
    "MAX_NUMBER",
    "Problems",
    "choice",
    "error",
    "mapping",
    "no_unknown",
    "number",
    "parse_duration",
    "text",
    "timezone",
]

MAX_NUMBER = 1e15
"""The largest limit, weight or threshold accepted: above any real quota, and small enough
that every counter stays exact in a float."""
MAX_DURATION_S = 10 * 366 * 86400.0
"""The longest duration accepted (ten years): anything longer is a typo or an attack."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def error(message: str) -> InvalidSetting:
    """``"<key path>: <reason>"`` as the collector config's error type."""
    key, _, reason = message.partition(": ")
    return InvalidSetting(key, reason)


class Problems:
    """Every problem of a section, gathered so that all are reported at once."""

    def __init__(self) -> None:
        self.found: list[ConfigProblem] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        """Record the problem raised inside the block instead of stopping at it."""
        try:
            yield
        except InvalidConfig as exc:
            self.found.extend(exc.problems)
        except InvalidSetting as exc:
            self.found.append(ConfigProblem("", exc.key, exc.reason))

    def add(self, key: str, reason: str) -> None:
        self.found.append(ConfigProblem("", key, reason))

    def raise_any(self) -> None:
        """Raise what was found: one ``InvalidSetting``, or an ``InvalidConfig`` of several."""
        if len(self.found) == 1:
            raise InvalidSetting(self.found[0].key, self.found[0].reason)
        if self.found:
            raise InvalidConfig(self.found)


def parse_duration(value: object, path: str) -> float:
    """Seconds from ``30s``, ``1m``, ``1h``, ``7d``, ``500ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise error(f"{path}: expected a duration such as '1m', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = _finite(value, path)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise error(f"{path}: expected a duration such as '1m', got {value!r}")
    if not seconds > 0:
        raise error(f"{path}: a duration must be positive, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise error(f"{path}: at most ten years, got {_short(value)}")
    return seconds


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


def mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise error(f"{path}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise error(f"{path}: keys must be strings, got {key!r}")
    return cast("Mapping[str, Any]", value)


def no_unknown(mapping: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    problems = Problems()
    for key in sorted(set(mapping) - set(allowed)):
        shown = key if len(key) <= 64 else key[:64] + "..."
        problems.add(f"{path}.{shown}", f"unknown key (expected one of {', '.join(allowed)})")
    problems.raise_any()


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
