"""In-memory OpenTelemetry pipelines for instrumentation tests, and what the installed SDKs offer.

The suite runs against every supported release of the openai and anthropic SDKs (one venv per
variant). Where a feature exists only in some releases, the fixtures here say so, checked on
the installed SDK itself rather than through tollmeter, so that a wrong capability check in
the instrumentation cannot hide behind the same check in the tests.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import anthropic
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[metric_reader])
    yield provider
    provider.shutdown()


def _wait_for_spans(
    exporter: InMemorySpanExporter, count: int, timeout: float = 10.0
) -> tuple[ReadableSpan, ...]:
    """Spans finished so far, waiting (bounded) for ``count`` of them: abandoned streams
    are finished by a background thread."""
    deadline = time.monotonic() + timeout
    spans = exporter.get_finished_spans()
    while len(spans) < count and time.monotonic() < deadline:
        time.sleep(0.01)
        spans = exporter.get_finished_spans()
    return tuple(spans)


def _metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """All data points of the metric ``name`` collected so far."""
    data = reader.get_metrics_data()
    points: list[Any] = []
    if data is None:
        return points
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


@pytest.fixture
def wait_spans(
    span_exporter: InMemorySpanExporter,
) -> Callable[[int], tuple[ReadableSpan, ...]]:
    """``wait_spans(n)``: the finished spans once there are ``n`` (bounded wait)."""
    return lambda count: _wait_for_spans(span_exporter, count)


@pytest.fixture
def points(metric_reader: InMemoryMetricReader) -> Callable[[str], list[Any]]:
    """``points(name)``: the data points of metric ``name`` collected now."""
    return lambda name: _metric_points(metric_reader, name)


def _anthropic_has_native_spans() -> bool:
    """Whether the installed Anthropic SDK can emit spans of its own (recent releases only)."""
    return "open_telemetry" in inspect.signature(anthropic.Anthropic).parameters


ANTHROPIC_NATIVE_SPANS = _anthropic_has_native_spans()


@pytest.fixture
def anthropic_native_spans() -> bool:
    """Whether the installed Anthropic SDK can emit spans of its own."""
    return ANTHROPIC_NATIVE_SPANS


# Decided at collection time: an SDK without native spans runs only the "no-sdk-spans" case.
@pytest.fixture(
    params=[True, False] if ANTHROPIC_NATIVE_SPANS else [False],
    ids=["sdk-spans", "no-sdk-spans"] if ANTHROPIC_NATIVE_SPANS else ["no-sdk-spans"],
)
def native(request: pytest.FixtureRequest) -> bool:
    """Whether the Anthropic SDK emits its own span for each call."""
    return bool(request.param)


@pytest.fixture
def claude_tracing(tracer_provider: TracerProvider) -> Callable[[bool], dict[str, Any]]:
    """``claude_tracing(native)``: the Anthropic client options that turn the SDK's own spans
    on (into the test's tracer provider) or off; none on an SDK that has no spans of its own."""

    def options(native: bool) -> dict[str, Any]:
        if not ANTHROPIC_NATIVE_SPANS:
            assert not native, "this Anthropic SDK has no spans of its own"
            return {}
        return {"open_telemetry": {"tracer_provider": tracer_provider} if native else False}

    return options


def _http_library(sdk: ModuleType) -> ModuleType:
    # The SDK's default HTTP client subclasses the library's own client.
    base = sdk.DefaultHttpxClient.__mro__[1]
    return importlib.import_module(base.__module__.partition(".")[0])


@pytest.fixture
def sdk_http() -> Callable[[ModuleType], ModuleType]:
    """``sdk_http(openai)``: the HTTP library an SDK package uses (``httpx`` in older releases,
    ``httpx2`` in newer ones), whose clients it accepts and whose errors it raises."""
    return _http_library


def _chat_helpers(client: Any) -> Any:
    completions = client.chat.completions
    return completions if hasattr(completions, "parse") else client.beta.chat.completions


@pytest.fixture
def chat_helpers() -> Callable[[Any], Any]:
    """``chat_helpers(client)``: where an OpenAI client keeps chat ``parse`` and ``stream``
    (under ``beta`` in releases before they became stable)."""
    return _chat_helpers
