"""Forwarding between two real collector processes, seen through ``/metrics``: spans
arrive unchanged downstream, and killing the downstream neither stops nor slows
metering upstream while retries and drops are counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families


def spans(count: int, prefix: str) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "forwarding-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for index in range(count):
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.id": f"{prefix}-{index}",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 2,
            "tollmeter.tenant.id": "acme",
            "app.request": f"{prefix}-{index}",
        }
        with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, attributes=attributes):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def events(management_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{management_url}/api/v1/events", params={"limit": 1000}, timeout=10)
    response.raise_for_status()
    return list(response.json()["events"])


def metric(management_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{management_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def until(timeout: float, what: str) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_forwarding_survives_a_killed_downstream(collector_process, tmp_path):
    downstream = collector_process()
    config = {
        "forward": [
            {
                "name": "downstream",
                "endpoint": downstream.grpc_endpoint,
                "tls": {"insecure": True},
                "queue_size": 4,
                # Generous for a busy machine: a send answered late would count as failed
                # although it arrived. A killed downstream refuses at once whatever this is.
                "timeout": "10s",
                "batch": {"delay": "5ms"},
                "retry": {"initial_backoff": "10ms", "max_backoff": "50ms", "max_elapsed": "300ms"},
            }
        ]
    }
    config_file = tmp_path / "upstream.yaml"
    config_file.write_text(yaml.safe_dump(config))
    upstream = collector_process(args=["--config", str(config_file)])
    exporter = OTLPSpanExporter(endpoint=upstream.grpc_endpoint, insecure=True, timeout=30)
    try:
        before = spans(5, "before")
        assert exporter.export(before) is SpanExportResult.SUCCESS
        for _ in until(20, "the spans downstream"):
            if len(events(downstream.management_url)) == 5:
                break
        sent = {
            (format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in before
        }
        arrived = {(e["trace_id"], e["span_id"]) for e in events(downstream.management_url)}
        assert arrived == sent

        downstream.kill()
        for batch in range(20):
            assert exporter.export(spans(1, f"after-{batch}")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()

    # Everything was metered upstream although nothing more can be forwarded.
    assert len(events(upstream.management_url)) == 25
    url = upstream.management_url
    for _ in until(20, "retries and drops in /metrics"):
        if (
            metric(url, "tollmeter_forward_retries_total") > 0
            and metric(url, "tollmeter_forward_dropped_requests_total", reason="retries_exhausted")
            > 0
        ):
            break
    assert metric(url, "tollmeter_forward_sent_requests_total", signal="traces") >= 1
    assert metric(url, "tollmeter_forward_queue_depth") <= 4
    assert metric(url, "tollmeter_spans_accepted_total") == 25
