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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from tollmeter.semconv.errors import ConfigurationError

__all__ = ["PriceOverride", "PricingConfig"]

_OVERRIDE_KEYS = frozenset(
    {
        "model",
        "tenant",
        "provider",
        "effective_from",
        "currency",
        "input_per_mtok",
        "cache_read_per_mtok",
        "cache_write_per_mtok",
        "output_per_mtok",
        "reasoning_per_mtok",
    }
)


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A negotiated price for one model, optionally for one tenant, from a date on.

    Prices are per million tokens, one per exclusive token bucket.
    """

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    effective_from: dt.date = dt.date(1970, 1, 1)
    tenant: str | None = None
    provider: str | None = None
    currency: str = "USD"
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, where: str = "override") -> PriceOverride:
        unknown = set(data) - _OVERRIDE_KEYS
        if unknown:
            raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"{where}: 'model' must be a non-empty string")
        return cls(
            model=model,
            tenant=_optional_str(data, "tenant", where),
            provider=_optional_str(data, "provider", where),
            effective_from=_date(data.get("effective_from", dt.date(1970, 1, 1)), where),
            currency=_currency(data.get("currency", "USD"), where),
            input_per_mtok=_required_price(data, "input_per_mtok", where),
            output_per_mtok=_required_price(data, "output_per_mtok", where),
            cache_read_per_mtok=_price(data, "cache_read_per_mtok", where),
            cache_write_per_mtok=_price(data, "cache_write_per_mtok", where),
            reasoning_per_mtok=_price(data, "reasoning_per_mtok", where),
        )


@dataclass(frozen=True, slots=True)
class PricingConfig:
    """Typed ``pricing:`` section."""

    overrides: tuple[PriceOverride, ...] = field(default_factory=tuple)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object] | None) -> PricingConfig:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigurationError("pricing: must be a mapping")
        unknown = set(data) - {"overrides"}
        if unknown:
            raise ConfigurationError(f"pricing: unknown keys {sorted(unknown)}")
        raw = data.get("overrides") or []
        if not isinstance(raw, Sequence) or isinstance(raw, str):
            raise ConfigurationError("pricing.overrides: must be a list")
        overrides = []
        for index, item in enumerate(raw):
            where = f"pricing.overrides[{index}]"
            if not isinstance(item, Mapping):
                raise ConfigurationError(f"{where}: must be a mapping")
            overrides.append(PriceOverride.from_mapping(item, where=where))
        return cls(overrides=tuple(overrides))


def _optional_str(data: Mapping[str, object], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: '{key}' must be a non-empty string")
    return value


def _date(value: object, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ConfigurationError(f"{where}: 'effective_from' must be a date, not a timestamp")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigurationError(f"{where}: 'effective_from' must be a date like 2026-01-31")


def _currency(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise ConfigurationError(f"{where}: 'currency' must be a three-letter code")
    return value.upper()


def _required_price(data: Mapping[str, object], key: str, where: str) -> Decimal:
    price = _price(data, key, where)
    if price is None:
        raise ConfigurationError(f"{where}: '{key}' is required")
    return price


def _price(data: Mapping[str, object], key: str, where: str) -> Decimal | None:
    value = data.get(key)
    if value is None:
        return None
    # bool is an int subclass; a float would carry binary rounding into every invoice.
    if isinstance(value, (bool, float)) or not isinstance(value, (str, int, Decimal)):
        raise ConfigurationError(f"{where}: '{key}' must be a decimal string such as \"2.50\"")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ConfigurationError(f"{where}: '{key}' is not a decimal: {value!r}") from None
    if not price.is_finite() or price < 0:
        raise ConfigurationError(f"{where}: '{key}' must be a finite, non-negative price")
    return price
