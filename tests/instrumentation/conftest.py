"""In-memory OpenTelemetry pipelines for instrumentation tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

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
