"""The guard around the real OpenAI SDK when the collector cannot be reached."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import openai
import pytest

from tollmeter.instrumentation import Guard, GuardUnavailable, budget
from tollmeter.instrumentation.openai import OpenAIInstrumentor


@pytest.fixture
def chat(fake_llm, tracer_provider, meter_provider) -> Iterator[openai.OpenAI]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client
    instrumentor.uninstrument()


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _ask(client: openai.OpenAI, **extra: object) -> object:
    return client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": "Hi"}], **extra
    )


@pytest.mark.parametrize("stream", [False, True])
def test_fail_open_and_fail_closed(chat, fake_llm, dead_url, stream):
    guard = Guard(dead_url, timeout=0.5).install()
    try:
        before = len(fake_llm.requests())
        reply = _ask(chat, stream=stream)
        if stream:
            assert list(reply)
        assert len(fake_llm.requests()) == before + 1
        guard.fail_mode = "closed"
        with pytest.raises(GuardUnavailable):
            _ask(chat, stream=stream)
        assert len(fake_llm.requests()) == before + 1
    finally:
        guard.uninstall()


def test_a_denied_call_releases_its_budget_reservation(chat, dead_url):
    guard = Guard(dead_url, fail_mode="closed", timeout=0.5).install()
    try:
        with budget(max_calls=1) as b:
            with pytest.raises(GuardUnavailable):
                _ask(chat)
            assert (b.calls, b.tokens_used) == (0, 0)
    finally:
        guard.uninstall()
