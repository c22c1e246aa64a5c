"""Backpressure: a full pipeline answers UNAVAILABLE / 503 with retry advice, and the
standard exporters retry until everything is committed exactly once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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

from tollmeter.collector.storage import SQLiteLedger, register_ledger

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class GatedLedger(SQLiteLedger):
    """A real SQLite ledger whose appends wait for a gate, then take ``delay_s``."""

    instances: list[GatedLedger] = []  # noqa: RUF012 - registry of opened test ledgers

    def __init__(self, path: str | None, **options: Any) -> None:
        super().__init__(path, **options)
        self.gate = threading.Event()
        self.gate.set()
        self.appending = threading.Event()
        self.delay_s = 0.0
        GatedLedger.instances.append(self)

    def append(self, events):
        self.appending.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        time.sleep(self.delay_s)
        return super().append(events)


register_ledger("gated-sqlite", GatedLedger)


def gated_collector(collector_factory, tmp_path: Path, max_pending_spans: int):
    running = collector_factory(
        storage={"url": f"gated-sqlite:///{tmp_path / 'gated.db'}"},
        ingest={"max_pending_spans": max_pending_spans, "commit_interval": "1ms"},
    )
    return running, GatedLedger.instances[-1]


def grpc_export(endpoint: str, payload: bytes) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(
            TRACES, response_deserializer=ExportTraceServiceResponse.FromString
        )
        return stub(payload, timeout=30)


def test_full_pipeline_answers_with_retry_advice(collector_factory, tmp_path, make_spans):
    running, ledger = gated_collector(collector_factory, tmp_path, max_pending_spans=2)
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


def test_real_exporters_retry_and_nothing_is_lost(collector_factory, tmp_path, make_spans):
    running, ledger = gated_collector(collector_factory, tmp_path, max_pending_spans=2)
    ledger.delay_s = 0.05
    batches = [make_spans(5, tenant=f"t{worker}", id_prefix=f"w{worker}") for worker in range(6)]

    def send(worker: int) -> list[SpanExportResult]:
        if worker % 2:
            exporter: Any = HttpSpanExporter(endpoint=f"{running.http_endpoint}/v1/traces")
        else:
            exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
        try:
            return [exporter.export([span]) for span in batches[worker]]
        finally:
            exporter.shutdown()

    with ThreadPoolExecutor(len(batches)) as pool:
        results = [result for found in pool.map(send, range(len(batches))) for result in found]
    assert results == [SpanExportResult.SUCCESS] * 30
    events = running.events()
    assert len(events) == 30
    assert len({event.event_id for event in events}) == 30
    assert running.collector.pipeline.stats().refused_full > 0
