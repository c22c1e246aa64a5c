"""The numeric settings of a storage URL (``?timeout_s=5``), checked once where they enter."""

from __future__ import annotations

from tollmeter.semconv.errors import ConfigurationError

__all__ = ["positive"]


def positive(name: str, value: float | str) -> float:
    """``value`` as a positive number, or a ``ConfigurationError`` naming the setting."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {value!r}") from None
    if not number > 0:
        raise ConfigurationError(f"{name} must be positive, not {value!r}")
    return number
