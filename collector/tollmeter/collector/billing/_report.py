"""One provider report as tollmeter compares it: rows of tokens by type and cost per day.

Every importer (the providers' APIs, their CSV downloads) ends in :class:`ReportRow`
values, checked by the readers here: a count must be a non-negative integer below
``MAX_TOKENS``, a cost a finite decimal; anything else is a :class:`ReportError` naming
where in the payload it was found, and the import as a whole is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Literal

from tollmeter.collector.errors import ReportError

__all__ = [
    "MAX_TOKENS",
    "PROVIDERS",
    "TOKEN_TYPES",
    "Provider",
    "ReportError",
    "ReportRow",
    "read_cost",
    "read_count",
    "read_day",
    "read_text",
]

Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic")
TOKEN_TYPES = (
    "uncached_input_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
)
"""The exclusive token types a report is compared on (output includes reasoning)."""

MAX_TOKENS = 10**15
"""More tokens than any organisation uses in a day: a larger count is a broken report."""
_MAX_COST = Decimal(10) ** 12


@dataclass(frozen=True, slots=True)
class ReportRow:
    """Usage or cost a provider reports for one UTC day, model, project and API key.

    A usage row carries token counts and no cost; a cost row a cost and no counts.
    ``model``, ``project`` and ``api_key`` are ``None`` where the report does not say.
    """

    provider: Provider
    day: date
    model: str | None = None
    project: str | None = None
    api_key: str | None = None
    uncached_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    requests: int | None = None
    cost: Decimal | None = None
    currency: str | None = None

    def tokens(self, kind: str) -> int:
        value: int = getattr(self, kind)
        return value


def read_count(value: object, where: str) -> int:
    """A token or request count: a non-negative integer (``12.0`` is taken, ``12.5`` not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ReportError(f"{where}: expected a count, got {type(value).__name__}")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise ReportError(f"{where}: expected a count, got {value!r}") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ReportError(f"{where}: expected a whole number, got {value!r}")
    if not 0 <= number <= MAX_TOKENS:
        raise ReportError(f"{where}: {value!r} is out of range (0 to {MAX_TOKENS})")
    return int(number)


def read_cost(value: object, where: str, *, scale: Decimal = Decimal(1)) -> Decimal:
    """An amount as an exact decimal (floats arrive already parsed as ``Decimal``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ReportError(f"{where}: expected an amount, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ReportError(f"{where}: expected an amount, got {type(value).__name__}")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ReportError(f"{where}: expected an amount, got {value!r}") from None
    if not number.is_finite() or not -_MAX_COST < number < _MAX_COST:
        raise ReportError(f"{where}: {value!r} is not a usable amount")
    return number * scale


def read_text(value: object, where: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > 512:
        raise ReportError(f"{where}: expected a string of at most 512 characters")
    return value


def read_day(value: object, where: str) -> date:
    """The UTC day a bucket starts on, from Unix seconds or an RFC 3339 / ISO date string."""
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, Decimal)) or (isinstance(value, str) and value.isdigit()):
            seconds = int(value)
            if not 0 <= seconds < 7_258_118_400:
                raise ValueError
            return datetime.fromtimestamp(seconds, tz=timezone.utc).date()
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(timezone.utc)
            return moment.date()
    except (ValueError, OverflowError):
        pass
    raise ReportError(f"{where}: expected a bucket start time, got {value!r}")
