"""The ``export:`` configuration section.

Example::

    export:
      enabled: true
      directory: ./tollmeter-data/export   # default: <data_dir>/export
      interval: 5m                         # seconds, or a number with s/m/h
      timezone: UTC                        # of the date=YYYY-MM-DD partitions
      batch_size: 100000                   # events per read; bounds memory
      row_group_size: 100000
      compression_level: 3                 # zstd
      timeout: 5m                          # longest wait for a running export
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tollmeter.semconv.errors import ConfigurationError

__all__ = ["ExportConfig", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_KEYS = frozenset(
    {
        "enabled",
        "directory",
        "interval",
        "timezone",
        "batch_size",
        "row_group_size",
        "compression_level",
        "timeout",
    }
)


def parse_duration(value: object, *, where: str) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"5m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ConfigurationError(f"{where}: expected a duration such as 30s or 5m, got {value!r}")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigurationError(f"{where}: must be a positive duration")
    return seconds


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """Typed ``export:`` section. ``directory`` ``None`` means ``<data_dir>/export``."""

    enabled: bool = True
    directory: Path | None = None
    interval_s: float = 300.0
    timezone: str = "UTC"
    batch_size: int = 100_000
    row_group_size: int = 100_000
    compression_level: int = 3
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"export.timezone: unknown time zone {self.timezone!r}"
            ) from None
        for name, low, high in (
            ("batch_size", 1, 10_000_000),
            ("row_group_size", 1, 10_000_000),
            ("compression_level", 1, 22),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationError(f"export.{name}: must be an integer in [{low}, {high}]")
        for name in ("interval_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"export.{name}: must be positive")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object] | None) -> ExportConfig:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigurationError("export: must be a mapping")
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigurationError(f"export: unknown keys {sorted(unknown)}")
        kwargs: dict[str, object] = {}
        if "enabled" in data:
            if not isinstance(data["enabled"], bool):
                raise ConfigurationError("export.enabled: must be true or false")
            kwargs["enabled"] = data["enabled"]
        if data.get("directory") is not None:
            directory = data["directory"]
            if not isinstance(directory, (str, Path)) or not str(directory):
                raise ConfigurationError("export.directory: must be a path")
            kwargs["directory"] = Path(directory)
        if "interval" in data:
            kwargs["interval_s"] = parse_duration(data["interval"], where="export.interval")
        if "timeout" in data:
            kwargs["timeout_s"] = parse_duration(data["timeout"], where="export.timeout")
        if "timezone" in data:
            if not isinstance(data["timezone"], str):
                raise ConfigurationError("export.timezone: must be a time zone name")
            kwargs["timezone"] = data["timezone"]
        for name in ("batch_size", "row_group_size", "compression_level"):
            if name in data:
                kwargs[name] = data[name]
        return cls(**kwargs)  # type: ignore[arg-type]

    def resolve_directory(self, data_dir: Path) -> Path:
        return self.directory if self.directory is not None else data_dir / "export"
