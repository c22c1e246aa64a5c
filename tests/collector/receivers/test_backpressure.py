"""Backpressure: a full pipeline answers UNAVAILABLE / 503 with retry advice, and the
standard exporters retry until everything is committed exactly once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def grpc_export(endpoint: str, payload: bytes) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(
            TRACES, response_deserializer=ExportTraceServiceResponse.FromString
        )
        return stub(payload, timeout=30)


def test_full_pipeline_answers_with_retry_advice(gated_collector, make_spans):
    running, ledger = gated_collector(max_pending_spans=2)
    ledger.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            grpc_export, running.grpc_endpoint, encode_spans(make_spans(2)).SerializeToString()
        )
        assert ledger.appending.wait(10)
        payload = encode_spans(make_spans(1, id_prefix="late")).SerializeToString()

        with pytest.raises(grpc.RpcError) as info:
            grpc_export(running.grpc_endpoint, payload)
        error = info.value
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        trailing = dict(error.trailing_metadata())
        status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
        assert status.code == code_pb2.UNAVAILABLE
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry)
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 1.5
        assert error_details_pb2.RetryInfo.FromString(trailing["google.rpc.retryinfo-bin"]) == retry

        response = httpx.post(
            f"{running.http_endpoint}/v1/traces",
            content=payload,
            headers={"content-type": "application/x-protobuf"},
            timeout=10,
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] in ("1", "2")
        assert status_pb2.Status.FromString(response.content).code == code_pb2.UNAVAILABLE

        ledger.gate.set()
        assert not first.result(30).HasField("partial_success")
    assert len(running.events()) == 2
    assert running.collector.pipeline.stats().refused_full == 2


def test_real_exporters_retry_and_nothing_is_lost(gated_collector, make_spans):
    running, ledger = gated_collector(max_pending_spans=2)
    pipeline = running.collector.pipeline
    ledger.delay_s = 0.02
    batches = [make_spans(3, tenant=f"t{worker}", id_prefix=f"w{worker}") for worker in range(4)]

    def send(worker: int) -> list[SpanExportResult]:
        if worker % 2:
            exporter: Any = HttpSpanExporter(endpoint=f"{running.http_endpoint}/v1/traces")
        else:
            exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
        try:
            return [exporter.export([span]) for span in batches[worker]]
        finally:
            exporter.shutdown()

    # Hold the commits until the pipeline has refused someone, so that refusals are
    # certain, then let everything drain while the exporters retry.
    ledger.gate.clear()
    with ThreadPoolExecutor(len(batches)) as pool:
        sending = pool.map(send, range(len(batches)))
        for _ in range(600):
            if pipeline.stats().refused_full:
                break
            time.sleep(0.05)
        ledger.gate.set()
        results = [result for found in sending for result in found]
    assert pipeline.stats().refused_full > 0
    assert results == [SpanExportResult.SUCCESS] * 12
    events = running.events()
    assert len(events) == 12
    assert len({event.event_id for event in events}) == 12


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_failed_commit_is_retried_by_the_exporter(gated_collector, make_spans, transport):
    running, ledger = gated_collector()
    ledger.failures_left = 1
    if transport == "grpc":
        exporter: Any = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    else:
        exporter = HttpSpanExporter(endpoint=f"{running.http_endpoint}/v1/traces")
    try:
        assert exporter.export(make_spans(4)) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert ledger.failures_left == 0
    assert len(running.events()) == 4
    assert running.collector.pipeline.stats().commit_failures == 1
