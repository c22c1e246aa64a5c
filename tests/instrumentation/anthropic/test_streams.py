"""A streamed call's span is finished exactly once, however the caller leaves the stream."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import anthropic
import pytest
from opentelemetry.trace import StatusCode

from tollmeter.semconv import attributes as attrs

# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
MODEL = "claude-test-small"
PROMPT = [{"role": "user", "content": "Describe the sea at night in a few sentences."}]


class UserError(Exception):
    pass


def test_break_then_garbage_collection_marks_abandoned(
    client: anthropic.Anthropic, one_metered: Any
) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT, stream=True)
    for event in stream:
        if event.type == "content_block_delta":
            break
    del stream
    gc.collect()
    values = dict(one_metered().attributes or {})
    assert values[attrs.TOLLMETER_USAGE_ABANDONED] is True
    # Input came with message_start; the output stopped early and is estimated from the text.
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] >= 1
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0


def test_close_before_the_end(client: anthropic.Anthropic, fake_llm: Any, one_metered: Any) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT, stream=True)
    first = next(iter(stream))
    stream.close()
    values = dict(one_metered().attributes or {})
    exchange = fake_llm.find(first.message.id)
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == exchange.usage.input_tokens
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attrs.TOLLMETER_USAGE_ABANDONED not in values


def test_exception_in_the_loop_inside_with(client: anthropic.Anthropic, one_metered: Any) -> None:
    manager = client.messages.stream(model=MODEL, max_tokens=64, messages=PROMPT)
    with pytest.raises(UserError), manager as stream:  # noqa: PT012 - raised in the user's loop
        for _text in stream.text_stream:
            raise UserError
    span = one_metered()
    values = dict(span.attributes or {})
    # The call itself succeeded as far as it went: the user's error is not the call's.
    assert attrs.ERROR_TYPE not in values or values[attrs.ERROR_TYPE] != "UserError"
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_exhaustion_twice_finishes_once(client: anthropic.Anthropic, one_metered: Any) -> None:
    stream = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT, stream=True)
    list(stream)
    list(stream)
    stream.close()
    values = dict(one_metered().attributes or {})
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


def test_stream_helper_without_with_and_close(
    client: anthropic.Anthropic, fake_llm: Any, one_metered: Any
) -> None:
    manager = client.messages.stream(model=MODEL, max_tokens=64, messages=PROMPT)
    stream = manager.__enter__()
    text = "".join(stream.text_stream)
    stream.close()
    assert text
    values = dict(one_metered().attributes or {})
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


def test_server_cuts_the_stream(
    client: anthropic.Anthropic, sdk_http: Any, one_metered: Any
) -> None:
    # Releases up to 2.16 pass the transport's error through; later ones wrap it.
    cut = (sdk_http(anthropic).RemoteProtocolError, anthropic.APIConnectionError)
    with pytest.raises(cut):  # noqa: PT012 - raised mid-iteration
        stream = client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=PROMPT,
            stream=True,
            extra_headers={"x-fake-fault": "disconnect", "x-fake-disconnect-after": "4"},
        )
        for _event in stream:
            pass
    span = one_metered()
    values = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attrs.ERROR_TYPE in values
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_async_break_and_aclose(
    fake_llm: Any,
    native: bool,
    claude_tracing: Any,
    instrumentor: Any,
    one_metered: Any,
) -> None:
    async def main() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(native)
        ) as client:
            stream = await client.messages.create(
                model=MODEL, max_tokens=64, messages=PROMPT, stream=True
            )
            async for event in stream:
                if event.type == "content_block_delta":
                    break
            await stream.close()

    asyncio.run(main())
    values = dict(one_metered().attributes or {})
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] >= 1
