"""FOCUS 1.2 cost and usage rows from the ledger.

One row per charge period (an hour or a day, UTC), tenant, provider, model, project,
feature and currency, with the token types in ``x_`` columns, rather than one row per
token type: the ledger prices each call as a whole (one cost per event, already
combining its token types at their own rates), so a row per token type would have to
invent how a call's cost splits. Summing the rows' ``BilledCost`` gives the ledger's cost
to the last decimal; the token types stay available for unit economics.

Calls the ledger could not price keep their own rows with costs of zero, marked
``x_PriceStatus = "unpriced"`` (FOCUS needs a cost on every row; the marker keeps a zero
from passing for a free call). Costs are decimals with 12 places, as in the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

from tollmeter.collector._records import UsageEvent

__all__ = ["FOCUS_COLUMNS", "ChargePeriod", "FocusOptions", "day_bounds", "focus_rows"]

ChargePeriod = Literal["hour", "day"]

FOCUS_COLUMNS: tuple[str, ...] = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "BillingCurrency",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "PricingCategory",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "ServiceName",
    "ServiceCategory",
    "ServiceSubcategory",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "InvoiceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SkuId",
    "SkuPriceId",
    "SkuMeter",
    "SkuPriceDetails",
    "RegionId",
    "RegionName",
    "AvailabilityZone",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "Tags",
    "x_UncachedInputTokens",
    "x_CacheReadInputTokens",
    "x_CacheWriteInputTokens",
    "x_OutputTokens",
    "x_ReasoningOutputTokens",
    "x_Requests",
    "x_EstimatedRequests",
    "x_PriceStatus",
)
"""Every column of the export, in file order."""

_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic", "gemini": "Google", "bedrock": "AWS"}
_DEFAULT_CURRENCY = "USD"


@dataclass(frozen=True, slots=True, kw_only=True)
class FocusOptions:
    period: ChargePeriod = "day"
    billing_account_id: str = "tollmeter"
    billing_account_name: str = "tollmeter"
    billing_account_type: str = "Organization"
    include_internal: bool = False
    """Bill the operator's own usage too; by default it is no customer's charge."""


@dataclass(slots=True)
class _Sums:
    cost: Decimal = Decimal(0)
    uncached: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    requests: int = 0
    estimated: int = 0
    currencies: set[str] = field(default_factory=set)


_Key = tuple[datetime, str, str, str, str | None, str | None, str | None, str | None]
"""Charge period start, tenant, provider, model, project, feature, currency and the
price the calls were charged at (``None`` for unpriced calls)."""


def _period_start(event: UsageEvent, period: ChargePeriod) -> datetime:
    seconds = event.event_time_ns // 1_000_000_000
    size = 3600 if period == "hour" else 86_400
    return datetime.fromtimestamp(seconds - seconds % size, tz=timezone.utc)


def _month(moment: datetime) -> tuple[datetime, datetime]:
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following


def focus_rows(events: Iterable[UsageEvent], options: FocusOptions) -> list[dict[str, Any]]:
    """The FOCUS rows of ``events``, ordered by charge period, tenant, provider, model."""
    groups: dict[_Key, _Sums] = {}
    for event in events:
        if event.internal and not options.include_internal:
            continue
        priced = event.cost is not None
        price = (event.price_source or "priced") if priced else None
        key: _Key = (
            _period_start(event, options.period),
            event.tenant_id,
            event.provider,
            event.model,
            event.project_id,
            event.feature,
            (event.currency or _DEFAULT_CURRENCY) if priced else None,
            price,
        )
        sums = groups.get(key)
        if sums is None:
            sums = groups[key] = _Sums()
        if event.cost is not None:
            sums.cost += event.cost
        sums.uncached += event.uncached_input_tokens
        sums.cache_read += event.cache_read_input_tokens
        sums.cache_write += event.cache_write_input_tokens
        sums.output += event.output_tokens
        sums.reasoning += event.reasoning_output_tokens
        sums.requests += 1
        sums.estimated += event.usage_source != "provider"
    step = timedelta(hours=1) if options.period == "hour" else timedelta(days=1)
    order = sorted(groups, key=lambda k: tuple("" if p is None else str(p) for p in k))
    return [_row(key, groups[key], step, options) for key in order]


def _row(key: _Key, sums: _Sums, step: timedelta, options: FocusOptions) -> dict[str, Any]:
    start, tenant, provider, model, project, feature, currency, price = key
    billing_start, billing_end = _month(start)
    name = _NAMES.get(provider, provider or "unknown")
    tokens = sums.uncached + sums.cache_read + sums.cache_write + sums.output
    cost = sums.cost
    tags = {k: v for k, v in (("project", project), ("feature", feature)) if v is not None}
    calls = "call" if sums.requests == 1 else "calls"
    return {
        "BilledCost": cost,
        "EffectiveCost": cost,
        # The ledger holds one price per call, list or negotiated (an override): the
        # same figure stands for both, as for a provider without contracted rates.
        "ListCost": cost,
        "ContractedCost": cost,
        "BillingCurrency": currency or _DEFAULT_CURRENCY,
        "BillingAccountId": options.billing_account_id,
        "BillingAccountName": options.billing_account_name,
        "BillingAccountType": options.billing_account_type,
        "BillingPeriodStart": billing_start,
        "BillingPeriodEnd": billing_end,
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start + step,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": f"{sums.requests} {model or 'unknown model'} {calls} ({name})",
        "ChargeFrequency": "Usage-Based",
        "ConsumedQuantity": Decimal(tokens),
        "ConsumedUnit": "Tokens",
        "PricingQuantity": Decimal(tokens),
        "PricingUnit": "Tokens",
        "PricingCategory": "Standard",
        # A row blends token types priced at different rates: no single unit price applies.
        "ListUnitPrice": None,
        "ContractedUnitPrice": None,
        "ServiceName": f"{name} API",
        "ServiceCategory": "AI and Machine Learning",
        "ServiceSubcategory": "Generative AI",
        "ProviderName": name,
        "PublisherName": name,
        "InvoiceIssuerName": name,
        "InvoiceId": None,
        "SubAccountId": tenant,
        "SubAccountName": tenant,
        "SubAccountType": "Tenant",
        "ResourceId": model or None,
        "ResourceName": model or None,
        "ResourceType": "Model" if model else None,
        "SkuId": f"{provider}/{model}" if model else None,
        # The price the calls were charged at: the price data and model, or an override.
        "SkuPriceId": f"{provider}/{model}@{price or 'unpriced'}" if model else None,
        "SkuMeter": "Tokens",
        "SkuPriceDetails": None,
        "RegionId": None,
        "RegionName": None,
        "AvailabilityZone": None,
        "CommitmentDiscountCategory": None,
        "CommitmentDiscountId": None,
        "CommitmentDiscountName": None,
        "CommitmentDiscountQuantity": None,
        "CommitmentDiscountStatus": None,
        "CommitmentDiscountType": None,
        "CommitmentDiscountUnit": None,
        "CapacityReservationId": None,
        "CapacityReservationStatus": None,
        "Tags": json.dumps(tags, sort_keys=True),
        "x_UncachedInputTokens": sums.uncached,
        "x_CacheReadInputTokens": sums.cache_read,
        "x_CacheWriteInputTokens": sums.cache_write,
        "x_OutputTokens": sums.output,
        "x_ReasoningOutputTokens": sums.reasoning,
        "x_Requests": sums.requests,
        "x_EstimatedRequests": sums.estimated,
        "x_PriceStatus": "unpriced" if price is None else "priced",
    }


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """``[start, end)`` as UTC instants."""
    midnight = datetime.min.time()
    return (
        datetime.combine(start, midnight, tzinfo=timezone.utc),
        datetime.combine(end, midnight, tzinfo=timezone.utc),
    )
