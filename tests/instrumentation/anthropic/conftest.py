"""Anthropic SDK clients against the fake LLM server, with the instrumentor enabled.

Every client test runs twice on SDK releases that emit spans of their own: with those spans on
(tollmeter enriches them) and off (tollmeter starts its own span); older releases run the second
case only (``native`` in the parent conftest). Either way a call must yield exactly one metered
span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.semconv import attributes as attrs


@pytest.fixture
def instrumentor(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Iterator[AnthropicInstrumentor]:
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def client(
    fake_llm: Any, native: bool, claude_tracing: Callable[[bool], dict[str, Any]], instrumentor: Any
) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(native)
    ) as made:
        yield made


@pytest.fixture
def async_client(
    fake_llm: Any, native: bool, claude_tracing: Callable[[bool], dict[str, Any]], instrumentor: Any
) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(native)
    )


def _metered(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [
        span
        for span in spans
        if (span.attributes or {}).get(attrs.GEN_AI_OPERATION_NAME) == "chat"
        and attrs.GEN_AI_USAGE_INPUT_TOKENS in (span.attributes or {})
    ]


@pytest.fixture
def metered() -> Callable[[tuple[ReadableSpan, ...]], list[ReadableSpan]]:
    """``metered(spans)``: the spans a collector would meter (chat operations with usage)."""
    return _metered


@pytest.fixture
def one_metered(
    wait_spans: Callable[[int], tuple[ReadableSpan, ...]],
) -> Callable[[], ReadableSpan]:
    """The single metered span of the call just made (fails if there are several)."""

    def get() -> ReadableSpan:
        spans = wait_spans(1)
        found = _metered(spans)
        assert len(found) == 1, [span.name for span in spans]
        assert len(spans) == 1, [span.name for span in spans]
        return found[0]

    return get
