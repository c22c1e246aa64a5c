"""Every metered call type, sync and async, streamed and not: one span with true usage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tollmeter.semconv import attributes as attrs

CHAT_MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You answer in plain English."},
    {"role": "user", "content": "Write a few sentences about foxes in an autumn forest."},
]
TEXT = "Describe a quiet harbour town at dawn, in plain English."
USAGE = {"include_usage": True}

SyncCall = Callable[[openai.OpenAI], None]
AsyncCall = Callable[[openai.AsyncOpenAI], Awaitable[None]]


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


async def _adrain(stream: Any) -> None:
    async for _ in stream:
        pass


# name -> (sync call, async call, operation, model, usage source, streamed)
CASES: dict[str, tuple[SyncCall, AsyncCall, str, str, str, bool]] = {}


def case(
    name: str, operation: str, model: str, source: str, streamed: bool
) -> Callable[[SyncCall], Callable[[AsyncCall], AsyncCall]]:
    def sync_part(sync_call: SyncCall) -> Callable[[AsyncCall], AsyncCall]:
        def async_part(async_call: AsyncCall) -> AsyncCall:
            CASES[name] = (sync_call, async_call, operation, model, source, streamed)
            return async_call

        return async_part

    return sync_part


@case("chat", "chat", CHAT_MODEL, "provider", False)
def _chat(c: openai.OpenAI) -> None:
    c.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)  # type: ignore[arg-type]


@_chat
async def _achat(c: openai.AsyncOpenAI) -> None:
    await c.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)  # type: ignore[arg-type]


@case("chat-stream", "chat", CHAT_MODEL, "estimate", True)
def _chat_stream(c: openai.OpenAI) -> None:
    _drain(c.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, stream=True))  # type: ignore[arg-type]


@_chat_stream
async def _achat_stream(c: openai.AsyncOpenAI) -> None:
    await _adrain(await c.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, stream=True))  # type: ignore[arg-type]


@case("chat-stream-usage", "chat", CHAT_MODEL, "provider", True)
def _chat_stream_usage(c: openai.OpenAI) -> None:
    _drain(
        c.chat.completions.create(
            model=CHAT_MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options=USAGE,  # type: ignore[typeddict-item]
        )
    )


@_chat_stream_usage
async def _achat_stream_usage(c: openai.AsyncOpenAI) -> None:
    stream = await c.chat.completions.create(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options=USAGE,  # type: ignore[typeddict-item]
    )
    await _adrain(stream)


def _helpers(c: Any) -> Any:
    """Where the SDK keeps chat ``parse`` and ``stream`` (the ``chat_helpers`` fixture, for
    cases that take no fixtures): under ``beta`` in older releases."""
    completions = c.chat.completions
    return completions if hasattr(completions, "parse") else c.beta.chat.completions


@case("chat-parse", "chat", CHAT_MODEL, "provider", False)
def _chat_parse(c: openai.OpenAI) -> None:
    _helpers(c).parse(model=CHAT_MODEL, messages=MESSAGES)  # type: ignore[arg-type]


@_chat_parse
async def _achat_parse(c: openai.AsyncOpenAI) -> None:
    await _helpers(c).parse(model=CHAT_MODEL, messages=MESSAGES)  # type: ignore[arg-type]


@case("chat-stream-helper", "chat", CHAT_MODEL, "estimate", True)
def _chat_helper(c: openai.OpenAI) -> None:
    with _helpers(c).stream(model=CHAT_MODEL, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        _drain(stream)


@_chat_helper
async def _achat_helper(c: openai.AsyncOpenAI) -> None:
    async with _helpers(c).stream(model=CHAT_MODEL, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        await _adrain(stream)


@case("chat-stream-helper-final", "chat", CHAT_MODEL, "provider", True)
def _chat_helper_final(c: openai.OpenAI) -> None:
    with _helpers(c).stream(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream_options=USAGE,  # type: ignore[typeddict-item]
    ) as stream:
        assert stream.get_final_completion().usage is not None


@_chat_helper_final
async def _achat_helper_final(c: openai.AsyncOpenAI) -> None:
    async with _helpers(c).stream(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream_options=USAGE,  # type: ignore[typeddict-item]
    ) as stream:
        assert (await stream.get_final_completion()).usage is not None


@case("responses", "chat", CHAT_MODEL, "provider", False)
def _responses(c: openai.OpenAI) -> None:
    c.responses.create(model=CHAT_MODEL, input=TEXT, instructions="Be brief.")


@_responses
async def _aresponses(c: openai.AsyncOpenAI) -> None:
    await c.responses.create(model=CHAT_MODEL, input=TEXT, instructions="Be brief.")


@case("responses-stream", "chat", CHAT_MODEL, "provider", True)
def _responses_stream(c: openai.OpenAI) -> None:
    _drain(c.responses.create(model=CHAT_MODEL, input=TEXT, stream=True))


@_responses_stream
async def _aresponses_stream(c: openai.AsyncOpenAI) -> None:
    await _adrain(await c.responses.create(model=CHAT_MODEL, input=TEXT, stream=True))


@case("responses-stream-helper", "chat", CHAT_MODEL, "provider", True)
def _responses_helper(c: openai.OpenAI) -> None:
    with c.responses.stream(model=CHAT_MODEL, input=[{"role": "user", "content": TEXT}]) as s:
        assert s.get_final_response().usage is not None


@_responses_helper
async def _aresponses_helper(c: openai.AsyncOpenAI) -> None:
    async with c.responses.stream(model=CHAT_MODEL, input=[{"role": "user", "content": TEXT}]) as s:
        assert (await s.get_final_response()).usage is not None


@case("responses-parse", "chat", CHAT_MODEL, "provider", False)
def _responses_parse(c: openai.OpenAI) -> None:
    c.responses.parse(model=CHAT_MODEL, input=TEXT)


@_responses_parse
async def _aresponses_parse(c: openai.AsyncOpenAI) -> None:
    await c.responses.parse(model=CHAT_MODEL, input=TEXT)


@case("embeddings", "embeddings", "text-embedding-3-small", "provider", False)
def _embeddings(c: openai.OpenAI) -> None:
    c.embeddings.create(model="text-embedding-3-small", input=[TEXT, "a second input"])


@_embeddings
async def _aembeddings(c: openai.AsyncOpenAI) -> None:
    await c.embeddings.create(model="text-embedding-3-small", input=[TEXT, "a second input"])


@case("completions", "text_completion", "gpt-3.5-turbo-instruct", "provider", False)
def _completions(c: openai.OpenAI) -> None:
    c.completions.create(model="gpt-3.5-turbo-instruct", prompt=TEXT, max_tokens=60)


@_completions
async def _acompletions(c: openai.AsyncOpenAI) -> None:
    await c.completions.create(model="gpt-3.5-turbo-instruct", prompt=TEXT, max_tokens=60)


@case("completions-stream", "text_completion", "gpt-3.5-turbo-instruct", "estimate", True)
def _completions_stream(c: openai.OpenAI) -> None:
    _drain(c.completions.create(model="gpt-3.5-turbo-instruct", prompt=TEXT, stream=True))


@_completions_stream
async def _acompletions_stream(c: openai.AsyncOpenAI) -> None:
    await _adrain(
        await c.completions.create(model="gpt-3.5-turbo-instruct", prompt=TEXT, stream=True)
    )


@case("completions-stream-usage", "text_completion", "gpt-3.5-turbo-instruct", "provider", True)
def _completions_stream_usage(c: openai.OpenAI) -> None:
    _drain(
        c.completions.create(
            model="gpt-3.5-turbo-instruct", prompt=TEXT, stream=True, stream_options=USAGE
        )
    )


@_completions_stream_usage
async def _acompletions_stream_usage(c: openai.AsyncOpenAI) -> None:
    stream = await c.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=TEXT, stream=True, stream_options=USAGE
    )
    await _adrain(stream)


@case("raw-response", "chat", CHAT_MODEL, "provider", False)
def _raw(c: openai.OpenAI) -> None:
    raw = c.chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers.get("content-type", "").startswith("application/json")
    assert raw.parse().usage is not None


@_raw
async def _araw(c: openai.AsyncOpenAI) -> None:
    raw = await c.chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.parse().usage is not None


@case("raw-response-stream", "chat", CHAT_MODEL, "provider", True)
def _raw_stream(c: openai.OpenAI) -> None:
    raw = c.chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options=USAGE,  # type: ignore[typeddict-item]
    )
    _drain(raw.parse())


@_raw_stream
async def _araw_stream(c: openai.AsyncOpenAI) -> None:
    raw = await c.chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options=USAGE,  # type: ignore[typeddict-item]
    )
    await _adrain(raw.parse())


@case("streaming-response", "chat", CHAT_MODEL, "provider", False)
def _streaming_response(c: openai.OpenAI) -> None:
    with c.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as response:
        assert response.parse().usage is not None


@_streaming_response
async def _astreaming_response(c: openai.AsyncOpenAI) -> None:
    async with c.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
    ) as response:
        assert (await response.parse()).usage is not None


@case("streaming-response-stream", "chat", CHAT_MODEL, "estimate", True)
def _streaming_response_stream(c: openai.OpenAI) -> None:
    with c.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        _drain(response.parse())


@_streaming_response_stream
async def _astreaming_response_stream(c: openai.AsyncOpenAI) -> None:
    async with c.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        await _adrain(await response.parse())


def _check(
    span: ReadableSpan,
    attributes: dict[str, Any],
    exchange: Any,
    *,
    operation: str,
    model: str,
    source: str,
    streamed: bool,
    port: int,
) -> None:
    assert span.name == f"{operation} {model}"
    assert span.kind is SpanKind.CLIENT
    assert attributes[attrs.GEN_AI_OPERATION_NAME] == operation
    assert attributes[attrs.GEN_AI_PROVIDER_NAME] == "openai"
    assert attributes[attrs.GEN_AI_REQUEST_MODEL] == model
    assert attributes[attrs.GEN_AI_RESPONSE_MODEL] == exchange.model
    assert attributes[attrs.SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[attrs.SERVER_PORT] == port
    assert attributes.get(attrs.GEN_AI_REQUEST_STREAM, False) is streamed
    assert attrs.ERROR_TYPE not in attributes
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == source
    true = exchange.usage
    if source == "provider":
        assert exchange.reported
        assert attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == true.input_tokens
        assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == true.output_tokens
        if operation != "embeddings" and exchange.endpoint != "/v1/completions":
            assert attributes[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == true.cache_read_tokens
            assert attributes[attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == true.reasoning_tokens
    else:
        assert not exchange.reported
        for key, value in (
            (attrs.GEN_AI_USAGE_INPUT_TOKENS, true.input_tokens),
            (attrs.GEN_AI_USAGE_OUTPUT_TOKENS, true.output_tokens),
        ):
            assert abs(attributes[key] - value) <= 0.1 * value, (key, attributes[key], value)
    if operation != "embeddings":
        assert attributes[attrs.GEN_AI_RESPONSE_ID] == exchange.response_id
        assert attributes[attrs.GEN_AI_RESPONSE_FINISH_REASONS]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("name", sorted(CASES))
def test_sync_call(
    name: str, client: openai.OpenAI, fake_llm: Any, one_span: Any, exchange_of: Any
) -> None:
    sync_call, _, operation, model, source, streamed = CASES[name]
    sync_call(client)
    span, attributes = one_span()
    _check(
        span,
        attributes,
        exchange_of(attributes),
        operation=operation,
        model=model,
        source=source,
        streamed=streamed,
        port=fake_llm.port,
    )


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("name", sorted(CASES))
def test_async_call(
    name: str,
    async_client_factory: Callable[[], openai.AsyncOpenAI],
    fake_llm: Any,
    one_span: Any,
    exchange_of: Any,
) -> None:
    _, async_call, operation, model, source, streamed = CASES[name]

    async def run() -> None:
        async with async_client_factory() as client:
            await async_call(client)

    asyncio.run(run())
    span, attributes = one_span()
    _check(
        span,
        attributes,
        exchange_of(attributes),
        operation=operation,
        model=model,
        source=source,
        streamed=streamed,
        port=fake_llm.port,
    )


LONG_PROMPT = " ".join(
    f"Paragraph {n}: the ledger records every token exactly once." for n in range(150)
)


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_cache_read_and_reasoning_tokens(
    api: str, client: openai.OpenAI, span_exporter: Any, exchange_of: Any
) -> None:
    for _ in range(2):
        if api == "chat":
            client.chat.completions.create(
                model="o3-mini", messages=[{"role": "user", "content": f"{api} {LONG_PROMPT}"}]
            )
        else:
            client.responses.create(model="o3-mini", input=f"{api} {LONG_PROMPT}")
    attributes = dict(span_exporter.get_finished_spans()[-1].attributes or {})
    true = exchange_of(attributes).usage
    assert true.cache_read_tokens > 0
    assert true.reasoning_tokens > 0
    assert attributes[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == true.cache_read_tokens
    assert attributes[attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == true.reasoning_tokens
    assert attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == true.input_tokens
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == true.output_tokens


@pytest.mark.usefixtures("instrumented")
def test_every_call_type_is_metered_after_a_complete_result_type_is_remembered(
    client: openai.OpenAI, span_exporter: Any, exchange_of: Any
) -> None:
    # A complete result's type is remembered so later results skip the stream and raw checks;
    # streams and raw responses that follow must still get their proxies.
    from tollmeter.instrumentation.openai import patch

    for name in ("chat", "chat-stream-usage", "raw-response", "raw-response-stream", "chat"):
        span_exporter.clear()
        CASES[name][0](client)
        spans = span_exporter.get_finished_spans()
        assert len(spans) == 1, name
        attributes = dict(spans[0].attributes or {})
        true = exchange_of(attributes).usage
        assert attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == true.input_tokens, name
        assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == true.output_tokens, name
    assert openai.types.chat.ChatCompletion in patch._COMPLETE_TYPES
    assert not any(
        issubclass(t, (openai.Stream, openai.AsyncStream)) for t in patch._COMPLETE_TYPES
    )
