"""Costs for usage events: genai-prices data plus negotiated overrides, in Decimal."""

from __future__ import annotations

from tollmeter.collector.pricing._config import PriceOverride, PricingConfig
from tollmeter.collector.pricing._prices import COST_PRECISION, COST_SCALE, Pricer, Quote

__all__ = ["COST_PRECISION", "COST_SCALE", "PriceOverride", "Pricer", "PricingConfig", "Quote"]
