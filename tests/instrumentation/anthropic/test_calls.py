"""Every Anthropic call type yields exactly one metered span whose counts match the server's."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import anthropic
import pytest
from anthropic.resources.beta import Beta
from anthropic.resources.messages import Messages
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tollmeter.instrumentation import attribute
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
MODEL = "claude-test-small"
PROMPT = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]


def assert_matches_server(span: ReadableSpan, fake_llm: Any, native: bool) -> None:
    values = dict(span.attributes or {})
    exchange = fake_llm.find(values[attrs.GEN_AI_RESPONSE_ID])
    assert exchange.reported
    assert span.kind is SpanKind.CLIENT
    if native:
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "com.anthropic.sdk.python"
    else:
        assert span.name == f"chat {MODEL}"
    assert values[attrs.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert values[attrs.GEN_AI_REQUEST_MODEL] == MODEL
    assert values[attrs.GEN_AI_RESPONSE_MODEL] == exchange.model
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == exchange.usage.input_tokens
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == exchange.usage.output_tokens
    assert values[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == exchange.usage.cache_read_tokens
    assert values[attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == exchange.usage.cache_write_tokens
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
    assert values[attrs.GEN_AI_RESPONSE_FINISH_REASONS] in (("end_turn",), ("max_tokens",))
    assert values[attrs.SERVER_ADDRESS] == "127.0.0.1"


def test_create(client: anthropic.Anthropic, fake_llm: Any, native: bool, one_metered: Any) -> None:
    with attribute(tenant="acme", feature="stories"):
        message = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
    span = one_metered()
    assert_matches_server(span, fake_llm, native)
    values = dict(span.attributes or {})
    assert values[attrs.GEN_AI_RESPONSE_ID] == message.id
    assert values[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert values[attrs.TOLLMETER_FEATURE] == "stories"
    assert values[attrs.GEN_AI_REQUEST_STREAM] is False
    if native:
        # The SDK's own attributes and status survive the enrichment.
        assert values["http.response.status_code"] == 200
        assert values["anthropic.message.stop_reason"] == message.stop_reason
        assert span.status.status_code is StatusCode.OK
    # Anthropic's own input count excludes the cache; the span's includes it.
    usage = message.usage
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == (
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )


def test_create_records_metrics(
    client: anthropic.Anthropic, fake_llm: Any, native: bool, points: Any
) -> None:
    message = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
    exchange = fake_llm.find(message.id)
    usage_points = points(metrics.GEN_AI_CLIENT_TOKEN_USAGE)
    by_type = {p.attributes[attrs.GEN_AI_TOKEN_TYPE]: p for p in usage_points}
    assert by_type["input"].sum == exchange.usage.input_tokens
    assert by_type["output"].sum == exchange.usage.output_tokens
    assert by_type["input"].attributes[attrs.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs.GEN_AI_RESPONSE_ID not in by_type["input"].attributes
    (duration,) = points(metrics.GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.count == 1


def test_create_stream_events(
    client: anthropic.Anthropic, fake_llm: Any, native: bool, one_metered: Any
) -> None:
    with attribute(tenant="acme"):
        stream = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT, stream=True)
    kinds = [event.type for event in stream]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    span = one_metered()
    assert_matches_server(span, fake_llm, native)
    values = dict(span.attributes or {})
    assert values[attrs.GEN_AI_REQUEST_STREAM] is True
    assert values[attrs.TOLLMETER_TENANT_ID] == "acme"


def test_stream_helper_text(
    client: anthropic.Anthropic, fake_llm: Any, native: bool, one_metered: Any
) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text
    span = one_metered()
    assert_matches_server(span, fake_llm, native)
    assert (span.attributes or {})[attrs.GEN_AI_RESPONSE_ID] == final.id


def test_stream_helper_final_message_only(
    client: anthropic.Anthropic, fake_llm: Any, native: bool, one_metered: Any
) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as stream:
        final = stream.get_final_message()
    span = one_metered()
    assert_matches_server(span, fake_llm, native)
    assert (span.attributes or {})[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.output_tokens


def test_stream_helper_events(
    client: anthropic.Anthropic, fake_llm: Any, native: bool, one_metered: Any
) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as stream:
        kinds = [event.type for event in stream]
    assert "text" in kinds
    assert_matches_server(one_metered(), fake_llm, native)


def test_with_raw_response(
    client: anthropic.Anthropic, fake_llm: Any, native: bool, one_metered: Any
) -> None:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=PROMPT)
    message = raw.parse()
    span = one_metered()
    assert_matches_server(span, fake_llm, native)
    assert (span.attributes or {})[attrs.GEN_AI_RESPONSE_ID] == message.id


def test_raw_responses_are_metered_after_a_message_type_is_remembered(
    client: anthropic.Anthropic,
    fake_llm: Any,
    native: bool,
    span_exporter: Any,
    one_metered: Any,
) -> None:
    # A message's type is remembered so later results skip the raw-response lookup; a raw
    # response that follows must still be read through ``parse()``.
    for raw in (False, True, False):
        span_exporter.clear()
        if raw:
            message = client.messages.with_raw_response.create(
                model=MODEL, max_tokens=64, messages=PROMPT
            ).parse()
        else:
            message = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
        span = one_metered()
        assert_matches_server(span, fake_llm, native)
        assert (span.attributes or {})[attrs.GEN_AI_RESPONSE_ID] == message.id


def test_async_create_and_streams(
    fake_llm: Any,
    native: bool,
    claude_tracing: Any,
    instrumentor: Any,
    wait_spans: Any,
    metered: Any,
) -> None:
    async def main() -> list[str]:
        async with anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(native)
        ) as client:
            with attribute(tenant="async-tenant"):
                message = await client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
                events = await client.messages.create(
                    model=MODEL, max_tokens=64, messages=PROMPT, stream=True
                )
                event_ids = [e.message.id async for e in events if e.type == "message_start"]
                async with client.messages.stream(
                    model=MODEL, max_tokens=64, messages=PROMPT
                ) as stream:
                    texts = [text async for text in stream.text_stream]
                    final = await stream.get_final_message()
                assert "".join(texts) == final.content[0].text
                async with client.messages.stream(
                    model=MODEL, max_tokens=64, messages=PROMPT
                ) as stream:
                    second = await stream.get_final_message()
            return [message.id, *event_ids, final.id, second.id]

    ids = asyncio.run(main())
    spans = metered(wait_spans(4))
    assert len(spans) == 4
    assert sorted(str((s.attributes or {})[attrs.GEN_AI_RESPONSE_ID]) for s in spans) == sorted(ids)
    for span in spans:
        assert_matches_server(span, fake_llm, native)
        assert (span.attributes or {})[attrs.TOLLMETER_TENANT_ID] == "async-tenant"


def _long_system_prompt() -> list[dict[str, Any]]:
    text = " ".join(f"Rule {n}: keep every answer polite, short and precise." for n in range(220))
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def test_cache_read_and_write_are_counted_in_input(
    client: anthropic.Anthropic,
    fake_llm: Any,
    native: bool,
    wait_spans: Any,
    request: Any,
    metered: Any,
) -> None:
    # A system prompt unique to this test run, so the first call writes the cache.
    system = _long_system_prompt()
    system[0]["text"] = f"{request.node.name}. {system[0]['text']}"
    first = client.messages.create(model=MODEL, max_tokens=32, system=system, messages=PROMPT)
    second = client.messages.create(model=MODEL, max_tokens=32, system=system, messages=PROMPT)
    assert (first.usage.cache_creation_input_tokens or 0) > 0
    assert (second.usage.cache_read_input_tokens or 0) > 0
    spans = {str((s.attributes or {})[attrs.GEN_AI_RESPONSE_ID]): s for s in metered(wait_spans(2))}
    for message in (first, second):
        values = dict(spans[message.id].attributes or {})
        usage = message.usage
        assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == (
            usage.input_tokens
            + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0)
        )
        assert values[attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == usage.cache_read_input_tokens
        assert (
            values[attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == usage.cache_creation_input_tokens
        )
        assert_matches_server(spans[message.id], fake_llm, native)


def test_cache_tokens_in_a_stream(
    client: anthropic.Anthropic,
    fake_llm: Any,
    native: bool,
    wait_spans: Any,
    request: Any,
    metered: Any,
) -> None:
    system = _long_system_prompt()
    system[0]["text"] = f"{request.node.name}. {system[0]['text']}"
    client.messages.create(model=MODEL, max_tokens=32, system=system, messages=PROMPT)
    with client.messages.stream(
        model=MODEL, max_tokens=32, system=system, messages=PROMPT
    ) as stream:
        final = stream.get_final_message()
    assert (final.usage.cache_read_input_tokens or 0) > 0
    spans = metered(wait_spans(2))
    (streamed,) = [s for s in spans if (s.attributes or {})[attrs.GEN_AI_RESPONSE_ID] == final.id]
    assert_matches_server(streamed, fake_llm, native)


def _thinking() -> dict[str, Any]:
    """Extended thinking, as a parameter where the SDK has one, else in the request body."""
    thinking = {"type": "enabled", "budget_tokens": 1024}
    if "thinking" in inspect.signature(Messages.create).parameters:
        return {"thinking": thinking}
    return {"extra_body": {"thinking": thinking}}


def test_thinking_tokens_are_reasoning_output(
    client: anthropic.Anthropic, fake_llm: Any, native: bool, wait_spans: Any, metered: Any
) -> None:
    message = client.messages.create(model=MODEL, max_tokens=2048, messages=PROMPT, **_thinking())
    with client.messages.stream(
        model=MODEL, max_tokens=2048, messages=PROMPT, **_thinking()
    ) as stream:
        streamed = stream.get_final_message()
    assert message.content[0].type == "thinking"
    spans = {str((s.attributes or {})[attrs.GEN_AI_RESPONSE_ID]): s for s in metered(wait_spans(2))}
    for result in (message, streamed):
        exchange = fake_llm.find(result.id)
        assert exchange.usage.reasoning_tokens > 0
        values = dict(spans[result.id].attributes or {})
        assert values[attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == exchange.usage.reasoning_tokens
        assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == exchange.usage.output_tokens


def _beta_namespaces() -> list[str]:
    """The beta namespaces holding ``messages`` in the installed SDK: early releases also have
    ``prompt_caching``."""
    return [name for name in ("messages", "prompt_caching") if hasattr(Beta, name)]


@pytest.mark.parametrize("namespace", _beta_namespaces())
def test_beta_messages(
    client: anthropic.Anthropic,
    fake_llm: Any,
    native: bool,
    namespace: str,
    wait_spans: Any,
    metered: Any,
) -> None:
    beta = getattr(client.beta, namespace)
    messages = beta if namespace == "messages" else beta.messages
    ids = [messages.create(model=MODEL, max_tokens=64, messages=PROMPT).id]
    # The stream helper came to the beta namespace later than ``create``.
    if hasattr(messages, "stream"):
        with messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as stream:
            ids.append(stream.get_final_message().id)
    spans = {
        str((s.attributes or {})[attrs.GEN_AI_RESPONSE_ID]): s
        for s in metered(wait_spans(len(ids)))
    }
    assert sorted(spans) == sorted(ids)
    for span in spans.values():
        assert_matches_server(span, fake_llm, native)


def test_with_streaming_response_leaves_the_body_to_the_application(
    client: anthropic.Anthropic, native: bool, one_metered: Any
) -> None:
    with client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=64, messages=PROMPT
    ) as response:
        message = response.parse()
    assert message.content
    values = dict(one_metered().attributes or {})
    # tollmeter did not read the body before the application, so the counts are estimates.
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0


def test_time_to_first_chunk_of_a_text_stream(
    client: anthropic.Anthropic, points: Any, one_metered: Any
) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as stream:
        assert "".join(stream.text_stream)
    one_metered()
    (first_chunk,) = points(metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
    assert first_chunk.count == 1
