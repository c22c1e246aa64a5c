"""OTLP/gRPC receiver: the real OpenTelemetry exporter, and raw calls for every error path."""

from __future__ import annotations

from typing import Any, ClassVar

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics
from opentelemetry.sdk.trace.export import SpanExportResult

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def call(
    endpoint: str,
    method: str,
    payload: bytes,
    response_type=ExportTraceServiceResponse,
    metadata=(),
):
    with grpc.insecure_channel(
        endpoint, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        stub = channel.unary_unary(method, response_deserializer=response_type.FromString)
        return stub(payload, timeout=10, metadata=metadata)


def call_error(endpoint: str, method: str, payload: bytes, metadata=()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(endpoint, method, payload, metadata=metadata)
    return info.value


def test_real_exporter_spans_are_metered(collector, make_spans, tenant_totals) -> None:
    exporter = OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True)
    try:
        assert exporter.export(make_spans(7, tenant="acme")) is SpanExportResult.SUCCESS
        assert exporter.export(make_spans(3, tenant="globex", id_prefix="g")) is (
            SpanExportResult.SUCCESS
        )
    finally:
        exporter.shutdown()
    assert tenant_totals(collector.events()) == {"acme": (7, 700, 140), "globex": (3, 300, 60)}


def test_a_retried_batch_counts_once(collector, make_spans) -> None:
    payload = encode_spans(make_spans(4)).SerializeToString()
    for _ in range(3):
        assert not call(collector.grpc_endpoint, TRACES, payload).HasField("partial_success")
    assert len(collector.events()) == 4


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff\xff", b"\x0a\x05abc", b"\x0a" + b"\x0a\x02" * 5000],
    ids=["garbage", "truncated", "deeply-nested"],
)
def test_undecodable_is_invalid_argument(collector, payload: bytes) -> None:
    error = call_error(collector.grpc_endpoint, TRACES, payload)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in error.details()
    assert collector.events() == []


def test_oversized_is_resource_exhausted(collector_factory, make_spans) -> None:
    running = collector_factory(receivers={"grpc": {"max_message_bytes": "16KiB"}})
    big = make_spans(1, extra={"padding": "x" * 40_000})
    error = call_error(running.grpc_endpoint, TRACES, encode_spans(big).SerializeToString())
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    small = encode_spans(make_spans(2)).SerializeToString()
    call(running.grpc_endpoint, TRACES, small)
    assert len(running.events()) == 2


def test_invalid_span_is_rejected_alone(collector, make_spans, tenant_totals) -> None:
    good = make_spans(3)
    bad = make_spans(1, input_tokens=-5, id_prefix="bad")
    response = call(collector.grpc_endpoint, TRACES, encode_spans(good + bad).SerializeToString())
    assert response.partial_success.rejected_spans == 1
    assert "input_tokens" in response.partial_success.error_message
    assert tenant_totals(collector.events()) == {"tenant-a": (3, 300, 60)}


def test_metrics_and_logs_are_accepted_and_offered_to_the_sink(collector_factory) -> None:
    received: list[tuple[str, bytes]] = []
    running = collector_factory(signal_sink=lambda signal, data: received.append((signal, data)))
    metrics = ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[Metric(name="m")])])]
    )
    logs = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord()])])]
    )
    assert (
        call(
            running.grpc_endpoint,
            METRICS,
            metrics.SerializeToString(),
            ExportMetricsServiceResponse,
        )
        == ExportMetricsServiceResponse()
    )
    assert (
        call(running.grpc_endpoint, LOGS, logs.SerializeToString(), ExportLogsServiceResponse)
        == ExportLogsServiceResponse()
    )
    assert received == [
        ("metrics", metrics.SerializeToString()),
        ("logs", logs.SerializeToString()),
    ]
    error = call_error(running.grpc_endpoint, METRICS, b"\xff\xff")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_a_failing_sink_does_not_fail_ingest(collector_factory, make_spans) -> None:
    def broken(signal: str, data: bytes) -> None:
        raise RuntimeError("forwarder down")

    running = collector_factory(signal_sink=broken)
    call(running.grpc_endpoint, TRACES, encode_spans(make_spans(2)).SerializeToString())
    assert len(running.events()) == 2


class TestIngestKeys:
    KEYS: ClassVar[dict[str, Any]] = {
        "management": {"ingest_keys": {"key-any": None, "key-acme": "acme"}}
    }

    def test_missing_or_unknown_key_is_unauthenticated(self, collector_factory, make_spans):
        running = collector_factory(**self.KEYS)
        payload = encode_spans(make_spans(1)).SerializeToString()
        for metadata in [(), (("x-tollmeter-key", "wrong"),), (("authorization", "Bearer no"),)]:
            error = call_error(running.grpc_endpoint, TRACES, payload, metadata=metadata)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
        try:
            assert exporter.export(make_spans(1)) is SpanExportResult.FAILURE
        finally:
            exporter.shutdown()
        assert running.events() == []

    def test_valid_keys_in_either_header(self, collector_factory, make_spans, tenant_totals):
        running = collector_factory(**self.KEYS)
        exporter = OTLPSpanExporter(
            endpoint=running.grpc_endpoint, insecure=True, headers={"x-tollmeter-key": "key-any"}
        )
        try:
            assert exporter.export(make_spans(2, tenant="t1")) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        payload = encode_spans(make_spans(3, tenant="t2", id_prefix="b")).SerializeToString()
        call(
            running.grpc_endpoint, TRACES, payload, metadata=(("authorization", "Bearer key-any"),)
        )
        assert tenant_totals(running.events()) == {"t1": (2, 200, 40), "t2": (3, 300, 60)}

    def test_bound_key_cannot_report_for_another_tenant(
        self, collector_factory, make_spans, tenant_totals
    ):
        running = collector_factory(**self.KEYS)
        spans = (
            make_spans(2, tenant="acme", id_prefix="own")
            + make_spans(3, tenant="globex", id_prefix="spoof")
            + make_spans(1, tenant=None, id_prefix="anon")
        )
        response = call(
            running.grpc_endpoint,
            TRACES,
            encode_spans(spans).SerializeToString(),
            metadata=(("x-tollmeter-key", "key-acme"),),
        )
        assert response.partial_success.rejected_spans == 3
        assert response.partial_success.error_message
        assert tenant_totals(running.events()) == {"acme": (3, 300, 60)}
