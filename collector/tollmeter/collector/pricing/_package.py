"""List prices from the genai-prices data bundled with the installed package.

Looking a model up in genai-prices and decomposing a usage costs about a
millisecond, too slow to do per event at ingest. Within one UTC day a model's
cost is linear in the five token buckets, piecewise: tiered prices switch every
token to another rate once the prompt passes a threshold. So the per-token rates
of each tier are derived once from the package itself (by pricing one more token
of each bucket) and reused; the result is the package's own figure, exactly.
Models whose price changes within a day (off-peak hours) are priced by the
package event by event.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext

import genai_prices
from genai_prices import types as price_types

__all__ = ["PackagePrices", "PackageQuote"]

logger = logging.getLogger(__name__)

# One extra token per bucket: uncached input, cache read, cache write, plain
# output, reasoning. Cached tokens are part of the input total, reasoning of output.
_ONE_MORE = (
    {"input_tokens": 1},
    {"input_tokens": 1, "cache_read_tokens": 1},
    {"input_tokens": 1, "cache_write_tokens": 1},
    {"output_tokens": 1},
    {"output_tokens": 1, "output_reasoning_tokens": 1},
)


@dataclass(frozen=True, slots=True)
class PackageQuote:
    """A list price in USD and the ``provider/model`` it is for; or ``cost`` ``None``
    and the reason in ``detail``."""

    cost: Decimal | None
    detail: str


@dataclass(frozen=True, slots=True)
class _Linear:
    """Cost = ``constant`` + sum of bucket count x ``per_token`` rate."""

    constant: Decimal
    per_token: tuple[Decimal, ...]


@dataclass(slots=True)
class _Tiered:
    """Rates per tier; tier ``i`` applies when the prompt exceeds ``thresholds[i-1]``."""

    label: str
    thresholds: tuple[int, ...]
    tiers: dict[int, _Linear]


@dataclass(frozen=True, slots=True)
class _PerEvent:
    """Priced by the package for every event."""


@dataclass(frozen=True, slots=True)
class _Unknown:
    reason: str


_Rates = _Tiered | _PerEvent | _Unknown


class PackagePrices:
    """Thread-safe genai-prices lookups with a bounded cache of per-bucket rates."""

    def __init__(self, *, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._rates: dict[tuple[str | None, str, dt.date], _Rates] = {}
        self._lock = threading.Lock()
        self.version = genai_prices.__version__

    def quote(
        self,
        provider_id: str | None,
        model: str,
        buckets: Sequence[int],
        when: dt.datetime,
        context: Context,
    ) -> PackageQuote:
        """The cost of ``buckets`` (see ``_UNIT_USAGES``) for ``model`` at ``when``.

        ``context`` is the ``decimal`` context the arithmetic runs in.
        """
        key = (provider_id, model.lower(), when.date())
        with self._lock:
            rates = self._rates.get(key)
        if rates is None:
            rates = self._resolve(provider_id, model, when)
            with self._lock:
                if len(self._rates) >= self._max_entries:
                    self._rates.pop(next(iter(self._rates)))
                self._rates[key] = rates
        if isinstance(rates, _Unknown):
            return PackageQuote(None, rates.reason)
        try:
            if isinstance(rates, _Tiered):
                return self._linear_quote(rates, provider_id, model, buckets, when, context)
            calc = _calc(_usage(buckets), model, provider_id, when)
        except Exception as exc:
            return self._failed(model, exc)
        return PackageQuote(calc.total_price, _label(calc))

    def _linear_quote(
        self,
        rates: _Tiered,
        provider_id: str | None,
        model: str,
        buckets: Sequence[int],
        when: dt.datetime,
        context: Context,
    ) -> PackageQuote:
        prompt = sum(buckets[:3])
        tier = sum(1 for start in rates.thresholds if prompt > start)
        linear = rates.tiers.get(tier)
        if linear is None:
            start = rates.thresholds[tier - 1] + 1 if tier else 0
            linear = _derive(provider_id, model, when, start)
            with self._lock:
                rates.tiers[tier] = linear
        with localcontext(context):
            total = linear.constant + sum(
                (count * rate for count, rate in zip(buckets, linear.per_token, strict=True)),
                Decimal(0),
            )
        return PackageQuote(total, rates.label)

    def _resolve(self, provider_id: str | None, model: str, when: dt.datetime) -> _Rates:
        try:
            calc = _calc(genai_prices.Usage(), model, provider_id, when)
        except Exception as exc:
            return _Unknown(self._failed(model, exc).detail)
        if _changes_within_a_day(calc):
            return _PerEvent()
        starts = {
            tier.start
            for price in vars(calc.model_price).values()
            if isinstance(price, price_types.TieredPrices)
            for tier in price.tiers
        }
        return _Tiered(_label(calc), tuple(sorted(starts)), {})

    @staticmethod
    def _failed(model: str, exc: Exception) -> PackageQuote:
        if isinstance(exc, LookupError):
            return PackageQuote(None, f"unknown model {model}")
        # One model the price data cannot handle must not fail a whole batch.
        logger.warning("cannot price model %s: %s", model, exc)
        return PackageQuote(None, f"{model}: price data error")


def _derive(provider_id: str | None, model: str, when: dt.datetime, prompt: int) -> _Linear:
    """The rates of the tier holding a prompt of ``prompt`` uncached input tokens."""

    def cost(**usage: int) -> Decimal:
        extra_input = usage.pop("input_tokens", 0)
        total = genai_prices.Usage(input_tokens=prompt + extra_input, **usage)
        return _calc(total, model, provider_id, when).total_price

    at_prompt = cost()
    uncached = cost(input_tokens=1) - at_prompt
    per_token = tuple(cost(**dict(one_more)) - at_prompt for one_more in _ONE_MORE)
    return _Linear(at_prompt - uncached * prompt, per_token)


def _usage(buckets: Sequence[int]) -> genai_prices.Usage:
    uncached, cache_read, cache_write, plain_output, reasoning = buckets
    return genai_prices.Usage(
        input_tokens=uncached + cache_read + cache_write,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=plain_output + reasoning,
        output_reasoning_tokens=reasoning,
    )


def _calc(
    usage: genai_prices.Usage, model: str, provider_id: str | None, when: dt.datetime
) -> price_types.PriceCalculation:
    try:
        return genai_prices.calc_price(
            usage, model, provider_id=provider_id, genai_request_timestamp=when
        )
    except LookupError:
        if provider_id is None:
            raise
        # An unknown provider name (a proxy, a self-hosted gateway) may still serve
        # a model the data knows: match on the model alone.
        return genai_prices.calc_price(usage, model, genai_request_timestamp=when)


def _changes_within_a_day(calc: price_types.PriceCalculation) -> bool:
    prices = calc.model.prices
    conditions = prices if isinstance(prices, list) else []
    return any(isinstance(c.constraint, price_types.TimeOfDateConstraint) for c in conditions)


def _label(calc: price_types.PriceCalculation) -> str:
    return f"{calc.provider.id}/{calc.model.id}"
