"""The ``pricing:`` configuration section: negotiated price overrides.

Example::

    pricing:
      overrides:
        - model: gpt-4o
          tenant: acme            # optional: every tenant when absent
          provider: openai        # optional: every provider when absent
          effective_from: 2026-01-01
          currency: USD
          input_per_mtok: "2.00"
          cache_read_per_mtok: "0.50"    # default: the input price
          cache_write_per_mtok: "2.50"   # default: the input price
          output_per_mtok: "8.00"
          reasoning_per_mtok: "8.00"     # default: the output price

Prices are decimal strings (or integers) per million tokens; floats are refused
because they cannot state a negotiated price exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from tollmeter.collector._config_values import Section

__all__ = ["PriceOverride", "PricingConfig"]

_EPOCH_DAY = dt.date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A negotiated price for one model, optionally for one tenant, from a date on.

    Prices are per million tokens, one per exclusive token bucket.
    """

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    effective_from: dt.date = _EPOCH_DAY
    tenant: str | None = None
    provider: str | None = None
    currency: str = "USD"
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> PriceOverride:
        section = Section(mapping, path)
        override = cls(
            model=section.string("model", ""),
            tenant=section.optional_string("tenant"),
            provider=section.optional_string("provider"),
            effective_from=_date(section, "effective_from"),
            currency=_currency(section),
            input_per_mtok=_required_price(section, "input_per_mtok"),
            output_per_mtok=_required_price(section, "output_per_mtok"),
            cache_read_per_mtok=_price(section, "cache_read_per_mtok"),
            cache_write_per_mtok=_price(section, "cache_write_per_mtok"),
            reasoning_per_mtok=_price(section, "reasoning_per_mtok"),
        )
        if not override.model:
            raise section.error("model", "is required")
        section.finish()
        return override


@dataclass(frozen=True, slots=True)
class PricingConfig:
    """Typed ``pricing:`` section."""

    overrides: tuple[PriceOverride, ...] = field(default_factory=tuple)

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "pricing") -> PricingConfig:
        section = Section(mapping, path)
        raw = section.raw("overrides")
        section.finish()
        if raw is None:
            return cls()
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise section.error("overrides", "expected a list of overrides")
        key = section.key("overrides")
        return cls(
            overrides=tuple(
                PriceOverride.from_mapping(item, f"{key}[{index}]")
                for index, item in enumerate(raw)
            )
        )


def _date(section: Section, name: str) -> dt.date:
    value = section.raw(name)
    if value is None:
        return _EPOCH_DAY
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise section.error(name, f"expected a date like 2026-01-31, got {value!r}")


def _currency(section: Section) -> str:
    value = section.string("currency", "USD")
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise section.error("currency", f"expected a three-letter code, got {value!r}")
    return value.upper()


def _required_price(section: Section, name: str) -> Decimal:
    price = _price(section, name)
    if price is None:
        raise section.error(name, "is required")
    return price


def _price(section: Section, name: str) -> Decimal | None:
    value = section.raw(name)
    if value is None:
        return None
    # bool is an int subclass; a float would carry binary rounding into every invoice.
    if isinstance(value, (bool, float)) or not isinstance(value, (str, int, Decimal)):
        raise section.error(name, f'expected a decimal string such as "2.50", got {value!r}')
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise section.error(name, f"expected a decimal, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise section.error(name, f"expected a finite, non-negative price, got {value!r}")
    return price
