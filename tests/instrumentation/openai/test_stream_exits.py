"""Every way out of an OpenAI stream finishes its span exactly once."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation import count_text_tokens
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

MODEL = "gpt-4o-mini"
MESSAGES: Any = [{"role": "user", "content": "Tell a long story about a lighthouse keeper."}]

pytestmark = pytest.mark.usefixtures("instrumented")

WaitSpans = Callable[[int], tuple[ReadableSpan, ...]]


def _text(chunk: Any) -> str:
    return "".join(choice.delta.content or "" for choice in chunk.choices)


def _stream(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)


def test_stream_is_a_transparent_proxy(client: openai.OpenAI, one_span: Any) -> None:
    stream = _stream(client)
    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    for _ in stream:
        assert trace.get_current_span() is trace.INVALID_SPAN
    one_span()


def test_partial_read_then_close(
    client: openai.OpenAI, one_span: Any, exchange_of: Any, points: Any
) -> None:
    stream = _stream(client)
    received = "".join(_text(next(stream)) for _ in range(4))
    stream.close()
    stream.close()
    _, attributes = one_span()
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens(received, MODEL)
    true_input = exchange_of(attributes).usage.input_tokens
    assert abs(attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] - true_input) <= 0.1 * true_input
    assert attrs.TOLLMETER_USAGE_ABANDONED not in attributes
    assert len(points(metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)) == 1


def test_context_manager_exit_after_break(client: openai.OpenAI, one_span: Any) -> None:
    with _stream(client) as stream:
        for _ in stream:
            break
    _, attributes = one_span()
    assert attrs.TOLLMETER_USAGE_ABANDONED not in attributes
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_user_exception_inside_the_loop_propagates_unchanged(
    client: openai.OpenAI, one_span: Any
) -> None:
    error = LookupError("raised by the application")

    def consume() -> None:
        with _stream(client) as stream:
            for _ in stream:
                raise error

    with pytest.raises(LookupError) as caught:
        consume()
    assert caught.value is error
    _, attributes = one_span()
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_break_and_garbage_collection_marks_abandoned(
    client: openai.OpenAI, wait_spans: WaitSpans, span_exporter: InMemorySpanExporter
) -> None:
    stream = _stream(client)
    received = ""
    for index, chunk in enumerate(stream):
        received += _text(chunk)
        if index == 3:
            break
    del stream
    gc.collect()
    (span,) = wait_spans(1)
    attributes = dict(span.attributes or {})
    assert attributes[attrs.TOLLMETER_USAGE_ABANDONED] is True
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens(received, MODEL) > 0
    assert len(span_exporter.get_finished_spans()) == 1


def test_helper_stream_exit_after_break_is_not_abandoned(
    client: openai.OpenAI, chat_helpers: Any, one_span: Any
) -> None:
    with chat_helpers(client).stream(model=MODEL, messages=MESSAGES) as stream:
        for event in stream:
            if event.type == "content.delta":
                break
    _, attributes = one_span()
    assert attrs.TOLLMETER_USAGE_ABANDONED not in attributes


def test_helper_stream_closed_directly(
    client: openai.OpenAI, chat_helpers: Any, one_span: Any
) -> None:
    manager = chat_helpers(client).stream(model=MODEL, messages=MESSAGES)
    stream = manager.__enter__()
    next(iter(stream))
    stream.close()
    _, attributes = one_span()
    assert attrs.TOLLMETER_USAGE_ABANDONED not in attributes
    manager.__exit__(None, None, None)


def test_responses_helper_exit_after_break(client: openai.OpenAI, one_span: Any) -> None:
    with client.responses.stream(model=MODEL, input="Tell a long story.") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    _, attributes = one_span()
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] >= 1


def test_raw_stream_never_parsed_is_finished_when_dropped(
    client: openai.OpenAI, wait_spans: WaitSpans
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    assert raw.status_code == 200
    raw.http_response.close()
    del raw
    gc.collect()
    (span,) = wait_spans(1)
    assert dict(span.attributes or {})[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_async_exits(
    async_client_factory: Callable[[], openai.AsyncOpenAI],
    chat_helpers: Any,
    span_exporter: InMemorySpanExporter,
    wait_spans: WaitSpans,
) -> None:
    error = LookupError("raised by the application")

    async def run() -> None:
        async with async_client_factory() as client:

            async def stream() -> Any:
                return await client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, stream=True
                )

            first = await stream()
            await first.__anext__()
            await first.close()

            async with await stream() as second:
                async for _ in second:
                    break

            async def consume() -> None:
                async with await stream() as third:
                    async for _ in third:
                        raise error

            with pytest.raises(LookupError) as caught:
                await consume()
            assert caught.value is error

            async with chat_helpers(client).stream(model=MODEL, messages=MESSAGES) as s:
                async for _ in s:
                    break

            fifth = await stream()
            async for _ in fifth:
                break
            del fifth
            gc.collect()

    asyncio.run(run())
    spans = wait_spans(5)
    assert len(spans) == 5
    abandoned = [dict(s.attributes or {}).get(attrs.TOLLMETER_USAGE_ABANDONED) for s in spans]
    assert abandoned == [None, None, None, None, True]
    assert len(span_exporter.get_finished_spans()) == 5


def test_streaming_response_read_without_parse_finishes_on_close(
    client: openai.OpenAI, one_span: Any, exchange_of: Any
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines
    _, attributes = one_span()
    assert attrs.TOLLMETER_USAGE_ABANDONED not in attributes
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    true_input = exchange_of(attributes).usage.input_tokens
    assert abs(attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] - true_input) <= 0.1 * true_input


def test_async_streaming_response_read_without_parse_finishes_on_close(
    async_client_factory: Callable[[], openai.AsyncOpenAI], one_span: Any
) -> None:
    async def run() -> None:
        async with (
            async_client_factory() as client,
            client.chat.completions.with_streaming_response.create(
                model=MODEL, messages=MESSAGES
            ) as response,
        ):
            assert (await response.json())["usage"]

    asyncio.run(run())
    _, attributes = one_span()
    assert attrs.TOLLMETER_USAGE_ABANDONED not in attributes
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
