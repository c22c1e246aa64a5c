"""What a span says about a call beyond its billed usage: hidden input tokens and stream timing.

- ``tollmeter.usage.hidden_input_tokens``: the input tokens the instrumentation counted in
  system/developer messages and tool definitions, read like any token count (an int or an
  OTLP/JSON decimal string, from 0 to below 2**40).
- ``gen_ai.response.time_to_first_chunk`` (seconds, at most ``MAX_FIRST_CHUNK_S``) and
  ``tollmeter.stream.decode_s_per_output_token`` (seconds, at most ``MAX_DECODE_S``): finite,
  non-negative numbers.

Absent attributes are ``None`` (not reported). A value present but not one of these (a
string, NaN, a negative or absurd number) raises ``InvalidUsage`` naming the attribute, so
that the span is refused alone, as for its token counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, NamedTuple

from tollmeter.semconv import InvalidUsage, token_count
from tollmeter.semconv import attributes as attrs

__all__ = ["KEYS", "MAX_DECODE_S", "MAX_FIRST_CHUNK_S", "CallMeasures", "call_measures"]

MAX_FIRST_CHUNK_S: Final = 86_400.0
"""A day: a first chunk later than that is not a measurement."""

MAX_DECODE_S: Final = 3_600.0
"""An hour per output token: more is not a measurement."""

KEYS: Final = frozenset(
    {
        attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS,
        attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
        attrs.TOLLMETER_STREAM_DECODE_S_PER_OUTPUT_TOKEN,
    }
)
"""The attributes read here, for the extractor's list of wanted attributes."""


class CallMeasures(NamedTuple):
    hidden_input_tokens: int | None = None
    time_to_first_token_s: float | None = None
    decode_s_per_output_token: float | None = None


_NONE: Final = CallMeasures()


def _seconds(attribute: str, value: object, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidUsage(attribute, f"{value!r:.40} is not a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0.0 <= seconds <= limit:
        raise InvalidUsage(attribute, f"{seconds!r} is not between 0 and {limit:g} seconds")
    return seconds


def call_measures(span_attrs: Mapping[str, object]) -> CallMeasures:
    """The hidden input tokens and stream timing of a span (see the module docstring)."""
    hidden = span_attrs.get(attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS)
    first = span_attrs.get(attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    decode = span_attrs.get(attrs.TOLLMETER_STREAM_DECODE_S_PER_OUTPUT_TOKEN)
    if hidden is None and first is None and decode is None:
        return _NONE
    return CallMeasures(
        hidden_input_tokens=(
            None
            if hidden is None
            else token_count(attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS, hidden)
        ),
        time_to_first_token_s=(
            None
            if first is None
            else _seconds(attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, first, MAX_FIRST_CHUNK_S)
        ),
        decode_s_per_output_token=(
            None
            if decode is None
            else _seconds(attrs.TOLLMETER_STREAM_DECODE_S_PER_OUTPUT_TOKEN, decode, MAX_DECODE_S)
        ),
    )
