"""Reading typed values out of configuration mappings.

Every configuration section, the collector's own and those added by features
(``export``, ``limits``, ...), parses its mapping with a :class:`Section`: it
converts durations (``"500ms"``, ``"7d"``), sizes (``"4MiB"``) and endpoints
(``"127.0.0.1:4317"``), and :meth:`Section.finish` rejects unknown keys. Each
problem is an :class:`InvalidSetting` naming the dotted key and the reason; the
loader adds the file (or environment variable, or flag) it came from. A section
with many keys gathers its problems in :class:`Problems` to report all of them at
once rather than the first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, TypeVar

from tollmeter.collector.errors import InvalidConfig, InvalidSetting

__all__ = [
    "MAX_DURATION_S",
    "ConfigProblem",
    "Endpoint",
    "Problems",
    "Section",
    "duration_setting",
    "parse_duration",
    "parse_endpoint",
    "parse_size",
]

_T = TypeVar("_T", bound=str)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
MAX_DURATION_S = 10 * 366 * 86400.0
"""The longest duration accepted (ten years): anything longer is a typo or an attack."""
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}


class ConfigProblem(NamedTuple):
    """Where a rejected value came from, which key, and why."""

    source: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.reason}"


class Endpoint(NamedTuple):
    """A ``host:port`` listen address; port 0 asks the system for a free port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Problems:
    """Every problem of a section, gathered so that all are reported at once."""

    def __init__(self) -> None:
        self.found: list[ConfigProblem] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        """Record the problems raised inside the block instead of stopping at them."""
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


def parse_duration(value: object) -> float:
    """Seconds from ``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"``, ``"1w"`` or a number."""
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_DURATION_S:
        # Checked before converting: an int too large for a float would raise OverflowError.
        raise ValueError(f"expected a duration of at most ten years, got {str(value)[:40]}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration like '500ms', '30s', '7d', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {value!r}")
    if seconds > MAX_DURATION_S:
        # Longer than any sensible setting, and too long for the timeouts it is handed to.
        raise ValueError(f"expected a duration of at most ten years, got {str(value)[:40]}")
    return seconds


def duration_setting(value: object, key: str, *, positive: bool = False) -> float:
    """:func:`parse_duration` for the setting at ``key``; ``positive`` refuses zero."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise InvalidSetting(key, str(exc)) from None
    if positive and seconds <= 0:
        raise InvalidSetting(key, f"expected a positive duration, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``"512KiB"``, ``"4MiB"``, ``"1GB"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    else:
        raise ValueError(f"expected a size like '512KiB' or '4MiB', got {value!r}")
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def parse_endpoint(value: object) -> Endpoint:
    """An :class:`Endpoint` from ``"host:port"`` or ``"[ipv6]:port"``."""
    if not isinstance(value, str):
        raise ValueError(f"expected 'host:port', got {_type_name(value)}")
    host, sep, port_text = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected 'host:port' with a port from 0 to 65535, got {value!r}")
    return Endpoint(host, int(port_text))


class Section:
    """Typed, strict access to one mapping of a configuration.

    Read each key with the typed getters, then call :meth:`finish`: any key no
    getter asked for is reported as unknown.
    """

    def __init__(self, mapping: object, path: str = "") -> None:
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise InvalidSetting(path or "<root>", f"expected a mapping, got {_type_name(mapping)}")
        for key in mapping:
            if not isinstance(key, str):
                raise InvalidSetting(path or "<root>", f"keys must be strings, got {key!r}")
        self._mapping: Mapping[str, object] = mapping
        self._read: set[str] = set()
        self.path = path

    def key(self, name: str) -> str:
        """The dotted path of ``name`` in this section."""
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> InvalidSetting:
        return InvalidSetting(self.key(name), reason)

    def raw(self, name: str) -> object:
        """The value as written, ``None`` when absent."""
        self._read.add(name)
        return self._mapping.get(name)

    def string(self, name: str, default: str) -> str:
        value = self.optional_string(name)
        return default if value is None else value

    def optional_string(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {value!r}")
        return value

    def choice(self, name: str, default: _T, choices: Sequence[_T]) -> _T:
        value = self.raw(name)
        if value is None:
            return default
        for choice in choices:
            if value == choice:
                return choice
        raise self.error(name, f"expected one of {', '.join(choices)}, got {value!r}")

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(name, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        value = self.raw(name)
        if value is None:
            return default
        return duration_setting(value, self.key(name), positive=positive)

    def size(self, name: str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def endpoint(self, name: str, default: Endpoint) -> Endpoint:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse_endpoint(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def string_list(self, name: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return tuple(default)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.error(name, f"expected a list of strings, got {_type_name(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise InvalidSetting(
                    f"{self.key(name)}[{index}]", f"expected a non-empty string, got {item!r}"
                )
        return tuple(value)

    def string_map(self, name: str) -> dict[str, str | None]:
        """A mapping of non-empty strings to strings or ``null``."""
        value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(name, f"expected a mapping, got {_type_name(value)}")
        result: dict[str, str | None] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.strip():
                raise self.error(name, f"keys must be non-empty strings, got {key!r}")
            if item is not None and (not isinstance(item, str) or not item.strip()):
                raise InvalidSetting(
                    f"{self.key(name)}.{key}", f"expected a string or null, got {item!r}"
                )
            result[key] = item
        return result

    def section(self, name: str) -> Section:
        """The nested mapping ``name`` (empty when absent)."""
        return Section(self.raw(name), self.key(name))

    def finish(self) -> None:
        """Reject every key that no getter asked for, naming each of them."""
        expected = ", ".join(sorted(self._read)) or "nothing"
        problems = Problems()
        for name in sorted(set(self._mapping) - self._read):
            shown = name if len(name) <= 64 else name[:64] + "..."
            problems.add(self.key(shown), f"unknown key (expected one of: {expected})")
        problems.raise_any()
