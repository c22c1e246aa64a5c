"""Exceptions shared by every tollmeter package.

Hierarchy::

    TollmeterError
    ├── ConfigurationError      a setting, file or argument is invalid
    └── InvalidUsage            token counts on a span cannot be trusted

Each package adds its own subclasses next to its code (for example
``tollmeter.instrumentation.QuotaExceeded`` or ``tollmeter.collector.StorageError``),
always rooted here so that ``except TollmeterError`` catches everything tollmeter raises.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "InvalidUsage", "TollmeterError"]


class TollmeterError(Exception):
    """Base class of every exception raised by tollmeter."""


class ConfigurationError(TollmeterError, ValueError):
    """A configuration value, file or argument is invalid."""


class InvalidUsage(TollmeterError, ValueError):
    """A usage attribute holds a value that cannot be counted.

    ``attribute`` names the offending attribute so that a collector can report it
    in an OTLP partial-success message.
    """

    def __init__(self, attribute: str, reason: str) -> None:
        super().__init__(f"{attribute}: {reason}")
        self.attribute = attribute
        self.reason = reason
