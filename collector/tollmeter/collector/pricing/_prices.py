"""Cost of a usage event: negotiated overrides first, then the genai-prices data.

Everything stays in ``Decimal``: prices, products and sums. A cost is rounded
once, half-even, to ``COST_SCALE`` decimal places, the scale of the Parquet
``cost`` column, so the ledger, the usage API and the export add up to the same
figure. A model without a known price gets no cost and a reason, never zero.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.pricing._config import PriceOverride, PricingConfig
from tollmeter.collector.pricing._package import PackagePrices

__all__ = ["COST_PRECISION", "COST_SCALE", "Pricer", "Quote"]

COST_PRECISION = 38
"""Digits of the decimal cost: the widest decimal that Parquet readers (Spark, DuckDB) share."""
COST_SCALE = 12
"""Decimal places of a cost: exact for per-million-token prices given to six places."""

_QUANTUM = Decimal(1).scaleb(-COST_SCALE)
_MAX_COST = Decimal(10) ** (COST_PRECISION - COST_SCALE)
_PER_MILLION = Decimal(1_000_000)
# Wide enough that no product or rounding of a representable cost loses a digit.
_CONTEXT = Context(prec=2 * COST_PRECISION, rounding=ROUND_HALF_EVEN)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# OpenTelemetry ``gen_ai.provider.name`` values whose genai-prices id differs.
_PROVIDER_IDS = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "x_ai": "x-ai",
    "mistral_ai": "mistral",
}


@dataclass(frozen=True, slots=True)
class Quote:
    """The priced outcome for one event: ``cost`` is ``None`` when it cannot be priced."""

    cost: Decimal | None
    currency: str | None
    price_source: str


class Pricer:
    """Prices usage events offline.

    ``price(event)`` returns the event with ``cost``, ``currency`` and
    ``price_source`` filled. Overrides from the ``pricing:`` section win over the
    package data: the most specific match (tenant, then provider) with the latest
    ``effective_from`` on or before the event's UTC date. The package's bundled
    data is used as shipped; it is never refreshed over the network.
    """

    def __init__(self, config: PricingConfig | None = None) -> None:
        self._overrides: dict[str, list[PriceOverride]] = {}
        for override in (config or PricingConfig()).overrides:
            self._overrides.setdefault(override.model.lower(), []).append(override)
        self._package = PackagePrices()

    def price(self, event: UsageEvent) -> UsageEvent:
        quote = self.quote(event)
        return dataclasses.replace(
            event, cost=quote.cost, currency=quote.currency, price_source=quote.price_source
        )

    def price_all(self, events: Iterable[UsageEvent]) -> list[UsageEvent]:
        return [self.price(event) for event in events]

    def quote(self, event: UsageEvent) -> Quote:
        model = event.model
        if not model:
            return Quote(None, None, "unpriced: no model")
        buckets = _buckets(event)
        if buckets is None:
            return Quote(None, None, "unpriced: inconsistent token counts")
        when = _EPOCH + dt.timedelta(microseconds=event.event_time_ns // 1000)
        override = self._override_for(event, model, when.date())
        if override is not None:
            return _bounded(
                _override_cost(override, buckets), override.currency, _describe(override)
            )
        return self._package_quote(event, model, buckets, when)

    def _override_for(self, event: UsageEvent, model: str, day: dt.date) -> PriceOverride | None:
        best: PriceOverride | None = None
        best_key: tuple[bool, bool, dt.date] | None = None
        provider = event.provider.lower()
        for override in self._overrides.get(model.lower(), ()):
            if override.effective_from > day:
                continue
            if override.tenant is not None and override.tenant != event.tenant_id:
                continue
            if override.provider is not None and override.provider.lower() != provider:
                continue
            key = (
                override.tenant is not None,
                override.provider is not None,
                override.effective_from,
            )
            if best_key is None or key > best_key:
                best, best_key = override, key
        return best

    def _package_quote(
        self, event: UsageEvent, model: str, buckets: Sequence[int], when: dt.datetime
    ) -> Quote:
        provider = event.provider.lower()
        provider_id = _PROVIDER_IDS.get(provider, provider) or None
        quote = self._package.quote(provider_id, model, buckets, when, _CONTEXT)
        if quote.cost is None:
            return Quote(None, None, f"unpriced: {quote.detail}")
        source = (
            f"genai-prices {self._package.version} ({quote.detail}, "
            f"prices as of {when.date().isoformat()})"
        )
        return _bounded(quote.cost, "USD", source)


def _buckets(event: UsageEvent) -> tuple[int, int, int, int, int] | None:
    buckets = (
        event.uncached_input_tokens,
        event.cache_read_input_tokens,
        event.cache_write_input_tokens,
        event.non_reasoning_output_tokens,
        event.reasoning_output_tokens,
    )
    if any(count < 0 for count in buckets):
        return None
    return buckets


def _override_cost(override: PriceOverride, buckets: Sequence[int]) -> Decimal:
    uncached, cache_read, cache_write, plain_output, reasoning = buckets
    with localcontext(_CONTEXT):
        return _override_total(override, uncached, cache_read, cache_write, plain_output, reasoning)


def _override_total(
    override: PriceOverride,
    uncached: int,
    cache_read: int,
    cache_write: int,
    plain_output: int,
    reasoning: int,
) -> Decimal:
    input_price = override.input_per_mtok
    output_price = override.output_per_mtok
    total = (
        uncached * input_price
        + cache_read * _or(override.cache_read_per_mtok, input_price)
        + cache_write * _or(override.cache_write_per_mtok, input_price)
        + plain_output * output_price
        + reasoning * _or(override.reasoning_per_mtok, output_price)
    )
    return total / _PER_MILLION


def _or(price: Decimal | None, default: Decimal) -> Decimal:
    return default if price is None else price


def _describe(override: PriceOverride) -> str:
    scope = [f"model {override.model}"]
    if override.tenant is not None:
        scope.append(f"tenant {override.tenant}")
    if override.provider is not None:
        scope.append(f"provider {override.provider}")
    return f"override ({', '.join(scope)}, effective {override.effective_from.isoformat()})"


def _bounded(cost: Decimal, currency: str, source: str) -> Quote:
    if abs(cost) >= _MAX_COST:
        return Quote(None, None, "unpriced: cost out of range")
    with localcontext(_CONTEXT):
        return Quote(cost.quantize(_QUANTUM), currency, source)
