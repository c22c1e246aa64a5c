"""The collector meters spans in every naming of the GenAI conventions exactly once: spans made
by tollmeter's own ``Telemetry`` under each ``OTEL_SEMCONV_STABILITY_OPT_IN`` mode (the
``/dup`` mode carries the cache write count under both its names) and a span of an
instrumentation still on the former name, sent over real OTLP/HTTP to an in-process collector.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tollmeter.instrumentation._conventions import Conventions
from tollmeter.instrumentation._telemetry import Telemetry, Usage

USAGE = Usage(
    input_tokens=120,
    output_tokens=40,
    cache_read_input_tokens=50,
    cache_write_input_tokens=30,
    reasoning_output_tokens=10,
)
FORMER_NAMES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.id": "resp-former",
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 40,
    "gen_ai.usage.cache_read.input_tokens": 50,
    "gen_ai.usage.cache_creation.input_tokens": 30,
    "gen_ai.usage.reasoning.output_tokens": 10,
}


def test_every_naming_is_metered_once_with_the_same_buckets(collector: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for conventions in Conventions:
        telemetry = Telemetry("tests", tracer_provider=provider, conventions=conventions)
        call = telemetry.start(
            operation="chat", provider="anthropic", request_model="claude-sonnet-4-5"
        )
        telemetry.finish(call, usage=USAGE, response_id=f"resp-{conventions.value}")
    tracer = provider.get_tracer("older-instrumentation")
    with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, attributes=FORMER_NAMES):
        pass
    sender = OTLPSpanExporter(endpoint=f"{collector.http_endpoint}/v1/traces", timeout=10)
    try:
        assert sender.export(exporter.get_finished_spans()) is SpanExportResult.SUCCESS
    finally:
        sender.shutdown()
        provider.shutdown()

    events = {event.response_id: event for event in collector.events()}
    assert sorted(events) == ["resp-default", "resp-dup", "resp-former", "resp-latest"]
    for event in events.values():
        buckets = (
            event.uncached_input_tokens,
            event.cache_read_input_tokens,
            event.cache_write_input_tokens,
            event.non_reasoning_output_tokens,
            event.reasoning_output_tokens,
        )
        assert buckets == (40, 50, 30, 30, 10), event
        assert (event.input_tokens, event.output_tokens) == (120, 40)
