"""Per-request budgets with the real Anthropic SDK against the fake LLM server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tollmeter.instrumentation._budget import BudgetSpanProcessor, budget
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.errors import BudgetExceeded
from tollmeter.semconv.errors import TollmeterError

# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
MODEL = "claude-test-small"


@pytest.fixture
def instrumented(tracer_provider, meter_provider) -> Iterator[None]:
    tracer_provider.add_span_processor(BudgetSpanProcessor())
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    instrumentor.uninstrument()


@pytest.fixture
def claude(fake_llm, instrumented, claude_tracing) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(False)
    ) as client:
        yield client


def _ask(client: Any, *, max_tokens: int = 20, model: str = MODEL, fault: bool = False) -> Any:
    return client.messages.create(
        model=model,
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": "Hi there"}],
        extra_headers={"x-fake-fault": "500"} if fault else None,
    )


def test_max_calls_stops_the_call_that_would_pass_it(claude, fake_llm):
    before = len(fake_llm.requests())
    with budget(max_calls=2) as b:
        _ask(claude)
        _ask(claude)
        with pytest.raises(BudgetExceeded) as exceeded:
            _ask(claude)
    assert isinstance(exceeded.value, TollmeterError)
    assert (exceeded.value.kind, exceeded.value.used, exceeded.value.limit) == ("calls", 2, 2)
    assert b.calls == 2
    assert len(fake_llm.requests()) == before + 2


def test_actual_usage_replaces_the_estimate(claude):
    with budget(max_tokens=10_000) as b:
        reply = _ask(claude, max_tokens=500)
    assert b.tokens_used == reply.usage.input_tokens + reply.usage.output_tokens
    assert b.tokens_used < 500


def test_max_tokens_refuses_a_call_whose_estimate_would_pass_it(claude, fake_llm):
    with budget(max_tokens=300) as b:
        _ask(claude, max_tokens=100)
        used = b.tokens_used
        before = len(fake_llm.requests())
        with pytest.raises(BudgetExceeded) as exceeded:
            _ask(claude, max_tokens=300)
        assert len(fake_llm.requests()) == before
        assert exceeded.value.kind == "tokens"
        assert b.tokens_used == used
        assert b.calls == 1


def test_nested_budgets_all_apply(claude):
    with budget(max_calls=1, name="outer"):
        with budget(max_calls=10, name="inner") as inner:
            _ask(claude)
            with pytest.raises(BudgetExceeded, match="outer"):
                _ask(claude)
        assert inner.calls == 1


def test_decorator_gives_each_invocation_its_own_budget(claude):
    @budget(max_calls=1)
    def handle_request() -> str:
        return _ask(claude).content[0].text

    assert handle_request()
    assert handle_request()


def test_async_decorator(fake_llm, instrumented, claude_tracing):
    @budget(max_calls=1)
    async def agent() -> None:
        client = anthropic.AsyncAnthropic(
            base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(False)
        )
        async with client:
            await client.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
            )
            await client.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
            )

    with pytest.raises(BudgetExceeded):
        asyncio.run(agent())


def test_circuit_breaker_opens_after_consecutive_failures(claude, fake_llm):
    with budget(max_consecutive_failures=2) as b:
        for _ in range(2):
            with pytest.raises(anthropic.InternalServerError):
                _ask(claude, fault=True)
        before = len(fake_llm.requests())
        with pytest.raises(BudgetExceeded) as opened:
            _ask(claude)
        assert opened.value.kind == "failures"
        assert len(fake_llm.requests()) == before
        # Another model is another call: its circuit is closed.
        assert _ask(claude, model="claude-test-large").content
        assert b.calls == 3


def test_success_resets_the_failure_count(claude):
    with budget(max_consecutive_failures=2):
        with pytest.raises(anthropic.InternalServerError):
            _ask(claude, fault=True)
        assert _ask(claude).content
        with pytest.raises(anthropic.InternalServerError):
            _ask(claude, fault=True)
        assert _ask(claude).content


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_tokens": -1}, ValueError),
        ({"max_calls": 1.5}, TypeError),
        ({"max_calls": True}, TypeError),
    ],
)
def test_invalid_budgets(kwargs, error):
    with pytest.raises(error):
        budget(**kwargs)
