"""The ``export:`` configuration section.

Example::

    export:
      enabled: true
      directory: ./tollmeter-data/export   # default: <data_dir>/export
      interval: 5m                         # how often the collector exports
      timezone: UTC                        # of the date=YYYY-MM-DD partitions
      batch_size: 100000                   # events per read; bounds memory
      row_group_size: 100000
      compression_level: 3                 # zstd, 1..22
      timeout: 5m                          # longest run (and wait for a running one)
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from tollmeter.collector._config_values import Section
from tollmeter.collector.errors import InvalidSetting

__all__ = ["ExportConfig"]

_LIMITS = {
    "batch_size": (1, 10_000_000),
    "row_group_size": (1, 10_000_000),
    "compression_level": (1, 22),
}


@dataclass(frozen=True)
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
            raise InvalidSetting(
                "export.timezone", f"unknown time zone {self.timezone!r}"
            ) from None
        for name, (low, high) in _LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidSetting(f"export.{name}", f"expected an integer in [{low}, {high}]")
        for name in ("interval_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidSetting(f"export.{name.removesuffix('_s')}", "must be positive")

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "export") -> ExportConfig:
        section = Section(mapping, path)
        directory = section.optional_string("directory")
        timezone = section.string("timezone", cls.timezone)
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise section.error("timezone", f"unknown time zone {timezone!r}") from None
        numbers = {}
        for name, (low, high) in _LIMITS.items():
            numbers[name] = section.integer(name, getattr(cls, name), minimum=low)
            if numbers[name] > high:
                raise section.error(name, f"expected at most {high}, got {numbers[name]}")
        config = cls(
            enabled=section.boolean("enabled", cls.enabled),
            directory=Path(directory) if directory is not None else None,
            interval_s=section.duration("interval", cls.interval_s, positive=True),
            timezone=timezone,
            timeout_s=section.duration("timeout", cls.timeout_s, positive=True),
            **numbers,
        )
        section.finish()
        return config

    def resolve_directory(self, data_dir: Path) -> Path:
        return self.directory if self.directory is not None else data_dir / "export"
