from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from decimal import Decimal

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.errors import InvalidSetting
from tollmeter.collector.pricing import COST_SCALE, Pricer, PricingConfig
from tollmeter.semconv.errors import ConfigurationError


def _ns(day: dt.date, hour: int = 12) -> int:
    moment = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000


def _event(
    model: str | None, *, provider: str = "openai", tenant: str = "acme", **kw
) -> UsageEvent:
    fields: dict[str, object] = {
        "event_id": "e1",
        "event_time_ns": _ns(dt.date(2026, 11, 1)),
        "provider": provider,
        "operation": "chat",
        "tenant_id": tenant,
        "request_model": model,
        "input_tokens": 1000,
        "cache_read_input_tokens": 200,
        "output_tokens": 500,
        "total_tokens": 1500,
    }
    fields.update(kw)
    return UsageEvent(**fields)  # type: ignore[arg-type]


def test_package_price_counts_cache_reads_at_their_own_rate() -> None:
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens.
    priced = Pricer().price(_event("gpt-4o"))
    assert priced.cost == Decimal("0.007250000000")
    assert priced.cost.as_tuple().exponent == -COST_SCALE
    assert priced.currency == "USD"
    assert priced.price_source == (
        f"genai-prices {genai_prices.__version__} (openai/gpt-4o, prices as of 2026-11-01)"
    )


def test_cache_write_and_reasoning_buckets_are_priced() -> None:
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write, $15 output.
    event = _event(
        "claude-sonnet-4-5",
        provider="anthropic",
        input_tokens=1000,
        cache_read_input_tokens=200,
        cache_write_input_tokens=100,
        output_tokens=500,
        reasoning_output_tokens=300,
    )
    expected = (700 * Decimal(3) + 200 * Decimal("0.3") + 100 * Decimal("3.75") + 500 * 15) / 10**6
    assert Pricer().price(event).cost == expected.quantize(Decimal(1).scaleb(-COST_SCALE))


def test_response_model_wins_and_unknown_provider_falls_back_to_model_match() -> None:
    event = _event("gpt-4o", provider="my-gateway", response_model="gpt-4o-mini")
    priced = Pricer().price(event)
    # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output.
    assert priced.cost == Decimal("0.000435000000")
    assert "openai/gpt-4o-mini" in (priced.price_source or "")


def test_otel_provider_names_map_to_price_data_providers() -> None:
    event = _event("gemini-2.5-flash", provider="gcp.gemini", cache_read_input_tokens=0)
    priced = Pricer().price(event)
    assert priced.cost is not None
    assert "google/" in (priced.price_source or "")


def test_unknown_model_has_no_cost_and_a_reason() -> None:
    priced = Pricer().price(_event("no-such-model-xyz"))
    assert priced.cost is None
    assert priced.currency is None
    assert priced.price_source == "unpriced: unknown model no-such-model-xyz"


def test_missing_model_and_inconsistent_counts_are_unpriced() -> None:
    assert Pricer().price(_event(None)).price_source == "unpriced: no model"
    hostile = _event("gpt-4o", input_tokens=10, cache_read_input_tokens=50)
    priced = Pricer().price(hostile)
    assert (priced.cost, priced.price_source) == (None, "unpriced: inconsistent token counts")


def test_absurd_counts_do_not_overflow_the_cost_column() -> None:
    priced = Pricer().price(_event("gpt-4o", input_tokens=10**33, cache_read_input_tokens=0))
    assert (priced.cost, priced.price_source) == (None, "unpriced: cost out of range")


def _config() -> PricingConfig:
    return PricingConfig.from_mapping(
        {
            "overrides": [
                {
                    "model": "gpt-4o",
                    "effective_from": "2026-06-01",
                    "input_per_mtok": "2.00",
                    "output_per_mtok": "8",
                },
                {
                    "model": "GPT-4o",
                    "tenant": "acme",
                    "effective_from": dt.date(2026, 10, 1),
                    "input_per_mtok": "1.00",
                    "cache_read_per_mtok": "0.10",
                    "output_per_mtok": "4.00",
                    "reasoning_per_mtok": "6.00",
                    "currency": "eur",
                },
                {
                    "model": "house-model",
                    "input_per_mtok": 1,
                    "output_per_mtok": "0.000001",
                },
            ]
        }
    )


def test_tenant_override_applies_from_its_effective_date() -> None:
    pricer = Pricer(_config())
    event = _event("gpt-4o", reasoning_output_tokens=100)
    priced = pricer.price(event)
    expected = (800 * Decimal(1) + 200 * Decimal("0.10") + 400 * 4 + 100 * 6) / 10**6
    assert priced.cost == expected
    assert priced.currency == "EUR"
    assert priced.price_source == "override (model GPT-4o, tenant acme, effective 2026-10-01)"

    before = pricer.price(_event("gpt-4o", event_time_ns=_ns(dt.date(2026, 9, 30), 23)))
    # Generic contract: cache reads default to the input price, reasoning to output.
    assert before.cost == (1000 * Decimal(2) + 500 * 8) / Decimal(10**6)
    assert before.price_source == "override (model gpt-4o, effective 2026-06-01)"

    other_tenant = pricer.price(_event("gpt-4o", tenant="globex"))
    assert other_tenant.price_source == "override (model gpt-4o, effective 2026-06-01)"

    too_early = pricer.price(_event("gpt-4o", event_time_ns=_ns(dt.date(2026, 5, 31))))
    assert (too_early.price_source or "").startswith("genai-prices ")


