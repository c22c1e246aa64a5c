"""Usage invariants, single-count validation and property-based checks of normalization."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollmeter.semconv import (
    MAX_TOKEN_COUNT,
    InvalidUsage,
    TollmeterError,
    Usage,
    token_count,
    usage_from_attributes,
)
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.errors import InvalidUsage as InvalidUsageFromErrors


def test_derived_buckets() -> None:
    usage = Usage(
        input_tokens=162,
        output_tokens=40,
        cache_read_input_tokens=100,
        cache_write_input_tokens=50,
        reasoning_output_tokens=30,
    )
    assert usage.uncached_input_tokens == 12
    assert usage.non_reasoning_output_tokens == 10
    assert usage.total_tokens == 202
    assert not usage.total_only


def test_usage_is_frozen_and_slotted() -> None:
    usage = Usage(input_tokens=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        usage.input_tokens = 2  # type: ignore[misc]
    assert not hasattr(usage, "__dict__")


@pytest.mark.parametrize(
    ("fields", "attribute"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": True}, "output_tokens"),
        ({"reasoning_output_tokens": 1.0}, "reasoning_output_tokens"),
        ({"unsplit_tokens": "3"}, "unsplit_tokens"),
        ({"input_tokens": MAX_TOKEN_COUNT}, "input_tokens"),
        ({"input_tokens": 10, "cache_read_input_tokens": 6, "cache_write_input_tokens": 5}, None),
        ({"output_tokens": 1, "reasoning_output_tokens": 2}, "reasoning_output_tokens"),
    ],
)
def test_invalid_usage_is_rejected(fields: dict[str, object], attribute: str | None) -> None:
    with pytest.raises(InvalidUsage) as caught:
        Usage(**fields)  # type: ignore[arg-type]
    assert caught.value.attribute == (attribute or "cache_read_input_tokens")
    assert isinstance(caught.value, TollmeterError)
    assert isinstance(caught.value, ValueError)
    assert InvalidUsage is InvalidUsageFromErrors


def test_token_count_accepts_ints_and_decimal_strings() -> None:
    assert token_count("a", 0) == 0
    assert token_count("a", MAX_TOKEN_COUNT - 1) == MAX_TOKEN_COUNT - 1
    assert token_count("a", str(MAX_TOKEN_COUNT - 1)) == MAX_TOKEN_COUNT - 1
    assert token_count("a", "007") == 7


def test_to_attributes_uses_current_names() -> None:
    usage = Usage(input_tokens=10, output_tokens=5, cache_read_input_tokens=4)
    assert usage.to_attributes() == {
        attrs.GEN_AI_USAGE_INPUT_TOKENS: 10,
        attrs.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
        attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 4,
    }
    assert Usage(unsplit_tokens=9).to_attributes() == {attrs.TOLLMETER_USAGE_TOTAL_TOKENS: 9}


_PART = st.integers(min_value=0, max_value=2**37)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cache_read, cache_write, uncached = draw(_PART), draw(_PART), draw(_PART)
    reasoning, visible = draw(_PART), draw(_PART)
    return Usage(
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=visible + reasoning,
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
        reasoning_output_tokens=reasoning,
        unsplit_tokens=draw(_PART),
    )


def _assert_consistent(usage: Usage) -> None:
    buckets = (
        usage.uncached_input_tokens,
        usage.cache_read_input_tokens,
        usage.cache_write_input_tokens,
        usage.non_reasoning_output_tokens,
        usage.reasoning_output_tokens,
        usage.unsplit_tokens,
    )
    assert all(bucket >= 0 for bucket in buckets)
    assert sum(buckets) == usage.total_tokens
    assert (
        usage.uncached_input_tokens
        + usage.cache_read_input_tokens
        + (usage.cache_write_input_tokens)
        == usage.input_tokens
    )
    assert usage.non_reasoning_output_tokens + usage.reasoning_output_tokens == usage.output_tokens


@given(usages())
def test_round_trip_through_attributes(usage: Usage) -> None:
    _assert_consistent(usage)
    attributes = usage.to_attributes()
    assert usage_from_attributes(attributes) == usage
    as_json = {name: str(value) for name, value in attributes.items()}
    assert usage_from_attributes(as_json) == usage


CURRENT_NAMES = frozenset(
    {
        attrs.GEN_AI_USAGE_INPUT_TOKENS,
        attrs.GEN_AI_USAGE_OUTPUT_TOKENS,
        attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
        attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        attrs.TOLLMETER_USAGE_TOTAL_TOKENS,
        "anthropic.usage.compaction.input_tokens",
        "anthropic.usage.compaction.output_tokens",
    }
)
USAGE_NAMES = sorted(
    CURRENT_NAMES | {alias for name in CURRENT_NAMES for alias in attrs.ALIASES.get(name, ())}
)


@given(
    st.dictionaries(
        st.sampled_from(USAGE_NAMES),
        # Small counts, plus counts near the limit whose sums overflow it.
        st.one_of(st.integers(0, 2**30), st.integers(2**39, MAX_TOKEN_COUNT - 1)),
        min_size=1,
    ),
    st.sampled_from([None, True, False]),
)
def test_any_mix_of_dialects_gives_consistent_usage_or_a_clear_error(
    attributes: dict[str, int], input_includes_cache: bool | None
) -> None:
    try:
        usage = usage_from_attributes(attributes, input_includes_cache=input_includes_cache)
    except InvalidUsage as exc:
        error: InvalidUsage | None = exc
    else:
        error = None
    if error is not None:
        assert error.attribute in attributes
        return
    assert usage is not None
    _assert_consistent(usage)
    # Aliases may lose to newer names, but no count under a current name is ever dropped.
    current = [value for name, value in attributes.items() if name in CURRENT_NAMES]
    assert usage.total_tokens >= max(current, default=0)


@given(st.one_of(st.text(max_size=60), st.integers(), st.floats(), st.booleans(), st.binary()))
def test_token_count_accepts_or_raises_invalid_usage_only(value: object) -> None:
    try:
        count = token_count("x.tokens", value)
    except InvalidUsage as exc:
        error: InvalidUsage | None = exc
    else:
        error = None
    if error is not None:
        assert error.attribute == "x.tokens"
        return
    assert 0 <= count < MAX_TOKEN_COUNT
