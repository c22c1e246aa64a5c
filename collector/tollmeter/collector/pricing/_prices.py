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
_MAX_SOURCES = 4096

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
        self._sources: dict[tuple[str, dt.date], str] = {}

    def price(self, event: UsageEvent) -> UsageEvent:
        quote = self.quote(event)
        return dataclasses.replace(
            event, cost=quote.cost, currency=quote.currency, price_source=quote.price_source
        )

    def price_all(self, events: Iterable[UsageEvent]) -> list[UsageEvent]:
        return [self.price(event) for event in events]

    def quote(self, event: UsageEvent) -> Quote:
        return self.quote_call(
            provider=event.provider,
            model=event.model,
            tenant=event.tenant_id,
            time_ns=event.event_time_ns,
            buckets=(
                event.uncached_input_tokens,
                event.cache_read_input_tokens,
                event.cache_write_input_tokens,
                event.non_reasoning_output_tokens,
                event.reasoning_output_tokens,
            ),
        )

    def quote_call(
        self,
        *,
        provider: str,
        model: str,
        tenant: str,
        time_ns: int,
        buckets: tuple[int, int, int, int, int],
    ) -> Quote:
        """The quote of one call from its parts, before any ``UsageEvent`` exists.

        ``buckets`` are the five exclusive token counts: uncached input, cache read,
        cache write, non-reasoning output, reasoning.
        """
        if not model:
            return Quote(None, None, "unpriced: no model")
        if min(buckets) < 0:
            return Quote(None, None, "unpriced: inconsistent token counts")
        when = _EPOCH + dt.timedelta(microseconds=time_ns // 1000)
        override = self._override_for(provider, tenant, model, when.date())
        if override is not None:
            return _bounded(
                _override_cost(override, buckets), override.currency, _describe(override)
            )
        return self._package_quote(provider, model, buckets, when)

    def _override_for(
        self, provider: str, tenant: str, model: str, day: dt.date
    ) -> PriceOverride | None:
        overrides = self._overrides.get(model.lower())
        if not overrides:
            return None
        best: PriceOverride | None = None
        best_key: tuple[bool, bool, dt.date] | None = None
        provider = provider.lower()
        for override in overrides:
            if override.effective_from > day:
                continue
            if override.tenant is not None and override.tenant != tenant:
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
        self, provider: str, model: str, buckets: Sequence[int], when: dt.datetime
    ) -> Quote:
        provider = provider.lower()
        provider_id = _PROVIDER_IDS.get(provider, provider) or None
        quote = self._package.quote(provider_id, model, buckets, when, _CONTEXT)
        if quote.cost is None:
            return Quote(None, None, f"unpriced: {quote.detail}")
        return _bounded(quote.cost, "USD", self._source(quote.detail, when.date()))

    def _source(self, detail: str, day: dt.date) -> str:
        # The same few texts for every call of a model on a day: formatted once.
        key = (detail, day)
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= _MAX_SOURCES:
                self._sources.clear()
            source = self._sources[key] = (
                f"genai-prices {self._package.version} ({detail}, prices as of {day.isoformat()})"
            )
        return source


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
