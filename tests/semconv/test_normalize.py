"""usage_from_attributes over every dialect, including mixed, conflicting and hostile input."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tollmeter.semconv import InvalidUsage, Usage, usage_from_attributes

# Attribute sets captured from the real libraries, each calling a local HTTP server that answered
# with Anthropic usage {input 12, output 7, cache_read 100, cache_creation 50}, OpenAI chat usage
# {prompt 150 (cached 100), completion 40 (reasoning 30), total 190} and OpenAI embeddings usage
# {prompt 8, total 8}. Only the usage attributes are kept.
ANTHROPIC_USAGE = Usage(
    input_tokens=162, output_tokens=7, cache_read_input_tokens=100, cache_write_input_tokens=50
)
OPENAI_USAGE = Usage(
    input_tokens=150, output_tokens=40, cache_read_input_tokens=100, reasoning_output_tokens=30
)
EMBEDDINGS_USAGE = Usage(input_tokens=8)

REAL_LIBRARIES: list[tuple[str, dict[str, object], Usage]] = [
    (
        "anthropic 2.12 native spans (anthropic.messages.create)",
        {
            "gen_ai.usage.input_tokens": 162,
            "gen_ai.usage.cache_write.input_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.output_tokens": 7,
        },
        ANTHROPIC_USAGE,
    ),
    (
        "OpenLLMetry opentelemetry-instrumentation-anthropic 0.62.4",
        {
            "gen_ai.usage.input_tokens": 162,
            "gen_ai.usage.output_tokens": 7,
            "gen_ai.usage.total_tokens": 169,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.cache_creation.input_tokens": 50,
        },
        ANTHROPIC_USAGE,
    ),
    (
        "OpenLLMetry opentelemetry-instrumentation-openai 0.62.4, chat",
        {
            "gen_ai.usage.total_tokens": 190,
            "gen_ai.usage.output_tokens": 40,
            "gen_ai.usage.input_tokens": 150,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.reasoning_tokens": 30,
        },
        OPENAI_USAGE,
    ),
    (
        "OpenLLMetry opentelemetry-instrumentation-openai 0.62.4, embeddings",
        {
            "gen_ai.usage.total_tokens": 8,
            "gen_ai.usage.input_tokens": 8,
            "gen_ai.usage.cache_read.input_tokens": 0,
        },
        EMBEDDINGS_USAGE,
    ),
    (
        "openinference-instrumentation-anthropic 3.1.0",
        {
            "llm.token_count.prompt": 162,
            "llm.token_count.completion": 7,
            "llm.token_count.prompt_details.cache_read": 100,
            "llm.token_count.prompt_details.cache_write": 50,
            "llm.token_count.total": 169,
        },
        ANTHROPIC_USAGE,
    ),
    (
        "openinference-instrumentation-openai 0.1.66, chat",
        {
            "llm.token_count.total": 190,
            "llm.token_count.prompt": 150,
            "llm.token_count.completion": 40,
            "llm.token_count.prompt_details.cache_read": 100,
            "llm.token_count.completion_details.reasoning": 30,
        },
        OPENAI_USAGE,
    ),
    (
        "openinference-instrumentation-openai 0.1.66, embeddings",
        {"llm.token_count.total": 8, "llm.token_count.prompt": 8},
        EMBEDDINGS_USAGE,
    ),
    (
        # Read from the source: input_tokens copied as is (cache left out, and not reported).
        "OpenLLMetry opentelemetry-instrumentation-anthropic 0.33.0 (old names)",
        {
            "gen_ai.usage.prompt_tokens": 12,
            "gen_ai.usage.completion_tokens": 7,
            "llm.usage.total_tokens": 19,
        },
        Usage(input_tokens=12, output_tokens=7),
    ),
    (
        # Read from the source: llm.token_count.prompt = usage.input_tokens, no cache counts.
        "openinference-instrumentation-anthropic 0.1.12",
        {"llm.token_count.prompt": 12, "llm.token_count.completion": 7},
        Usage(input_tokens=12, output_tokens=7),
    ),
]

# Combinations the rules must handle, written from the conventions rather than captured.
RULES: list[tuple[str, dict[str, object], Usage]] = [
    (
        "deprecated OpenTelemetry names (semantic conventions 1.26)",
        {"gen_ai.usage.prompt_tokens": 150, "gen_ai.usage.completion_tokens": 40},
        Usage(input_tokens=150, output_tokens=40),
    ),
    (
        "OpenLLMetry llm.usage.* names",
        {
            "llm.usage.prompt_tokens": 20,
            "llm.usage.completion_tokens": 4,
            "llm.usage.total_tokens": 24,
        },
        Usage(input_tokens=20, output_tokens=4),
    ),
    (
        "provider-style input that leaves cache out: cache larger than input proves it",
        {
            "gen_ai.usage.prompt_tokens": 12,
            "gen_ai.usage.completion_tokens": 7,
            "gen_ai.usage.cache_read_input_tokens": 100,
            "gen_ai.usage.cache_creation_input_tokens": 50,
        },
        ANTHROPIC_USAGE,
    ),
    (
        "provider-style input that leaves cache out: only the total with cache adds up",
        {
            "gen_ai.usage.prompt_tokens": 200,
            "gen_ai.usage.completion_tokens": 7,
            "gen_ai.usage.cache_read_input_tokens": 100,
            "gen_ai.usage.total_tokens": 307,
        },
        Usage(input_tokens=300, output_tokens=7, cache_read_input_tokens=100),
    ),
    (
        "current input name keeps its meaning; the unexplained part of the total stays unsplit",
        {
            "gen_ai.usage.input_tokens": 200,
            "gen_ai.usage.output_tokens": 7,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.total_tokens": 307,
        },
        Usage(input_tokens=200, output_tokens=7, cache_read_input_tokens=100, unsplit_tokens=100),
    ),
    (
        "output that leaves reasoning out: reasoning larger than output proves it",
        {
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 5,
            "gen_ai.usage.reasoning_tokens": 20,
        },
        Usage(input_tokens=10, output_tokens=25, reasoning_output_tokens=20),
    ),
    (
        "output that leaves reasoning out: only the total with reasoning adds up",
        {
            "llm.token_count.prompt": 10,
            "llm.token_count.completion": 30,
            "llm.token_count.completion_details.reasoning": 20,
            "llm.token_count.total": 60,
        },
        Usage(input_tokens=10, output_tokens=50, reasoning_output_tokens=20),
    ),
    (
        "both left out, the total needs both",
        {
            "llm.usage.prompt_tokens": 10,
            "llm.usage.completion_tokens": 30,
            "llm.usage.cache_read_input_tokens": 5,
            "llm.usage.reasoning_tokens": 20,
            "llm.usage.total_tokens": 65,
        },
        Usage(
            input_tokens=15, output_tokens=50, cache_read_input_tokens=5, reasoning_output_tokens=20
        ),
    ),
    (
        "a total only",
        {"llm.usage.total_tokens": 42},
        Usage(unsplit_tokens=42),
    ),
    (
        "input and total: the output is the difference",
        {"gen_ai.usage.input_tokens": 8, "llm.token_count.total": 12},
        Usage(input_tokens=8, output_tokens=4),
    ),
    (
        "output and total: the input is the difference",
        {"gen_ai.usage.output_tokens": 5, "gen_ai.usage.total_tokens": 12},
        Usage(input_tokens=7, output_tokens=5),
    ),
    (
        "total larger than its parts: the rest is kept unsplit, never added twice",
        {
            "gen_ai.usage.input_tokens": 8,
            "gen_ai.usage.output_tokens": 2,
            "llm.usage.total_tokens": 15,
        },
        Usage(input_tokens=8, output_tokens=2, unsplit_tokens=5),
    ),
    ("output only", {"gen_ai.usage.output_tokens": 5}, Usage(output_tokens=5)),
    (
        "cache count only",
        {"gen_ai.usage.cache_read.input_tokens": 10},
        Usage(input_tokens=10, cache_read_input_tokens=10),
    ),
    (
        "total with cache and reasoning but no input or output",
        {
            "gen_ai.usage.cache_read.input_tokens": 10,
            "gen_ai.usage.reasoning.output_tokens": 3,
            "llm.usage.total_tokens": 20,
        },
        Usage(
            input_tokens=10,
            output_tokens=3,
            cache_read_input_tokens=10,
            reasoning_output_tokens=3,
            unsplit_tokens=7,
        ),
    ),
    (
        "new names win over old ones holding other values",
        {
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.prompt_tokens": 999,
            "llm.token_count.prompt": 555,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.completion_tokens": 999,
            "gen_ai.usage.cache_read.input_tokens": 10,
            "gen_ai.usage.cache_read_input_tokens": 99,
            "gen_ai.usage.cache_write.input_tokens": 1,
            "gen_ai.usage.cache_creation.input_tokens": 98,
        },
        Usage(
            input_tokens=100,
            output_tokens=10,
            cache_read_input_tokens=10,
            cache_write_input_tokens=1,
        ),
    ),
    (
        "deprecated OpenTelemetry name wins over OpenLLMetry and OpenInference",
        {
            "gen_ai.usage.prompt_tokens": 30,
            "llm.usage.prompt_tokens": 31,
            "llm.token_count.prompt": 32,
            "gen_ai.usage.cache_creation.input_tokens": 3,
            "gen_ai.usage.cache_creation_input_tokens": 4,
        },
        Usage(input_tokens=30, cache_write_input_tokens=3),
    ),
    (
        "two dialects on one span (native Anthropic span enriched by OpenInference)",
        {
            "gen_ai.usage.input_tokens": 162,
            "gen_ai.usage.output_tokens": 7,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.cache_write.input_tokens": 50,
            "llm.token_count.prompt": 12,
            "llm.token_count.total": 169,
        },
        ANTHROPIC_USAGE,
    ),
    (
        "OTLP/JSON int64 values as decimal strings",
        {
            "gen_ai.usage.input_tokens": "162",
            "gen_ai.usage.output_tokens": "7",
            "gen_ai.usage.cache_read.input_tokens": "100",
            "gen_ai.usage.cache_write.input_tokens": "0050",
        },
        ANTHROPIC_USAGE,
    ),
    (
        "Anthropic compactions, reported apart by the SDK, are counted",
        {
            "gen_ai.usage.input_tokens": 162,
            "gen_ai.usage.output_tokens": 7,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.cache_write.input_tokens": 50,
            "anthropic.usage.compaction.input_tokens": 1000,
            "anthropic.usage.compaction.output_tokens": 200,
        },
        Usage(
            input_tokens=1162,
            output_tokens=207,
            cache_read_input_tokens=100,
            cache_write_input_tokens=50,
        ),
    ),
    (
        "zeros everywhere",
        {"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0},
        Usage(),
    ),
    (
        "a garbage value under an old name is ignored when the new name is present",
        {"gen_ai.usage.input_tokens": 5, "gen_ai.usage.prompt_tokens": "garbage"},
        Usage(input_tokens=5),
    ),
]


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [pytest.param(a, u, id=name) for name, a, u in REAL_LIBRARIES + RULES],
)
def test_dialects(attributes: Mapping[str, object], expected: Usage) -> None:
    usage = usage_from_attributes(attributes)
    assert usage == expected
    assert usage is not None
    assert (
        usage.uncached_input_tokens
        + usage.cache_read_input_tokens
        + usage.cache_write_input_tokens
        + usage.non_reasoning_output_tokens
        + usage.reasoning_output_tokens
        + usage.unsplit_tokens
        == usage.total_tokens
    )


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai"},
        {"gen_ai.usage.input_tokens": None},
        {"gen_ai.usage.token_type": "input", "llm.token_count.prompt_details.audio": 4},
    ],
)
def test_no_usage_attribute_gives_none(attributes: Mapping[str, object]) -> None:
    assert usage_from_attributes(attributes) is None


def test_total_only_usage() -> None:
    usage = usage_from_attributes({"llm.usage.total_tokens": "42"})
    assert usage is not None
    assert usage.total_only
    assert usage.total_tokens == 42
    assert usage.input_tokens == usage.output_tokens == 0


def test_explicit_input_without_cache() -> None:
    attributes = {
        "gen_ai.usage.input_tokens": 200,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 100,
    }
    usage = usage_from_attributes(attributes, input_includes_cache=False)
    assert usage == Usage(input_tokens=300, output_tokens=7, cache_read_input_tokens=100)
    assert usage_from_attributes(attributes, input_includes_cache=True) == Usage(
        input_tokens=200, output_tokens=7, cache_read_input_tokens=100
    )


def test_explicit_input_with_cache_rejects_a_larger_cache() -> None:
    attributes = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.cache_read.input_tokens": 50}
    with pytest.raises(InvalidUsage) as caught:
        usage_from_attributes(attributes, input_includes_cache=True)
    assert caught.value.attribute == "gen_ai.usage.cache_read.input_tokens"


INVALID_VALUES: list[tuple[str, object, str]] = [
    ("negative int", -1, "negative"),
    ("negative string", "-5", "negative"),
    ("float", 1.5, "float"),
    ("integral float", 2.0, "float"),
    ("nan", float("nan"), "float"),
    ("bool true", True, "boolean"),
    ("bool false", False, "boolean"),
    ("garbage string", "abc", "not a decimal integer"),
    ("empty string", "", "not a decimal integer"),
    ("padded string", " 12", "not a decimal integer"),
    ("exponent string", "1e3", "not a decimal integer"),
    ("hex string", "0x10", "not a decimal integer"),
    ("plus sign", "+12", "not a decimal integer"),
    ("non-ascii digits", "\u0661\u0662", "not a decimal integer"),
    ("2**40", 2**40, "2\\*\\*40"),
    ("2**40 as string", str(2**40), "2\\*\\*40"),
    ("absurd int", 10**30, "2\\*\\*40"),
    ("5000-digit string", "9" * 5000, "2\\*\\*40"),
    ("list", [1, 2], "list"),
    ("bytes", b"12", "bytes"),
    ("dict", {"value": 1}, "dict"),
]


@pytest.mark.parametrize(
    "name",
    [
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.prompt_details.cache_write",
        "gen_ai.usage.reasoning_tokens",
        "llm.usage.total_tokens",
        "anthropic.usage.compaction.output_tokens",
    ],
)
@pytest.mark.parametrize(
    ("value", "reason"), [pytest.param(v, r, id=i) for i, v, r in INVALID_VALUES]
)
def test_invalid_values_raise_naming_the_attribute(name: str, value: object, reason: str) -> None:
    with pytest.raises(InvalidUsage, match=reason) as caught:
        usage_from_attributes({name: value})
    assert caught.value.attribute == name
    assert str(caught.value).startswith(f"{name}: ")
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("attributes", "attribute"),
    [
        (
            {
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 5,
                "llm.usage.total_tokens": 14,
            },
            "llm.usage.total_tokens",
        ),
        (
            {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.total_tokens": 9},
            "gen_ai.usage.total_tokens",
        ),
        ({"gen_ai.usage.output_tokens": 10, "llm.token_count.total": 9}, "llm.token_count.total"),
        (
            {"gen_ai.usage.cache_read.input_tokens": 10, "llm.usage.total_tokens": 5},
            "llm.usage.total_tokens",
        ),
    ],
)
def test_contradicting_counts_raise(attributes: Mapping[str, object], attribute: str) -> None:
    with pytest.raises(InvalidUsage, match="smaller than") as caught:
        usage_from_attributes(attributes)
    assert caught.value.attribute == attribute


@pytest.mark.parametrize(
    ("attributes", "attribute"),
    [
        (
            {
                "gen_ai.usage.prompt_tokens": 5,
                "gen_ai.usage.cache_read_input_tokens": 2**40 - 1,
            },
            "gen_ai.usage.prompt_tokens",
        ),
        (
            {
                "gen_ai.usage.output_tokens": 2**40 - 1,
                "anthropic.usage.compaction.output_tokens": 5,
            },
            "gen_ai.usage.output_tokens",
        ),
        (
            {"anthropic.usage.compaction.input_tokens": 2**40 - 1, "gen_ai.usage.input_tokens": 1},
            "gen_ai.usage.input_tokens",
        ),
    ],
)
def test_sums_past_the_limit_raise_naming_a_present_attribute(
    attributes: Mapping[str, object], attribute: str
) -> None:
    with pytest.raises(InvalidUsage, match="2\\*\\*40") as caught:
        usage_from_attributes(attributes)
    assert caught.value.attribute == attribute
