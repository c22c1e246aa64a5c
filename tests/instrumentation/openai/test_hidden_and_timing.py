"""Hidden input tokens and stream timing on spans of the real openai SDK (fake LLM server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
from opentelemetry.sdk.trace import ReadableSpan

from tollmeter.fakellm._tokens import count
from tollmeter.instrumentation._estimate import encoding_name_for_model
from tollmeter.semconv import attributes as attrs

MODEL = "gpt-4o-mini"
SYSTEM = "You are a terse assistant for an online bookshop. Answer in one sentence."
DEVELOPER = [{"type": "text", "text": "Never mention prices you were not given."}]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "find_book",
            "description": "Look a book up by title",
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}},
        },
    }
]
Spans = Callable[[], tuple[ReadableSpan, dict[str, Any]]]


def _tiktoken(*texts: str, tools: list[dict[str, Any]] = TOOLS) -> int:
    encoding = encoding_name_for_model(MODEL)
    compact = [json.dumps(tool, separators=(",", ":"), sort_keys=True) for tool in tools]
    return sum(count(text, encoding) for text in (*texts, *compact))


def test_chat_counts_system_and_developer_messages_and_tools(
    client: openai.OpenAI, instrumented: Any, one_span: Spans
) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "developer", "content": DEVELOPER},
            {"role": "user", "content": "Do you have Middlemarch?"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    _, attributes = one_span()
    hidden = attributes[attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS]
    assert hidden == _tiktoken(SYSTEM, DEVELOPER[0]["text"])
    assert 0 < hidden < attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS]
    # Not a stream: no timing.
    assert attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in attributes


def test_a_call_without_instructions_or_tools_has_no_hidden_count(
    client: openai.OpenAI, instrumented: Any, one_span: Spans
) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    _, attributes = one_span()
    assert attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS not in attributes


def test_responses_count_instructions_system_items_and_tools(
    client: openai.OpenAI, instrumented: Any, one_span: Spans
) -> None:
    tool = {
        "type": "function",
        "name": "find_book",
        "parameters": {"type": "object", "properties": {"title": {"type": "string"}}},
    }
    client.responses.create(
        model=MODEL,
        instructions=SYSTEM,
        input=[
            {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"role": "user", "content": "Do you have Middlemarch?"},
        ],
        tools=[tool],  # type: ignore[list-item]
    )
    _, attributes = one_span()
    expected = _tiktoken(SYSTEM, "Be brief.", tools=[tool])
    assert attributes[attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS] == expected


def test_a_stream_read_to_its_end_has_first_chunk_and_decode_times(
    client: openai.OpenAI, instrumented: Any, one_span: Spans
) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    span, attributes = one_span()
    assert len(chunks) > 2
    first = attributes[attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    decode = attributes[attrs.TOLLMETER_STREAM_DECODE_S_PER_OUTPUT_TOKEN]
    output = attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]
    assert output > 1
    assert span.start_time is not None
    assert span.end_time is not None
    duration = (span.end_time - span.start_time) / 1e9
    # The first chunk comes inside the call, and decoding fills what is left of it.
    assert 0 < first < duration
    assert 0 < decode * (output - 1) <= duration - first + 1e-3
    assert attributes[attrs.TOLLMETER_USAGE_HIDDEN_INPUT_TOKENS] == _tiktoken(SYSTEM, tools=[])


def test_a_stream_closed_early_has_a_first_chunk_time_but_no_decode_time(
    client: openai.OpenAI, instrumented: Any, one_span: Spans
) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    next(iter(stream))
    stream.close()
    _, attributes = one_span()
    assert attributes[attrs.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert attrs.TOLLMETER_STREAM_DECODE_S_PER_OUTPUT_TOKEN not in attributes
