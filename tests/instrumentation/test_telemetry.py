"""Telemetry: span attributes, finish-once, estimates, metric attribute allowlist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tollmeter.instrumentation import attribute, count_text_tokens
from tollmeter.instrumentation._telemetry import Telemetry, Usage
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

Points = Callable[[str], list[Any]]


@pytest.fixture
def telemetry(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Telemetry:
    return Telemetry("tests", tracer_provider=tracer_provider, meter_provider=meter_provider)


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_provider_usage_becomes_span_attributes_and_metrics(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter, points: Points
) -> None:
    with attribute(tenant="acme", request_id="req-1"):
        call = telemetry.start(
            operation="chat",
            provider="openai",
            request_model="gpt-4o",
            attributes={attrs.SERVER_ADDRESS: "localhost"},
        )
    telemetry.finish(
        call,
        usage=Usage(
            input_tokens=100,
            output_tokens=40,
            cache_read_input_tokens=60,
            reasoning_output_tokens=10,
        ),
        response_model="gpt-4o-2024-08-06",
        response_id="chatcmpl-1",
        finish_reasons=["stop"],
    )
    span = only_span(span_exporter)
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        attrs.GEN_AI_OPERATION_NAME: "chat",
        attrs.GEN_AI_PROVIDER_NAME: "openai",
        attrs.GEN_AI_REQUEST_MODEL: "gpt-4o",
        attrs.SERVER_ADDRESS: "localhost",
        attrs.TOLLMETER_TENANT_ID: "acme",
        attrs.TOLLMETER_REQUEST_ID: "req-1",
        attrs.GEN_AI_USAGE_INPUT_TOKENS: 100,
        attrs.GEN_AI_USAGE_OUTPUT_TOKENS: 40,
        attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 60,
        attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 10,
        attrs.TOLLMETER_USAGE_SOURCE: "provider",
        attrs.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        attrs.GEN_AI_RESPONSE_ID: "chatcmpl-1",
        attrs.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
    }
    tokens = points(metrics.GEN_AI_CLIENT_TOKEN_USAGE)
    by_type = {dict(p.attributes)[attrs.GEN_AI_TOKEN_TYPE]: p for p in tokens}
    assert by_type["input"].sum == 100
    assert by_type["output"].sum == 40
    assert list(by_type["input"].explicit_bounds) == list(metrics.TOKEN_USAGE_BUCKETS)
    (duration,) = points(metrics.GEN_AI_CLIENT_OPERATION_DURATION)
    assert list(duration.explicit_bounds) == list(metrics.DURATION_BUCKETS)
    for point in [*tokens, duration]:
        assert set(dict(point.attributes)) <= {
            attrs.GEN_AI_OPERATION_NAME,
            attrs.GEN_AI_PROVIDER_NAME,
            attrs.GEN_AI_REQUEST_MODEL,
            attrs.GEN_AI_RESPONSE_MODEL,
            attrs.GEN_AI_TOKEN_TYPE,
        }
    assert points(metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK) == []


def test_finish_runs_once(telemetry: Telemetry, span_exporter: InMemorySpanExporter) -> None:
    call = telemetry.start(operation="chat", provider="openai", request_model="m")
    telemetry.finish(call, usage=Usage(1, 2))
    telemetry.finish(call, usage=Usage(5, 6), error=RuntimeError("late"))
    span = only_span(span_exporter)
    assert (span.attributes or {})[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 1
    assert attrs.ERROR_TYPE not in (span.attributes or {})


def test_missing_usage_is_estimated_and_flagged(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    call = telemetry.start(
        operation="chat", provider="openai", request_model="gpt-4o", input_estimate=lambda: 17
    )
    telemetry.first_chunk(call)
    telemetry.finish(call, usage=None, output_text="Hello from the model.")
    attributes = dict(only_span(span_exporter).attributes or {})
    assert attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 17
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text_tokens(
        "Hello from the model.", "gpt-4o"
    )
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_failing_input_estimate_is_contained(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    def broken() -> int:
        raise ZeroDivisionError

    call = telemetry.start(
        operation="chat", provider="openai", request_model="gpt-4o", input_estimate=broken
    )
    telemetry.finish(call, usage=None, output_text="ok")
    attributes = dict(only_span(span_exporter).attributes or {})
    assert attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 0
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_error_before_any_output_records_no_usage(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter, points: Points
) -> None:
    call = telemetry.start(
        operation="chat", provider="openai", request_model="m", input_estimate=lambda: 9
    )
    error = ConnectionError("refused")
    telemetry.finish(call, usage=None, error=error)
    span = only_span(span_exporter)
    attributes = dict(span.attributes or {})
    assert attributes[attrs.ERROR_TYPE] == "ConnectionError"
    assert attrs.GEN_AI_USAGE_INPUT_TOKENS not in attributes
    assert span.status.status_code is StatusCode.ERROR
    assert points(metrics.GEN_AI_CLIENT_TOKEN_USAGE) == []
    (duration,) = points(metrics.GEN_AI_CLIENT_OPERATION_DURATION)
    assert dict(duration.attributes)[attrs.ERROR_TYPE] == "ConnectionError"


def test_error_after_partial_output_estimates_it(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter, points: Points
) -> None:
    call = telemetry.start(
        operation="chat", provider="openai", request_model="m", input_estimate=lambda: 9
    )
    telemetry.first_chunk(call)
    telemetry.finish(call, usage=None, output_text="partial answer", error=OSError("cut"))
    attributes = dict(only_span(span_exporter).attributes or {})
    assert attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 9
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attributes[attrs.ERROR_TYPE] == "OSError"
    assert len(points(metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)) == 1


def test_abandoned_flag(telemetry: Telemetry, span_exporter: InMemorySpanExporter) -> None:
    call = telemetry.start(operation="chat", provider="openai", request_model="m")
    telemetry.finish(call, usage=Usage(3, 4), abandoned=True)
    assert (only_span(span_exporter).attributes or {})[attrs.TOLLMETER_USAGE_ABANDONED] is True


def test_tenant_reaches_metrics_only_when_enabled(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, points: Points
) -> None:
    quiet = Telemetry("a", tracer_provider=tracer_provider, meter_provider=meter_provider)
    loud = Telemetry(
        "b",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        metric_tenant_attribute=True,
    )
    with attribute(tenant="acme", request_id="r-1", user="u"):
        for telemetry in (quiet, loud):
            call = telemetry.start(operation="embeddings", provider="openai", request_model="e")
            telemetry.finish(call, usage=Usage(4, 0), response_id="id-1")
    tenants = [
        dict(p.attributes).get(attrs.TOLLMETER_TENANT_ID)
        for p in points(metrics.GEN_AI_CLIENT_OPERATION_DURATION)
    ]
    assert sorted(tenants, key=str) == [None, "acme"]
    for point in points(metrics.GEN_AI_CLIENT_TOKEN_USAGE):
        assert attrs.TOLLMETER_REQUEST_ID not in dict(point.attributes)
        assert attrs.USER_ID not in dict(point.attributes)
        assert attrs.GEN_AI_RESPONSE_ID not in dict(point.attributes)


def test_adopted_span_is_enriched_but_not_ended(
    telemetry: Telemetry, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    native = tracer_provider.get_tracer("sdk").start_span("chat native")
    with attribute(tenant="acme"):
        call = telemetry.adopt(native, operation="chat", provider="anthropic", request_model="c")
    telemetry.finish(call, usage=Usage(5, 6, cache_write_input_tokens=2))
    assert span_exporter.get_finished_spans() == ()
    native.end()
    attributes = dict(only_span(span_exporter).attributes or {})
    assert attributes[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert attributes[attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 2


def test_span_name_without_model(telemetry: Telemetry, span_exporter: InMemorySpanExporter) -> None:
    call = telemetry.start(operation="chat", provider="openai", request_model=None)
    telemetry.finish(call, usage=Usage())
    assert only_span(span_exporter).name == "chat"
