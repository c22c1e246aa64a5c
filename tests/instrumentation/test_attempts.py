"""Retry numbers and budget loop iterations on spans, with the real SDKs and the fake LLM server.

The fake server fails the first N attempts of a request (``x-fake-fault-attempts``) with a
429 announcing a 10 ms ``retry-after``, so the SDKs' own retry loops run quickly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tollmeter.instrumentation._budget import BudgetSpanProcessor, budget
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs

GPT = "gpt-4o-mini"
# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
CLAUDE = "claude-test-small"
MESSAGES: Any = [{"role": "user", "content": "Explain how tides work, in plain English."}]


def _failing(attempts: int) -> dict[str, str]:
    return {
        "x-fake-fault": "429",
        "x-fake-fault-attempts": str(attempts),
        "x-fake-retry-after": "0.01",
    }


@pytest.fixture
def instrumented(tracer_provider: TracerProvider, meter_provider: Any) -> Iterator[None]:
    tracer_provider.add_span_processor(BudgetSpanProcessor())
    instrumentors = (OpenAIInstrumentor(), AnthropicInstrumentor())
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


@pytest.fixture
def gpt(fake_llm: Any, instrumented: None) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=2) as sdk:
        yield sdk


@pytest.fixture
def claude(
    fake_llm: Any, instrumented: None, native: bool, claude_tracing: Any
) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_llm.url, api_key="test-key", max_retries=2, **claude_tracing(native)
    ) as sdk:
        yield sdk


def _spans(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [dict(span.attributes or {}) for span in exporter.get_finished_spans()]


def _one(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, dict[str, Any]]:
    (span,) = exporter.get_finished_spans()
    return span, dict(span.attributes or {})


def _ask_gpt(client: Any, *, failures: int = 0, **options: Any) -> Any:
    return client.chat.completions.create(
        model=GPT, messages=MESSAGES, extra_headers=_failing(failures), **options
    )


def _ask_claude(client: Any, *, failures: int = 0) -> Any:
    return client.messages.create(
        model=CLAUDE, max_tokens=20, messages=MESSAGES, extra_headers=_failing(failures)
    )


# -- tollmeter.attempt ---------------------------------------------------------------------


def test_openai_retried_call_carries_the_retry_number(
    gpt: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_llm: Any
) -> None:
    before = len(fake_llm.requests())
    _ask_gpt(gpt, failures=2)
    assert len(fake_llm.requests()) == before + 3
    span, attributes = _one(span_exporter)
    assert attributes[attrs.TOLLMETER_ATTEMPT] == 2
    assert span.status.status_code is not StatusCode.ERROR
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_openai_first_attempt_is_zero(
    gpt: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    _ask_gpt(gpt)
    assert _one(span_exporter)[1][attrs.TOLLMETER_ATTEMPT] == 0


def test_openai_retries_exhausted_records_the_last_attempt(
    gpt: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(openai.RateLimitError):
        _ask_gpt(gpt, failures=5)
    span, attributes = _one(span_exporter)
    assert attributes[attrs.TOLLMETER_ATTEMPT] == 2
    assert span.status.status_code is StatusCode.ERROR


def test_openai_per_request_max_retries(
    gpt: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    _ask_gpt(gpt.with_options(max_retries=4), failures=3)
    assert _one(span_exporter)[1][attrs.TOLLMETER_ATTEMPT] == 3


def test_openai_async_retried_call(
    fake_llm: Any, instrumented: None, span_exporter: InMemorySpanExporter
) -> None:
    async def run() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=2
        ) as sdk:
            await asyncio.gather(_ask_gpt(sdk, failures=1), _ask_gpt(sdk, failures=2))

    asyncio.run(run())
    assert sorted(a[attrs.TOLLMETER_ATTEMPT] for a in _spans(span_exporter)) == [1, 2]


def test_openai_retried_stream(gpt: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    stream = _ask_gpt(gpt, failures=1, stream=True, stream_options={"include_usage": True})
    with stream:
        chunks = list(stream)
    assert chunks
    _, attributes = _one(span_exporter)
    assert attributes[attrs.TOLLMETER_ATTEMPT] == 1
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


def test_openai_stream_helper_retried(
    gpt: openai.OpenAI, chat_helpers: Any, span_exporter: InMemorySpanExporter
) -> None:
    with chat_helpers(gpt).stream(
        model=GPT, messages=MESSAGES, extra_headers=_failing(2)
    ) as stream:
        stream.until_done()
    assert _one(span_exporter)[1][attrs.TOLLMETER_ATTEMPT] == 2


def test_anthropic_retried_call(
    claude: anthropic.Anthropic, span_exporter: InMemorySpanExporter
) -> None:
    _ask_claude(claude, failures=2)
    _ask_claude(claude)
    assert [a[attrs.TOLLMETER_ATTEMPT] for a in _spans(span_exporter)] == [2, 0]


def test_anthropic_retries_exhausted(
    claude: anthropic.Anthropic, span_exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(anthropic.RateLimitError):
        _ask_claude(claude, failures=3)
    span, attributes = _one(span_exporter)
    assert attributes[attrs.TOLLMETER_ATTEMPT] == 2
    assert span.status.status_code is StatusCode.ERROR


def test_anthropic_retried_stream(
    claude: anthropic.Anthropic, span_exporter: InMemorySpanExporter
) -> None:
    with claude.messages.stream(
        model=CLAUDE, max_tokens=20, messages=MESSAGES, extra_headers=_failing(1)
    ) as stream:
        stream.until_done()
    _, attributes = _one(span_exporter)
    assert attributes[attrs.TOLLMETER_ATTEMPT] == 1
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_anthropic_async_retried_call(
    fake_llm: Any, instrumented: None, claude_tracing: Any, span_exporter: InMemorySpanExporter
) -> None:
    async def run() -> None:
        sdk = anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=2, **claude_tracing(False)
        )
        async with sdk:
            await _ask_claude(sdk, failures=2)

    asyncio.run(run())
    assert _one(span_exporter)[1][attrs.TOLLMETER_ATTEMPT] == 2


def test_uninstrument_restores_the_request_builders(
    tracer_provider: TracerProvider, meter_provider: Any
) -> None:
    builders = (openai._base_client.BaseClient, anthropic._base_client.BaseClient)
    originals = [cls.__dict__["_build_request"] for cls in builders]
    instrumentors = (OpenAIInstrumentor(), AnthropicInstrumentor())
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    # A wrapt proxy compares equal to what it wraps: compare identities.
    assert not any(
        cls.__dict__["_build_request"] is f for cls, f in zip(builders, originals, strict=True)
    )
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
    assert all(
        cls.__dict__["_build_request"] is f for cls, f in zip(builders, originals, strict=True)
    )


def test_uninstrumented_sdk_calls_are_unaffected(
    fake_llm: Any, span_exporter: InMemorySpanExporter
) -> None:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=2) as sdk:
        assert _ask_gpt(sdk, failures=1).usage is not None
    assert span_exporter.get_finished_spans() == ()


# -- tollmeter.budget.call -----------------------------------------------------------------


def test_budget_numbers_the_loop_iterations(
    gpt: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    _ask_gpt(gpt)
    with budget(max_calls=10):
        for failures in (0, 2, 0, 1):
            _ask_gpt(gpt, failures=failures)
    _ask_gpt(gpt)
    spans = _spans(span_exporter)
    assert [a.get(attrs.TOLLMETER_BUDGET_CALL) for a in spans] == [None, 1, 2, 3, 4, None]
    assert [a[attrs.TOLLMETER_ATTEMPT] for a in spans] == [0, 0, 2, 0, 1, 0]


def test_nested_budget_numbers_within_the_innermost(
    claude: anthropic.Anthropic, span_exporter: InMemorySpanExporter
) -> None:
    with budget(max_calls=10) as run:
        _ask_claude(claude)
        for _ in range(2):
            with budget(max_calls=5):
                _ask_claude(claude)
                _ask_claude(claude, failures=1)
        _ask_claude(claude)
    assert run.calls == 6
    numbers = [a[attrs.TOLLMETER_BUDGET_CALL] for a in _spans(span_exporter)]
    assert numbers == [1, 1, 2, 1, 2, 6]


def test_refused_call_takes_no_number(
    gpt: openai.OpenAI, span_exporter: InMemorySpanExporter, fake_llm: Any
) -> None:
    from tollmeter.instrumentation.errors import BudgetExceeded

    with budget(max_calls=2):
        _ask_gpt(gpt)
        _ask_gpt(gpt)
        with pytest.raises(BudgetExceeded):
            _ask_gpt(gpt)
    with budget(max_calls=2):
        _ask_gpt(gpt)
    numbers = [a[attrs.TOLLMETER_BUDGET_CALL] for a in _spans(span_exporter)]
    assert numbers == [1, 2, 1]


def test_async_tasks_share_one_budget(
    fake_llm: Any, instrumented: None, span_exporter: InMemorySpanExporter
) -> None:
    async def run() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=2
        ) as sdk:
            with budget(max_calls=3):
                await asyncio.gather(*(_ask_gpt(sdk) for _ in range(3)))

    asyncio.run(run())
    assert sorted(a[attrs.TOLLMETER_BUDGET_CALL] for a in _spans(span_exporter)) == [1, 2, 3]
