"""The real openai SDK, instrumented, against the fake LLM server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs


@pytest.fixture
def instrument(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Iterator[Callable[..., OpenAIInstrumentor]]:
    """``instrument(**options)``: instrument with the in-memory providers; undone afterwards."""
    instrumentor = OpenAIInstrumentor()

    def run(**options: Any) -> OpenAIInstrumentor:
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **options
        )
        return instrumentor

    yield run
    instrumentor.uninstrument()


@pytest.fixture
def instrumented(instrument: Callable[..., OpenAIInstrumentor]) -> OpenAIInstrumentor:
    return instrument()


@pytest.fixture
def client(fake_llm: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def async_client_factory(fake_llm: Any) -> Callable[[], openai.AsyncOpenAI]:
    """Async clients must be made inside the running event loop of each test."""
    return lambda: openai.AsyncOpenAI(
        base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0
    )


@pytest.fixture
def one_span(
    span_exporter: InMemorySpanExporter,
) -> Callable[[], tuple[ReadableSpan, dict[str, Any]]]:
    """The single finished span and its attributes (fails unless there is exactly one)."""

    def get() -> tuple[ReadableSpan, dict[str, Any]]:
        spans = span_exporter.get_finished_spans()
        assert len(spans) == 1, [span.name for span in spans]
        return spans[0], dict(spans[0].attributes or {})

    return get


@pytest.fixture
def exchange_of(fake_llm: Any) -> Callable[[dict[str, Any]], Any]:
    """The fake server's record of the call a span describes."""

    def find(attributes: dict[str, Any]) -> Any:
        response_id = attributes.get(attrs.GEN_AI_RESPONSE_ID)
        return fake_llm.find(response_id) if response_id else fake_llm.last()

    return find