def test_override_prices_a_model_the_package_does_not_know() -> None:
    priced = Pricer(_config()).price(_event("house-model", cache_read_input_tokens=0))
    assert priced.cost == Decimal("0.001000000500")


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        (
            {"model": "m", "input_per_mtok": 1.5, "output_per_mtok": "1"},
            "input_per_mtok",
            "decimal",
        ),
        (
            {"model": "m", "input_per_mtok": "-1", "output_per_mtok": "1"},
            "input_per_mtok",
            "non-neg",
        ),
        (
            {"model": "m", "input_per_mtok": "NaN", "output_per_mtok": "1"},
            "input_per_mtok",
            "finite",
        ),
        (
            {"model": "m", "input_per_mtok": "abc", "output_per_mtok": "1"},
            "input_per_mtok",
            "decimal",
        ),
        (
            {"model": "m", "input_per_mtok": True, "output_per_mtok": "1"},
            "input_per_mtok",
            "decimal",
        ),
        ({"model": "m", "output_per_mtok": "1"}, "input_per_mtok", "is required"),
        ({"input_per_mtok": "1", "output_per_mtok": "1"}, "model", "is required"),
        ({"model": "", "input_per_mtok": "1", "output_per_mtok": "1"}, "model", "non-empty"),
        ({"model": "m", "input_per_mtok": "1", "output_per_mtok": "1", "x": 1}, "x", "unknown key"),
        (
            {"model": "m", "input_per_mtok": "1", "output_per_mtok": "1", "effective_from": "soon"},
            "effective_from",
            "date",
        ),
        (
            {"model": "m", "input_per_mtok": "1", "output_per_mtok": "1", "currency": "€UR"},
            "currency",
            "three-letter",
        ),
    ],
)
def test_bad_overrides_name_the_key(override: object, key: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message) as caught:
        PricingConfig.from_mapping({"overrides": [override]})
    assert caught.value.key == f"pricing.overrides[0].{key}"


def test_pricing_section_shape_is_checked() -> None:
    assert PricingConfig.from_mapping(None).overrides == ()
    with pytest.raises(InvalidSetting, match="unknown key"):
        PricingConfig.from_mapping({"override": []})
    with pytest.raises(InvalidSetting, match="list"):
        PricingConfig.from_mapping({"overrides": "gpt-4o"})
    with pytest.raises(InvalidSetting, match="mapping") as caught:
        PricingConfig.from_mapping({"overrides": ["gpt-4o"]})
    assert caught.value.key == "pricing.overrides[0]"
    assert isinstance(caught.value, ConfigurationError)


def test_pricing_never_touches_the_network() -> None:
    script = textwrap.dedent(
        """
        import sys
        seen = []
        sys.addaudithook(lambda event, args: event.startswith("socket.") and seen.append(event))
        from tollmeter.collector._records import UsageEvent
        from tollmeter.collector.pricing import Pricer
        event = UsageEvent(event_id="e", event_time_ns=1_780_000_000 * 10**9, provider="openai",
                           operation="chat", tenant_id="t", request_model="gpt-4o", input_tokens=5)
        assert Pricer().price(event).cost is not None
        assert Pricer().price(event.__class__(**{**{f: getattr(event, f) for f in event.__slots__},
                                               "request_model": "unknown-x"})).cost is None
        print("sockets:", seen)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "sockets: []"


_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "o3"),
    ("anthropic", "claude-sonnet-4-5"),  # tiered above 200k prompt tokens
    ("gcp.gemini", "gemini-2.5-pro"),  # tiered
    ("deepseek", "deepseek-chat"),  # off-peak prices: priced event by event
]


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(_MODELS),
    uncached=st.integers(0, 400_000),
    cache_read=st.integers(0, 150_000),
    cache_write=st.integers(0, 50_000),
    plain_output=st.integers(0, 100_000),
    reasoning=st.integers(0, 50_000),
    seconds=st.integers(0, 86_400 * 400),
)
def test_cached_rates_equal_the_package_figure_exactly(
    model: tuple[str, str],
    uncached: int,
    cache_read: int,
    cache_write: int,
    plain_output: int,
    reasoning: int,
    seconds: int,
) -> None:
    provider, name = model
    when = dt.datetime(2025, 11, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seconds)
    event = UsageEvent(
        event_id="p",
        event_time_ns=int(when.timestamp()) * 10**9,
        provider=provider,
        operation="chat",
        tenant_id="t",
        request_model=name,
        input_tokens=uncached + cache_read + cache_write,
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
        output_tokens=plain_output + reasoning,
        reasoning_output_tokens=reasoning,
    )
    usage = genai_prices.Usage(
        input_tokens=event.input_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=event.output_tokens,
        output_reasoning_tokens=reasoning,
    )
    provider_id = {"gcp.gemini": "google"}.get(provider, provider)
    direct = genai_prices.calc_price(
        usage, name, provider_id=provider_id, genai_request_timestamp=when
    ).total_price
    assert _PRICER.price(event).cost == direct.quantize(Decimal(1).scaleb(-COST_SCALE))


_PRICER = Pricer()
