"""Streams cut where their output reaches a budget or the guard's reservation.

The real OpenAI, Anthropic, Gemini and boto3 (Bedrock) SDKs read long replies from the fake LLM
server; each test asks for a reply ten times longer than the limit allows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.instrumentation.bedrock.conftest import make_client
from tests.instrumentation.test_guard import CheckServer
from tollmeter.instrumentation import BudgetSpanProcessor, Guard, budget
from tollmeter.instrumentation._estimate import count_text_tokens
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.bedrock import BedrockInstrumentor
from tollmeter.instrumentation.errors import BudgetExceeded, QuotaExceeded
from tollmeter.instrumentation.google_genai import GoogleGenAIInstrumentor
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.errors import ConfigurationError

N = 40
LONG = {"x-fake-reply-tokens": str(10 * N)}
GPT = "gpt-4o-mini"
CLAUDE = "claude-test-small"
MESSAGES = [{"role": "user", "content": "Tell me a long story"}]
BEDROCK_HELLO = [{"role": "user", "content": [{"text": "Tell me a long story"}]}]


@pytest.fixture
def instrumented(tracer_provider, meter_provider) -> Iterator[None]:
    tracer_provider.add_span_processor(BudgetSpanProcessor())
    instrumentors = (OpenAIInstrumentor(), AnthropicInstrumentor())
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


@pytest.fixture
def gpt(fake_llm, instrumented) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
def claude(fake_llm, instrumented, claude_tracing) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(False)
    ) as client:
        yield client


@pytest.fixture
def span_attributes(span_exporter: InMemorySpanExporter) -> Callable[[], dict[str, Any]]:
    def get() -> dict[str, Any]:
        spans = span_exporter.get_finished_spans()
        assert len(spans) == 1, [span.name for span in spans]
        return dict(spans[0].attributes or {})

    return get


def _text_of(chunk: Any) -> str:
    """The output text one chunk of any of the streams here carries."""
    if isinstance(chunk, str):
        return chunk
    if isinstance(chunk, dict):  # Bedrock ConverseStream
        return str(chunk.get("contentBlockDelta", {}).get("delta", {}).get("text", ""))
    if getattr(chunk, "choices", None):
        return chunk.choices[0].delta.content or ""
    if getattr(chunk, "type", None) == "content_block_delta":
        return getattr(chunk.delta, "text", "")
    if getattr(chunk, "type", None) == "response.output_text.delta":
        return str(chunk.delta)
    return ""


def _assert_cut_at_n(texts: list[str], model: str, attributes: dict[str, Any]) -> int:
    """The span reports the output read, which reached N with its last chunk and not before."""
    consumed = attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]
    assert consumed == count_text_tokens("".join(texts), model)
    last = count_text_tokens(texts[-1], model)
    assert consumed - last < N <= consumed
    assert attributes[attrs.TOLLMETER_STREAM_STOPPED] is True
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    return int(consumed)


def _read(stream: Any, texts: list[str]) -> None:
    for chunk in stream:
        text = _text_of(chunk)
        if text:
            texts.append(text)


async def _aread(stream: Any, texts: list[str]) -> None:
    async for chunk in stream:
        text = _text_of(chunk)
        if text:
            texts.append(text)


def _left_after(fake_llm: Any) -> int:
    """How many chunks the fake server had sent when the last client went away."""
    request_id = fake_llm.last().request_id
    waited = threading.Event()
    for _ in range(200):  # the server notices on its own event loop, a moment later
        sent = fake_llm.left_early(request_id)
        if sent is not None:
            return int(sent)
        waited.wait(0.05)
    raise AssertionError("the fake LLM server never saw the client leave")


def test_openai_chat_stream_stops_at_the_budget(gpt, fake_llm, span_attributes):
    # Paced, so that the server is still sending when the connection is closed.
    paced = {**LONG, "x-fake-chunk-delay-ms": "2"}
    texts: list[str] = []
    with budget(max_output_tokens=N) as b:
        stream = gpt.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, extra_headers=paced
        )
        with pytest.raises(BudgetExceeded) as stopped:
            _read(stream, texts)
    assert stream.response.is_closed
    attributes = span_attributes()
    consumed = _assert_cut_at_n(texts, GPT, attributes)
    assert attributes[attrs.TOLLMETER_STREAM_LIMIT_REACHED] == "budget"
    assert (stopped.value.kind, stopped.value.limit) == ("output_tokens", N)
    assert stopped.value.used == consumed
    assert b.output_tokens_used == consumed
    assert len(texts) <= _left_after(fake_llm) < 10 * N
    # The refusal repeats, the stream is not read again.
    with pytest.raises(BudgetExceeded):
        next(stream)


def test_openai_async_chat_stream_stops_at_the_budget(fake_llm, instrumented, span_attributes):
    texts: list[str] = []

    async def run() -> Any:
        async with openai.AsyncOpenAI(
            base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0
        ) as client:
            with budget(max_output_tokens=N):
                stream = await client.chat.completions.create(
                    model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG
                )
                with pytest.raises(BudgetExceeded):
                    await _aread(stream, texts)
            return stream

    stream = asyncio.run(run())
    assert stream.response.is_closed
    _assert_cut_at_n(texts, GPT, span_attributes())


def test_openai_responses_stream_stops_at_the_budget(gpt, span_attributes):
    texts: list[str] = []
    with budget(max_output_tokens=N):
        stream = gpt.responses.create(model=GPT, input="Tell me", stream=True, extra_headers=LONG)
        with pytest.raises(BudgetExceeded):
            _read(stream, texts)
    assert stream.response.is_closed
    _assert_cut_at_n(texts, GPT, span_attributes())


def test_anthropic_raw_stream_stops_at_the_budget(
    fake_llm, instrumented, claude_tracing, native, span_attributes
):
    # With the SDK's own spans on, the span that reports the stop is the SDK's, enriched.
    texts: list[str] = []
    with (
        anthropic.Anthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(native)
        ) as claude,
        budget(max_output_tokens=N),
    ):
        stream = claude.messages.create(
            model=CLAUDE, max_tokens=4096, messages=MESSAGES, stream=True, extra_headers=LONG
        )
        with pytest.raises(BudgetExceeded):
            _read(stream, texts)
    assert stream.response.is_closed
    _assert_cut_at_n(texts, CLAUDE, span_attributes())


def test_anthropic_async_text_stream_stops_at_the_budget(
    fake_llm, instrumented, claude_tracing, span_attributes
):
    texts: list[str] = []

    async def run() -> Any:
        async with anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(False)
        ) as client:
            with budget(max_output_tokens=N):
                async with client.messages.stream(
                    model=CLAUDE, max_tokens=4096, messages=MESSAGES, extra_headers=LONG
                ) as stream:
                    with pytest.raises(BudgetExceeded):
                        await _aread(stream.text_stream, texts)
                    assert stream.response.is_closed
            return stream

    asyncio.run(run())
    _assert_cut_at_n(texts, CLAUDE, span_attributes())


def test_anthropic_async_raw_stream_and_sync_event_stream(
    fake_llm, instrumented, claude, claude_tracing, span_exporter
):
    async def run() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(False)
        ) as client:
            with budget(max_output_tokens=N):
                stream = await client.messages.create(
                    model=CLAUDE,
                    max_tokens=4096,
                    messages=MESSAGES,
                    stream=True,
                    extra_headers=LONG,
                )
                with pytest.raises(BudgetExceeded):
                    await _aread(stream, texts)
                assert stream.response.is_closed

    texts: list[str] = []
    asyncio.run(run())
    _assert_cut_at_n(texts, CLAUDE, dict(span_exporter.get_finished_spans()[0].attributes or {}))
    span_exporter.clear()
    texts = []
    with (
        budget(max_output_tokens=N),
        claude.messages.stream(
            model=CLAUDE, max_tokens=4096, messages=MESSAGES, extra_headers=LONG
        ) as events,
    ):
        with pytest.raises(BudgetExceeded):
            _read(events, texts)
        assert events.response.is_closed
    _assert_cut_at_n(texts, CLAUDE, dict(span_exporter.get_finished_spans()[0].attributes or {}))


def test_a_stream_within_its_budget_is_read_to_the_end(gpt, claude, span_exporter):
    with budget(max_output_tokens=10 * N + 50) as b:
        texts: list[str] = []
        _read(
            gpt.chat.completions.create(
                model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG
            ),
            texts,
        )
        with claude.messages.stream(
            model=CLAUDE,
            max_tokens=4096,
            messages=MESSAGES,
            extra_headers={"x-fake-reply-tokens": "40"},
        ) as stream:
            _read(stream.text_stream, texts)
    assert len(texts) == 10 * N + 40
    for span in span_exporter.get_finished_spans():
        assert attrs.TOLLMETER_STREAM_STOPPED not in (span.attributes or {})
        assert attrs.TOLLMETER_STREAM_LIMIT_REACHED not in (span.attributes or {})
    assert b.output_tokens_used <= 10 * N + 50


def test_a_caller_breaking_out_first_is_unaffected(gpt, span_attributes):
    with (
        budget(max_output_tokens=N),
        gpt.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG
        ) as stream,
    ):
        for index, _ in enumerate(stream):
            if index == N // 2:
                break
    attributes = span_attributes()
    assert attrs.TOLLMETER_STREAM_STOPPED not in attributes
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] < N


def test_warn_reads_on_and_says_so(gpt, span_attributes, caplog):
    texts: list[str] = []
    logs = caplog.at_level(logging.WARNING, logger="tollmeter.instrumentation._stop")
    with logs, budget(max_output_tokens=N, overrun="warn"):
        _read(
            gpt.chat.completions.create(
                model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG
            ),
            texts,
        )
    assert len(texts) == 10 * N
    attributes = span_attributes()
    assert attributes[attrs.TOLLMETER_STREAM_STOPPED] is False
    assert attributes[attrs.TOLLMETER_STREAM_LIMIT_REACHED] == "budget"
    assert len([r for r in caplog.records if "overrun='warn'" in r.getMessage()]) == 1


def test_provider_usage_counts_what_the_text_does_not_show(gpt, span_attributes):
    # A reasoning model's hidden reasoning is in the final usage only: 40 visible tokens fit
    # a budget of 100, the 64 or more reasoning tokens the last chunk reports do not.
    texts: list[str] = []
    with budget(max_output_tokens=100):
        stream = gpt.chat.completions.create(
            model="o4-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-reply-tokens": "40"},
        )
        with pytest.raises(BudgetExceeded) as stopped:
            _read(stream, texts)
    assert len(texts) == 40
    attributes = span_attributes()
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
    assert attributes[attrs.TOLLMETER_STREAM_STOPPED] is True
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] >= 104
    assert stopped.value.used == attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]


@pytest.fixture
def output_quota() -> Iterator[CheckServer]:
    server = CheckServer(
        [{"name": "output", "measure": "output", "limit": N, "window": "day", "action": "block"}]
    )
    yield server
    server.close()


def test_the_guard_stops_a_stream_at_what_the_quota_allowed(gpt, output_quota, span_attributes):
    guard = Guard(output_quota.url).install()
    texts: list[str] = []
    try:
        stream = gpt.chat.completions.create(
            model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG
        )
        with pytest.raises(QuotaExceeded):
            _read(stream, texts)
    finally:
        guard.uninstall()
    assert stream.response.is_closed
    attributes = span_attributes()
    _assert_cut_at_n(texts, GPT, attributes)
    assert attributes[attrs.TOLLMETER_STREAM_LIMIT_REACHED] == "quota"
    assert attributes[attrs.TOLLMETER_RESERVATION_ID]


def test_streams_read_together_share_one_budget(gpt, span_exporter):
    # Two streams of one budget, read a chunk at a time in turn: each sees the other's
    # progress, so together they stop near N, not at N each.
    with budget(max_output_tokens=4 * N) as b:
        streams = [
            gpt.chat.completions.create(
                model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG
            )
            for _ in range(2)
        ]
        running = list(streams)
        while running:
            for stream in list(running):
                try:
                    next(stream)
                except BudgetExceeded:
                    running.remove(stream)
    consumed = [
        span.attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS]
        for span in span_exporter.get_finished_spans()
    ]
    assert len(consumed) == 2
    assert 4 * N <= sum(consumed) <= 4 * N + 4
    assert b.output_tokens_used == sum(consumed)


def test_no_output_left_refuses_the_next_call_before_any_request(gpt, fake_llm):
    with budget(max_output_tokens=N):
        with pytest.raises(BudgetExceeded):
            _read(
                gpt.chat.completions.create(
                    model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG
                ),
                [],
            )
        before = len(fake_llm.requests())
        with pytest.raises(BudgetExceeded) as refused:
            gpt.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)
    assert refused.value.kind == "output_tokens"
    assert len(fake_llm.requests()) == before


@pytest.fixture
def guard_from_environment(output_quota, monkeypatch) -> None:
    """The guard named by the environment; set before ``gpt``, which reads it when enabled."""
    monkeypatch.setenv("TOLLMETER_GUARD_URL", output_quota.url)
    monkeypatch.setenv("TOLLMETER_GUARD_OVERRUN", "warn")


def test_the_guard_from_the_environment_warns_when_told(
    guard_from_environment, gpt, span_attributes
):
    texts: list[str] = []
    _read(
        gpt.chat.completions.create(model=GPT, messages=MESSAGES, stream=True, extra_headers=LONG),
        texts,
    )
    assert len(texts) == 10 * N
    attributes = span_attributes()
    assert attributes[attrs.TOLLMETER_STREAM_LIMIT_REACHED] == "quota"
    assert attributes[attrs.TOLLMETER_STREAM_STOPPED] is False


def test_overrun_must_be_stop_or_warn(output_quota):
    with pytest.raises(ValueError, match="overrun"):
        budget(max_output_tokens=N, overrun="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="overrun"):
        Guard(output_quota.url, overrun="ignore")  # type: ignore[arg-type]


def test_bedrock_converse_stream_stops_at_the_budget(
    fake_llm, tracer_provider, meter_provider, span_attributes
):
    tracer_provider.add_span_processor(BudgetSpanProcessor())
    instrumentor = BedrockInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    client = make_client(fake_llm)
    model = f"amazon.nova-micro-v1:0?reply_tokens={10 * N}"
    texts: list[str] = []
    try:
        with budget(max_output_tokens=N):
            stream = client.converse_stream(modelId=model, messages=BEDROCK_HELLO)["stream"]
            with pytest.raises(BudgetExceeded):
                _read(stream, texts)
    finally:
        client.close()
        instrumentor.uninstrument()
    assert stream._raw_stream.closed
    _assert_cut_at_n(texts, model, span_attributes())


@pytest.fixture
def gemini(fake_llm, tracer_provider, meter_provider) -> Iterator[genai.Client]:
    tracer_provider.add_span_processor(BudgetSpanProcessor())
    instrumentor = GoogleGenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    options = genai_types.HttpOptions(base_url=fake_llm.url)
    with genai.Client(api_key="test-key", http_options=options) as client:
        yield client
    instrumentor.uninstrument()


GEMINI_LONG = genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(headers=LONG))


def _gemini_text(chunk: Any) -> str:
    return "".join(
        part.text or ""
        for candidate in chunk.candidates or ()
        for part in (candidate.content.parts if candidate.content else None) or ()
    )


def _each(stream: Any, note: Callable[[Any], None]) -> None:
    for chunk in stream:
        note(chunk)


async def _aeach(stream: Any, note: Callable[[Any], None]) -> None:
    async for chunk in stream:
        note(chunk)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gemini_stream_stops_at_the_budget(gemini, span_attributes, mode):
    counts: list[int] = []

    def note(chunk: Any) -> None:
        if _gemini_text(chunk):
            counts.append(chunk.usage_metadata.candidates_token_count)

    async def run_async() -> None:
        try:
            stream = await gemini.aio.models.generate_content_stream(
                model="gemini-2.0-flash", contents="Tell me a long story", config=GEMINI_LONG
            )
            with pytest.raises(BudgetExceeded):
                await _aeach(stream, note)
        finally:
            await gemini.aio.aclose()

    with budget(max_output_tokens=N):
        if mode == "sync":
            stream = gemini.models.generate_content_stream(
                model="gemini-2.0-flash", contents="Tell me a long story", config=GEMINI_LONG
            )
            with pytest.raises(BudgetExceeded):
                _each(stream, note)
        else:
            asyncio.run(run_async())
    attributes = span_attributes()
    # The provider's own running count decides: the chunk that reached N was the last read.
    assert counts[-2] < N <= counts[-1]
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == counts[-1]
    assert attributes[attrs.TOLLMETER_STREAM_STOPPED] is True


def _stream_helper(client: Any) -> Any:
    # Newer openai releases have the helper on chat.completions; older ones only in beta.
    helper = getattr(client.chat.completions, "stream", None)
    return helper if helper is not None else client.beta.chat.completions.stream


def test_the_openai_stream_helper_is_stopped_too(gpt, span_attributes):
    texts: list[str] = []

    def read_events(stream: Any) -> None:
        for event in stream:
            if event.type == "content.delta":
                texts.append(event.delta)

    with (
        budget(max_output_tokens=N),
        _stream_helper(gpt)(model=GPT, messages=MESSAGES, extra_headers=LONG) as stream,
        pytest.raises(BudgetExceeded),
    ):
        read_events(stream)
    _assert_cut_at_n(texts, GPT, span_attributes())
