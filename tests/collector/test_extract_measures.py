"""Hidden input tokens and stream timing read from spans, and hostile values refused."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.collector.test_extract import OTEL_CHAT, request, span
from tollmeter.collector._extract import Extractor

HIDDEN = "tollmeter.usage.hidden_input_tokens"
FIRST = "gen_ai.response.time_to_first_chunk"
DECODE = "tollmeter.stream.decode_s_per_output_token"


def _chat(number: int, **extra: Any) -> dict[str, Any]:
    return {**OTEL_CHAT, "gen_ai.response.id": f"chatcmpl-{number}", **extra}


def test_hidden_tokens_and_timing_are_read() -> None:
    result = Extractor().extract(
        request(
            span(_chat(1, **{HIDDEN: 37, FIRST: 0.25, DECODE: 0.0125}), number=1),
            span(_chat(2, **{HIDDEN: "12"}), number=2),
            span(_chat(3), number=3),
        )
    )
    assert result.errors == []
    timed, json_count, bare = result.events
    assert (timed.hidden_input_tokens, timed.time_to_first_token_s) == (37, 0.25)
    assert timed.decode_s_per_output_token == 0.0125
    # OTLP/JSON sends int64 as decimal strings.
    assert json_count.hidden_input_tokens == 12
    assert (bare.hidden_input_tokens, bare.time_to_first_token_s) == (None, None)
    assert bare.decode_s_per_output_token is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (HIDDEN, -1),
        (HIDDEN, 2**40),
        (HIDDEN, 1.5),
        (HIDDEN, "lots"),
        (HIDDEN, True),
        (FIRST, -0.5),
        (FIRST, math.nan),
        (FIRST, math.inf),
        (FIRST, 1e300),
        (FIRST, "0.2"),
        (DECODE, -1e-9),
        (DECODE, math.nan),
        (DECODE, 1e300),
        (DECODE, "fast"),
        (DECODE, [0.1]),
    ],
)
def test_a_hostile_value_refuses_that_span_only(key: str, value: Any) -> None:
    result = Extractor().extract(
        request(
            span(_chat(1, **{key: value}), number=1),
            span(_chat(2, **{HIDDEN: 5, FIRST: 0.1}), number=2),
        )
    )
    assert result.rejected_spans == 1
    (error,) = result.errors
    assert key in error
    (kept,) = result.events
    assert (kept.response_id, kept.hidden_input_tokens, kept.time_to_first_token_s) == (
        "chatcmpl-2",
        5,
        0.1,
    )
