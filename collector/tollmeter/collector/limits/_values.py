"""Typed values read out of the ``limits:`` and ``hooks:`` mappings.

Each reader takes the value and its dotted key path and raises ``InvalidSetting``
(a ``ConfigurationError``) naming that path and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tollmeter.collector._config_values import InvalidSetting

__all__ = [
    "choice",
    "error",
    "mapping",
    "no_unknown",
    "number",
    "parse_duration",
    "text",
    "timezone",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def error(message: str) -> InvalidSetting:
    """``"<key path>: <reason>"`` as the collector config's error type."""
    key, _, reason = message.partition(": ")
    return InvalidSetting(key, reason)


def parse_duration(value: object, path: str) -> float:
    """Seconds from ``30s``, ``1m``, ``1h``, ``7d``, ``500ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise error(f"{path}: expected a duration such as '1m', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise error(f"{path}: expected a duration such as '1m', got {value!r}")
    if seconds <= 0:
        raise error(f"{path}: a duration must be positive, got {value!r}")
    return seconds


def mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise error(f"{path}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise error(f"{path}: keys must be strings, got {key!r}")
    return cast("Mapping[str, Any]", value)


def no_unknown(mapping: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise error(f"{path}.{unknown[0]}: unknown key (expected one of {', '.join(allowed)})")


def choice(value: object, choices: Sequence[str], path: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise error(f"{path}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def number(value: object, path: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{path}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise error(f"{path}: must be positive, got {value!r}")
    if not positive and value < 0:
        raise error(f"{path}: must not be negative, got {value!r}")
    return float(value)


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
