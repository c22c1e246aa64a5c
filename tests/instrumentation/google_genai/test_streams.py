"""Streams finish their span exactly once, whichever way the caller or the network ends them."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import httpx
import httpx2
import pytest
from google import genai
from google.genai import types

from tollmeter.semconv import attributes as attrs

MODEL = "gemini-2.0-flash"
PROMPT = "Describe a quiet harbour town at dawn, in plain English."


class UserBug(Exception):
    """Raised by the application's own loop body."""


def test_stream_cut_by_the_network_keeps_the_interim_usage(
    client: genai.Client, fake_llm: Any, faults: Any, one_span: Any
) -> None:
    config = types.GenerateContentConfig(http_options=faults("disconnect", disconnect_after="2"))
    received: list[Any] = []

    def read() -> None:
        stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT, config=config)
        received.extend(stream)

    # The HTTP library's own error, unchanged (httpx2's in this SDK, httpx's in older ones).
    with pytest.raises((httpx.RemoteProtocolError, httpx2.RemoteProtocolError)) as caught:
        read()
    assert len(received) == 2
    values = one_span()
    truth = fake_llm.find(received[-1].response_id)
    assert not truth.reported
    assert values[attrs.ERROR_TYPE] == type(caught.value).__qualname__
    # The prompt count is exact; the output is what arrived before the cut, flagged.
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == truth.usage.input_tokens
    interim = received[-1].usage_metadata.candidates_token_count
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == interim < truth.usage.output_tokens
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_stream_dropped_after_one_chunk_is_finished_as_abandoned(
    client: genai.Client, one_span: Any
) -> None:
    stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
    first = next(stream)
    stream.close()
    del stream
    gc.collect()
    values = one_span()
    assert values[attrs.TOLLMETER_USAGE_ABANDONED] is True
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == first.usage_metadata.prompt_token_count


def test_exception_in_the_loop_body_propagates_and_the_span_ends(
    client: genai.Client, one_span: Any
) -> None:
    bug = UserBug("in the application")

    def consume() -> None:
        for _ in client.models.generate_content_stream(model=MODEL, contents=PROMPT):
            raise bug

    with pytest.raises(UserBug) as caught:
        consume()
    assert caught.value is bug
    values = one_span()
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0


def test_async_stream_closed_early_is_finished_once(client: genai.Client, one_span: Any) -> None:
    async def run() -> Any:
        try:
            stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
            first = await stream.__anext__()
            await stream.aclose()
            return first
        finally:
            await client.aio.aclose()

    first = asyncio.run(run())
    values = one_span()
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == first.usage_metadata.prompt_token_count
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rejected_stream_records_the_sdk_error_without_usage(
    client: genai.Client, faults: Any, call: Any, one_span: Any, mode: str
) -> None:
    config = types.GenerateContentConfig(http_options=faults("500"))
    with pytest.raises(genai.errors.ServerError) as caught:
        call(client, mode, "generate_content_stream", model=MODEL, contents=PROMPT, config=config)
    assert type(caught.value) is genai.errors.ServerError
    values = one_span()
    assert values[attrs.ERROR_TYPE] == "ServerError"
    # Refused before any output: nothing was consumed, so nothing is metered.
    assert attrs.GEN_AI_USAGE_INPUT_TOKENS not in values
