"""Instrumentation never changes what the application sees, and can be switched off."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode

import tollmeter.instrumentation.anthropic.extract as extract
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.semconv import attributes as attrs

# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
MODEL = "claude-test-small"
PROMPT = [{"role": "user", "content": "Name three colours of the rainbow."}]


def test_rate_limit_error_propagates_unchanged(
    client: anthropic.Anthropic, native: bool, wait_spans: Any
) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=32,
            messages=PROMPT,
            extra_headers={"x-fake-fault": "429", "x-fake-retry-after": "7"},
        )
    assert type(caught.value) is anthropic.RateLimitError
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    (span,) = wait_spans(1)
    values = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert values[attrs.ERROR_TYPE] == "RateLimitError"
    # Rejected before any output: nothing was consumed, so nothing is metered.
    assert attrs.GEN_AI_USAGE_INPUT_TOKENS not in values


def test_server_error_in_the_stream_helper(client: anthropic.Anthropic, wait_spans: Any) -> None:
    manager = client.messages.stream(
        model=MODEL, max_tokens=32, messages=PROMPT, extra_headers={"x-fake-fault": "500"}
    )
    with pytest.raises(anthropic.InternalServerError), manager:
        pass
    (span,) = wait_spans(1)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[attrs.ERROR_TYPE] == "InternalServerError"


def test_response_without_usage_is_estimated(client: anthropic.Anthropic, one_metered: Any) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=32, messages=PROMPT, extra_headers={"x-fake-fault": "no-usage"}
    )
    assert message.content
    values = dict(one_metered().attributes or {})
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_own_failure_is_contained(
    client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch, one_metered: Any
) -> None:
    def broken(usage: object) -> None:
        raise RuntimeError("extractor bug")

    monkeypatch.setattr(extract, "usage_from", broken)
    message = client.messages.create(model=MODEL, max_tokens=32, messages=PROMPT)
    assert message.usage.output_tokens > 0
    # The span still ends, flagged as an estimate, and the application saw nothing.
    values = dict(one_metered().attributes or {})
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_suppressed_calls_are_not_metered(
    client: anthropic.Anthropic, wait_spans: Any, metered: Any
) -> None:
    with suppress_instrumentation():
        client.messages.create(model=MODEL, max_tokens=32, messages=PROMPT)
        with client.messages.stream(model=MODEL, max_tokens=32, messages=PROMPT) as stream:
            stream.until_done()
    spans = wait_spans(0)
    assert not any(attrs.TOLLMETER_USAGE_SOURCE in (s.attributes or {}) for s in spans)


def test_uninstrument_restores_the_sdk(
    fake_llm: Any,
    tracer_provider: TracerProvider,
    meter_provider: Any,
    span_exporter: Any,
    anthropic_native_spans: bool,
    claude_tracing: Any,
) -> None:
    import anthropic._base_client as base_client
    from anthropic.resources.beta.messages import Messages as BetaMessages
    from anthropic.resources.messages import AsyncMessages, Messages

    originals = (Messages.create, Messages.stream, AsyncMessages.create, AsyncMessages.stream)
    factory = getattr(base_client, "start_api_call_span", None)
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    # A second instrument() is a no-op, not a second layer of wrappers.
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    wrapper = Messages.__dict__["create"]
    assert wrapper is not originals[0]
    assert wrapper.__wrapped__ is originals[0]
    if anthropic_native_spans:
        assert base_client.start_api_call_span.__wrapped__ is factory
    instrumentor.uninstrument()
    assert (Messages.create, Messages.stream, AsyncMessages.create, AsyncMessages.stream) == (
        originals
    )
    assert getattr(base_client, "start_api_call_span", None) is factory
    assert not hasattr(BetaMessages.__dict__["create"], "__self_wrapper__")
    assert type(BetaMessages.__dict__["create"]).__name__ == "function"
    with anthropic.Anthropic(
        base_url=fake_llm.url, api_key="test-key", **claude_tracing(False)
    ) as client:
        client.messages.create(model=MODEL, max_tokens=32, messages=PROMPT)
    assert span_exporter.get_finished_spans() == ()


def test_the_sdk_emits_spans_of_its_own_only_where_it_can(
    fake_llm: Any,
    instrumentor: AnthropicInstrumentor,
    anthropic_native_spans: bool,
    claude_tracing: Any,
    one_metered: Any,
) -> None:
    import anthropic._base_client as base_client

    # The capability tollmeter hooks into is there exactly when the client can be asked for
    # native spans; without it the call is metered on tollmeter's own span.
    assert callable(getattr(base_client, "start_api_call_span", None)) is anthropic_native_spans
    with anthropic.Anthropic(
        base_url=fake_llm.url,
        api_key="test-key",
        max_retries=0,
        **claude_tracing(anthropic_native_spans),
    ) as client:
        message = client.messages.create(model=MODEL, max_tokens=32, messages=PROMPT)
    span = one_metered()
    values = dict(span.attributes or {})
    assert values[attrs.GEN_AI_RESPONSE_ID] == message.id
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "provider"
    assert span.instrumentation_scope is not None
    if anthropic_native_spans:
        assert span.instrumentation_scope.name == "com.anthropic.sdk.python"
    else:
        assert span.name == f"chat {MODEL}"
        assert span.instrumentation_scope.name.startswith("tollmeter.")


def test_instrumenting_twice_still_yields_one_span(
    client: anthropic.Anthropic,
    instrumentor: AnthropicInstrumentor,
    tracer_provider: TracerProvider,
    one_metered: Any,
) -> None:
    instrumentor.instrument(tracer_provider=tracer_provider)
    client.messages.create(model=MODEL, max_tokens=32, messages=PROMPT)
    assert one_metered()


WITHOUT_THE_SDK = """
import sys
from importlib.abc import MetaPathFinder

class Missing(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "anthropic" or name.startswith("anthropic."):
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, Missing())
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor

# What opentelemetry-instrument does before it checks that the library is installed.
instrumentor = AnthropicInstrumentor()
assert list(instrumentor.instrumentation_dependencies()) == ["anthropic >= 0.40"]
"""


def test_the_entry_point_loads_without_the_sdk() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SDK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
