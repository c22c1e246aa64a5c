"""Extraction with a pricer builds each event once, priced, and skips app spans early."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.collector.test_extract import OTEL_CHAT, START_NS, request, span
from tollmeter.collector._extract import MAX_ATTRIBUTES, Extractor
from tollmeter.collector.pricing import Pricer, PricingConfig, Quote

_OVERRIDES = PricingConfig.from_mapping(
    {
        "overrides": [
            {
                "model": "gpt-4o",
                "tenant": "acme",
                "effective_from": "2026-03-10",
                "input_per_mtok": "1.50",
                "output_per_mtok": "6",
                "currency": "eur",
            },
            {"model": "house-model", "input_per_mtok": 1, "output_per_mtok": "2.5"},
        ]
    }
)
_PRICERS = {"package": Pricer(), "overrides": Pricer(_OVERRIDES)}
_DAY_NS = 86_400 * 10**9

_calls = st.fixed_dictionaries(
    {
        "gen_ai.operation.name": st.sampled_from(["chat", "embeddings", "text_completion"]),
        "gen_ai.provider.name": st.sampled_from(["openai", "anthropic", "azure.ai.openai"]),
        "gen_ai.request.model": st.sampled_from(
            ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "house-model", "no-such-model", ""]
        ),
        "gen_ai.usage.input_tokens": st.integers(0, 2_000_000),
        "gen_ai.usage.output_tokens": st.integers(0, 100_000),
        "gen_ai.usage.cache_read.input_tokens": st.integers(0, 3000),
        "gen_ai.usage.reasoning.output_tokens": st.integers(0, 500),
        "tollmeter.tenant.id": st.sampled_from(["acme", "globex"]),
    },
    optional={
        "gen_ai.response.model": st.sampled_from(["gpt-4o-2024-08-06", "claude-sonnet-4-5"]),
        "gen_ai.response.id": st.text("abcdef0123456789", min_size=1, max_size=12),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=st.lists(st.tuples(_calls, st.integers(-40, 40)), min_size=1, max_size=8),
    pricer_name=st.sampled_from(sorted(_PRICERS)),
)
def test_priced_extraction_equals_pricing_after_extraction(
    calls: list[tuple[dict[str, Any], int]], pricer_name: str
) -> None:
    pricer = _PRICERS[pricer_name]
    spans = [
        span(attributes, number=n + 1, start_time_unix_nano=START_NS + days * _DAY_NS)
        for n, (attributes, days) in enumerate(calls)
    ]
    message = request(*spans)

    plain = Extractor().extract(message)
    priced = Extractor(pricer=pricer).extract(message)

    assert priced.events == [pricer.price(event) for event in plain.events]
    assert (priced.accepted_spans, priced.rejected_spans) == (
        plain.accepted_spans,
        plain.rejected_spans,
    )


def test_a_tenant_override_prices_the_event_as_it_is_extracted() -> None:
    attributes = {**OTEL_CHAT, "gen_ai.response.model": "gpt-4o"}
    when = int(dt.datetime(2026, 3, 14, tzinfo=dt.timezone.utc).timestamp()) * 10**9
    message = request(span(attributes, start_time_unix_nano=when))

    (event,) = Extractor(pricer=Pricer(_OVERRIDES)).extract(message).events

    # 70 uncached and 30 cached input at 1.50, 40 output at 6 per million tokens.
    assert event.cost == Decimal("0.000390000000")
    assert event.currency == "EUR"
    assert "tenant acme" in str(event.price_source)


class _BrokenPricer:
    def quote_call(self, **parts: Any) -> Quote:
        raise RuntimeError("price table corrupt")


def test_a_failing_pricer_leaves_the_events_unpriced(caplog: pytest.LogCaptureFixture) -> None:
    message = request(span(OTEL_CHAT, number=1), span({**OTEL_CHAT, "gen_ai.response.id": "2"}))

    with caplog.at_level(logging.ERROR):
        result = Extractor(pricer=_BrokenPricer()).extract(message)

    assert len(result.events) == 2
    assert [(e.cost, e.currency, e.price_source) for e in result.events] == [(None, None, None)] * 2
    assert result.events == Extractor().extract(message).events
    (record,) = caplog.records
    assert "pricing 2 usage events failed" in record.getMessage()


_APP_SPAN = {
    "http.request.method": "GET",
    "http.route": "/api/orders/{id}",
    "http.response.status_code": 200,
    "server.address": "shop.example.com",
    "db.system.name": "postgresql",
    # Counts named like usage, but no operation: not a model call.
    "gen_ai.usage.input_tokens": 12,
    "tollmeter.tenant.id": "acme",
}


def test_app_spans_in_a_mixed_request_are_accepted_and_not_metered() -> None:
    spans = [span(_APP_SPAN, number=n) for n in range(1, 10)]
    spans.append(span(OTEL_CHAT, number=10))

    result = Extractor().extract(request(*spans))

    assert (result.accepted_spans, result.rejected_spans) == (10, 0)
    assert [event.span_id for event in result.events] == [f"{10:016x}"]


def test_a_crowded_app_span_is_still_refused() -> None:
    crowded = {f"app.attribute.{i}": i for i in range(MAX_ATTRIBUTES + 1)}

    result = Extractor().extract(request(span(crowded)))

    assert (result.accepted_spans, result.rejected_spans) == (0, 1)
