"""Forwarding received OTLP to a real downstream receiver: unchanged, batched, retried,
bounded, and never in the way of ingest."""

from __future__ import annotations

import base64
import json

import grpc
import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def export(endpoint: str, signal: str, body: bytes) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(f"/{SERVICES[signal]}/Export")(body, timeout=30)


def send_spans(endpoint: str, spans) -> bytes:
    body = encode_spans(spans).SerializeToString()
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(
            f"/{SERVICES['traces']}/Export",
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        response = stub(body, timeout=30)
    assert not response.partial_success.rejected_spans
    return body


def exporter(target, *, protocol: str = "grpc", **options):
    endpoint = target.grpc_endpoint if protocol == "grpc" else target.http_endpoint
    return {
        "name": "downstream",
        "protocol": protocol,
        "endpoint": endpoint,
        "tls": {"insecure": True},
        "batch": {"delay": "10ms"},
        **options,
    }


def resource(name: str) -> Resource:
    return Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=name))])


def metrics_request() -> bytes:
    point = NumberDataPoint(time_unix_nano=1_700_000_000_000_000_000, as_int=42)
    metric = Metric(name="queue.depth", gauge=Gauge(data_points=[point]))
    request = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=resource("app"), scope_metrics=[ScopeMetrics(metrics=[metric])]
            )
        ]
    )
    return request.SerializeToString()


