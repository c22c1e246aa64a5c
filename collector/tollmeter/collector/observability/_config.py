"""The ``metrics:`` configuration section.

Example::

    metrics:
      enabled: true            # serve /metrics on the management port
      max_tenants: 1000        # tenants past this fold into tenant="_other"
      require_admin_key: false # true: /metrics needs an admin key like /api/*
      activity_log_interval: 60s  # one info line per interval while usage arrives; 0: off
      activity_log_max_new: 20    # "first usage from tenant" lines per interval, at most
"""

from __future__ import annotations

from dataclasses import dataclass

from tollmeter.collector._config_values import Section

__all__ = ["MetricsConfig"]


@dataclass(frozen=True)
class MetricsConfig:
    """Typed ``metrics:`` section."""

    enabled: bool = True
    max_tenants: int = 1000
    require_admin_key: bool = False
    activity_log_interval: float = 60.0
    activity_log_max_new: int = 20

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "metrics") -> MetricsConfig:
        section = Section(mapping, path)
        config = cls(
            enabled=section.boolean("enabled", cls.enabled),
            max_tenants=section.integer("max_tenants", cls.max_tenants, minimum=1),
            require_admin_key=section.boolean("require_admin_key", cls.require_admin_key),
            activity_log_interval=section.duration(
                "activity_log_interval", cls.activity_log_interval
            ),
            activity_log_max_new=section.integer("activity_log_max_new", cls.activity_log_max_new),
        )
        section.finish()
        return config
