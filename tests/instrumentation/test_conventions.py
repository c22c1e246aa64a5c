"""The GenAI conventions opt-in: ``OTEL_SEMCONV_STABILITY_OPT_IN`` picks the token metrics and
span names, checked on spans and metrics read back from the SDK's in-memory exporter and reader.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation._conventions import (
    OTEL_SEMCONV_STABILITY_OPT_IN,
    Conventions,
    conventions_from_env,
)
from tollmeter.instrumentation._telemetry import Telemetry, Usage
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv import metrics

USAGE = Usage(
    input_tokens=120,
    output_tokens=40,
    cache_read_input_tokens=50,
    cache_write_input_tokens=30,
    reasoning_output_tokens=10,
)
COUNTERS = {
    metrics.GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS: 120,
    metrics.GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS: 40,
    metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS: 50,
    metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS: 30,
    metrics.GEN_AI_CLIENT_INFERENCE_USAGE_REASONING_OUTPUT_TOKENS: 10,
}
DEPRECATED_CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"


def _metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Metric name -> the metric, from one collection."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Conventions.DEFAULT),
        ("", Conventions.DEFAULT),
        ("http, database", Conventions.DEFAULT),
        ("gen_ai_latest_experimental", Conventions.LATEST),
        ("http/dup, gen_ai_latest_experimental ", Conventions.LATEST),
        ("gen_ai_latest_experimental/dup", Conventions.DUP),
        ("gen_ai_latest_experimental,gen_ai_latest_experimental/dup", Conventions.DUP),
    ],
)
def test_the_variable_picks_the_conventions(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: Conventions
) -> None:
    if value is None:
        monkeypatch.delenv(OTEL_SEMCONV_STABILITY_OPT_IN, raising=False)
    else:
        monkeypatch.setenv(OTEL_SEMCONV_STABILITY_OPT_IN, value)
    assert conventions_from_env() is expected


@pytest.mark.parametrize("conventions", list(Conventions))
def test_each_mode_emits_its_names(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    conventions: Conventions,
) -> None:
    telemetry = Telemetry(
        "tests",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        conventions=conventions,
    )
    call = telemetry.start(operation="chat", provider="anthropic", request_model="claude-x")
    telemetry.finish(call, usage=USAGE, response_model="claude-x-1")

    (span,) = span_exporter.get_finished_spans()
    values = dict(span.attributes or {})
    assert values[attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 30
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 120
    if conventions is Conventions.DUP:
        assert values[DEPRECATED_CACHE_WRITE] == 30
    else:
        assert DEPRECATED_CACHE_WRITE not in values

    found = _metrics(metric_reader)
    histogram = found.get(metrics.GEN_AI_CLIENT_TOKEN_USAGE)
    assert (histogram is not None) == (conventions is not Conventions.LATEST)
    if histogram is not None:
        sums = {
            point.attributes[attrs.GEN_AI_TOKEN_TYPE]: point.sum
            for point in histogram.data.data_points
        }
        assert sums == {"input": 120, "output": 40}
    counters = {name: found[name] for name in COUNTERS if name in found}
    if conventions is Conventions.DEFAULT:
        assert counters == {}
        return
    assert set(counters) == set(COUNTERS)
    for name, counter in counters.items():
        assert counter.unit == "{token}"
        assert counter.data.is_monotonic
        (point,) = counter.data.data_points
        assert point.value == COUNTERS[name]
        assert dict(point.attributes) == {
            attrs.GEN_AI_OPERATION_NAME: "chat",
            attrs.GEN_AI_PROVIDER_NAME: "anthropic",
            attrs.GEN_AI_REQUEST_MODEL: "claude-x",
            attrs.GEN_AI_RESPONSE_MODEL: "claude-x-1",
            attrs.GEN_AI_TOKEN_MODALITY: "unknown",
        }


def test_unreported_parts_add_nothing(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    telemetry = Telemetry(
        "tests",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        conventions=Conventions.LATEST,
    )
    call = telemetry.start(operation="chat", provider="openai", request_model="gpt-4o")
    telemetry.finish(call, usage=Usage(input_tokens=7, output_tokens=3, cache_read_input_tokens=0))
    found = _metrics(metric_reader)
    assert metrics.GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS in found
    assert metrics.GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS not in found
    assert metrics.GEN_AI_CLIENT_INFERENCE_USAGE_REASONING_OUTPUT_TOKENS not in found


@pytest.mark.parametrize(
    ("value", "histogram", "counters"),
    [("", True, False), ("gen_ai_latest_experimental", False, True)],
)
def test_instrumentors_read_the_variable_when_enabled(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    fake_llm: Any,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    histogram: bool,
    counters: bool,
) -> None:
    monkeypatch.setenv(OTEL_SEMCONV_STABILITY_OPT_IN, value)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="k", max_retries=0) as client:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Two sentences about owls."}],
            )
    finally:
        instrumentor.uninstrument()
    found = _metrics(metric_reader)
    assert (metrics.GEN_AI_CLIENT_TOKEN_USAGE in found) is histogram
    assert (metrics.GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS in found) is counters
    assert (metrics.GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS in found) is counters