def logs_request() -> bytes:
    record = LogRecord(
        time_unix_nano=1_700_000_000_000_000_000,
        severity_text="INFO",
        body=AnyValue(string_value="started"),
    )
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(resource=resource("app"), scope_logs=[ScopeLogs(log_records=[record])])
        ]
    )
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("grpc", "none"), ("grpc", "gzip"), ("http/protobuf", "none"), ("http/protobuf", "gzip")],
)
def test_spans_metrics_and_logs_arrive_unchanged(
    collector_factory, downstream, wait_for, make_spans, protocol, compression
):
    target, received = downstream()
    upstream = collector_factory(
        forward=[exporter(target, protocol=protocol, compression=compression)]
    )
    sent = [
        send_spans(
            upstream.grpc_endpoint,
            make_spans(
                3,
                tenant=f"tenant-{batch}",
                id_prefix=f"batch-{batch}",
                resource={"deployment.environment": "test"},
                extra={"app.custom": f"value-{batch}"},
            ),
        )
        for batch in range(4)
    ]
    export(upstream.grpc_endpoint, "metrics", metrics_request())
    export(upstream.grpc_endpoint, "logs", logs_request())
    wait_for(lambda: received.span_count() == 12, what="12 spans downstream")
    wait_for(lambda: received.merged("logs").resource_logs, what="the logs downstream")
    wait_for(lambda: received.merged("metrics").resource_metrics, what="the metrics downstream")

    original = ExportTraceServiceRequest()
    for body in sent:
        original.MergeFromString(body)
    arrived = received.merged("traces")
    # Each resource's spans are passed on byte for byte: ids, attributes, resource, scope.
    assert sorted(rs.SerializeToString() for rs in arrived.resource_spans) == sorted(
        rs.SerializeToString() for rs in original.resource_spans
    )
    spans = [span for rs in arrived.resource_spans for ss in rs.scope_spans for span in ss.spans]
    originals = [s for rs in original.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(span.span_id for span in spans) == sorted(span.span_id for span in originals)
    assert all(len(span.trace_id) == 16 and len(span.span_id) == 8 for span in spans)
    assert received.merged("metrics").SerializeToString() == metrics_request()
    assert received.merged("logs").SerializeToString() == logs_request()
    # The downstream meters the same calls; the upstream metered them first.
    assert len(target.events()) == len(upstream.events()) == 12
    forwarder = upstream.collector.forwarder
    # The downstream accepts a request before the upstream hears back: wait for the count.
    expected = {"traces": 4, "metrics": 1, "logs": 1}
    wait_for(lambda: forwarder.stats()["downstream"].sent == expected, what="the sent counts")
    assert forwarder.stats()["downstream"].queue_depth == 0


def otlp_json(request: ExportTraceServiceRequest) -> str:
    """OTLP/JSON: protobuf's JSON mapping, except that ids are hex, not base64."""
    data = json_format.MessageToDict(request)
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(data)


def test_otlp_json_is_forwarded_as_the_equivalent_protobuf(
    collector_factory, downstream, wait_for, make_spans
):
    target, received = downstream()
    upstream = collector_factory(forward=[exporter(target)])
    original = encode_spans(make_spans(2, tenant="json-tenant"))
    response = httpx.post(
        f"{upstream.http_endpoint}/v1/traces",
        content=otlp_json(original),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200
    wait_for(lambda: received.span_count() == 2, what="the spans downstream")
    assert received.merged("traces") == original


def test_only_the_configured_signals_are_forwarded(
    collector_factory, downstream, wait_for, make_spans
):
    target, received = downstream()
    upstream = collector_factory(forward=[exporter(target, signals=["logs"])])
    send_spans(upstream.grpc_endpoint, make_spans(2))
    export(upstream.grpc_endpoint, "logs", logs_request())
    wait_for(lambda: received.merged("logs").resource_logs, what="the logs downstream")
    assert {signal for signal, _ in received.bodies} == {"logs"}


def test_a_dead_downstream_neither_stops_nor_loses_metering(
    collector_factory, downstream, wait_for, make_spans
):
    target, received = downstream()
    upstream = collector_factory(
        forward=[
            exporter(
                target,
                queue_size=3,
                timeout="500ms",
                retry={"initial_backoff": "20ms", "max_backoff": "50ms", "max_elapsed": "300ms"},
            )
        ]
    )
    send_spans(upstream.grpc_endpoint, make_spans(2, id_prefix="before"))
    wait_for(lambda: received.span_count() == 2, what="spans before the downstream dies")
    target.stop()
    for batch in range(20):
        send_spans(upstream.grpc_endpoint, make_spans(1, id_prefix=f"after-{batch}"))
    # Every request was acknowledged and metered although nothing can be forwarded.
    assert len(upstream.events()) == 22
    forwarder = upstream.collector.forwarder

    def failures_counted() -> bool:
        stats = forwarder.stats()["downstream"]
        return stats.retries > 0 and stats.dropped.get(("traces", "retries_exhausted"), 0) > 0

    wait_for(failures_counted, what="retries and drops to be counted")
    stats = forwarder.stats()["downstream"]
    assert stats.queue_depth <= 3
    dropped = sum(stats.dropped.values())
    assert stats.sent["traces"] + dropped + stats.queue_depth <= 21
    assert stats.dropped.get(("traces", "queue_full"), 0) > 0


def test_shutdown_flushes_what_is_queued(collector_factory, downstream, wait_for, make_spans):
    target, received = downstream()
    upstream = collector_factory(forward=[exporter(target, batch={"delay": "5s"})])
    for batch in range(3):
        send_spans(upstream.grpc_endpoint, make_spans(2, id_prefix=f"b{batch}"))
    upstream.stop()
    assert received.span_count() == 6
    stats = upstream.collector.forwarder.stats()["downstream"]
    assert stats.sent["traces"] == 3
    assert not any(stats.dropped.values())


def test_requests_still_queued_at_the_deadline_are_dropped_and_counted(
    collector_factory, downstream, wait_for, make_spans
):
    target, _ = downstream()
    upstream = collector_factory(
        shutdown_grace="300ms",
        forward=[exporter(target, timeout="100ms", retry={"initial_backoff": "1s"})],
    )
    target.stop()
    for batch in range(3):
        send_spans(upstream.grpc_endpoint, make_spans(1, id_prefix=f"b{batch}"))
    upstream.stop()
    stats = upstream.collector.forwarder.stats()["downstream"]
    assert stats.dropped[("traces", "shutdown")] == 3
    assert stats.queue_depth == 0


def test_forwarding_resumes_when_the_downstream_comes_back(
    collector_factory, downstream, wait_for, make_spans
):
    first, received_first = downstream()
    endpoint = first.grpc_endpoint
    upstream = collector_factory(
        forward=[
            {
                "name": "downstream",
                "endpoint": endpoint,
                "tls": {"insecure": True},
                "batch": {"delay": "5ms"},
                "retry": {"initial_backoff": "50ms", "max_backoff": "200ms", "max_elapsed": "1m"},
            }
        ]
    )
    send_spans(upstream.grpc_endpoint, make_spans(1, id_prefix="first"))
    wait_for(lambda: received_first.span_count() == 1, what="the first span")
    first.stop()
    send_spans(upstream.grpc_endpoint, make_spans(1, id_prefix="while-down"))
    forwarder = upstream.collector.forwarder
    wait_for(lambda: forwarder.stats()["downstream"].retries > 0, what="a retry")
    # The same address again, served by a new downstream collector.
    _, received_second = downstream(receivers={"grpc": {"endpoint": endpoint}})
    send_spans(upstream.grpc_endpoint, make_spans(1, id_prefix="after"))
    wait_for(lambda: received_second.span_count() == 2, what="both spans at the new downstream")
    assert forwarder.stats()["downstream"].sent["traces"] == 3
    assert not any(forwarder.stats()["downstream"].dropped.values())
