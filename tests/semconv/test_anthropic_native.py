"""The anthropic SDK's own OpenTelemetry spans, read back through the normalizer.

The real SDK talks to the fake LLM server and records its native spans; what
``usage_from_attributes`` reads from them must equal the usage the server reported.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anthropic
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.semconv import Usage, model_of, operation_of, provider_of, usage_from_attributes
from tollmeter.semconv import attributes as attrs

# A name no real model has: the SDK warns when a real one is deprecated; the fake server
# takes any name.
MODEL = "claude-test-large"
MESSAGES = [{"role": "user", "content": "Describe the market in town."}]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def claude(fake_llm, exporter: InMemorySpanExporter) -> Iterator[anthropic.Anthropic]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with anthropic.Anthropic(
        base_url=fake_llm.url,
        api_key="test-key",
        max_retries=0,
        open_telemetry={"tracer_provider": provider},
    ) as client:
        yield client
    provider.shutdown()


def _expected(fake_llm, span: ReadableSpan) -> Usage:
    assert span.attributes is not None
    reported = fake_llm.find(span.attributes[attrs.GEN_AI_RESPONSE_ID]).usage
    return Usage(
        input_tokens=reported.input_tokens,
        output_tokens=reported.output_tokens,
        cache_read_input_tokens=reported.cache_read_tokens,
        cache_write_input_tokens=reported.cache_write_tokens,
        reasoning_output_tokens=reported.reasoning_tokens,
    )


def _only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    exporter.clear()
    return span


def _cached_system() -> list[dict[str, object]]:
    # Unique per test run: the session's fake server remembers cached prefixes.
    text = f"{uuid.uuid4()}: " + " ".join(["the cat sat on the warm mat by the door"] * 150)
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def test_cache_write_then_read(claude, fake_llm, exporter) -> None:
    system = _cached_system()
    usages = []
    for _ in range(2):
        claude.messages.create(model=MODEL, max_tokens=16, system=system, messages=MESSAGES)
        span = _only_span(exporter)
        usage = usage_from_attributes(dict(span.attributes or {}))
        assert usage == _expected(fake_llm, span)
        usages.append(usage)
    written, read = usages
    assert written is not None
    assert read is not None
    assert written.cache_write_input_tokens > 0
    assert written.cache_read_input_tokens == 0
    assert read.cache_read_input_tokens == written.cache_write_input_tokens
    # The SDK adds the cache to Anthropic's input_tokens; nothing may add it twice.
    assert read.input_tokens == written.input_tokens
    assert read.uncached_input_tokens == written.uncached_input_tokens


def test_span_identity(claude, exporter) -> None:
    claude.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    span_attributes = dict(_only_span(exporter).attributes or {})
    assert operation_of(span_attributes) == "chat"
    assert provider_of(span_attributes) == "anthropic"
    assert model_of(span_attributes) == (MODEL, MODEL)


def test_streamed_usage(claude, fake_llm, exporter) -> None:
    system = _cached_system()
    for _ in range(2):
        with claude.messages.stream(
            model=MODEL, max_tokens=64, system=system, messages=MESSAGES
        ) as stream:
            for _event in stream:
                pass
        span = _only_span(exporter)
        assert usage_from_attributes(dict(span.attributes or {})) == _expected(fake_llm, span)


def test_abandoned_stream_reports_its_input_only(claude, fake_llm, exporter) -> None:
    stream = claude.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.type == "message_start"
    stream.close()
    span = _only_span(exporter)
    usage = usage_from_attributes(dict(span.attributes or {}))
    assert usage == Usage(input_tokens=fake_llm.find(first.message.id).usage.input_tokens)
