"""OTLP/HTTP receiver: the real exporter, OTLP/JSON, gzip, and hostile bodies."""

from __future__ import annotations

import gzip
import json
from typing import Any, ClassVar

import httpx
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def post(running, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{running.http_endpoint}{path}", content=body, headers=headers, timeout=10)


def json_span(
    span_id: str = SPAN_ID,
    *,
    tenant: str = "acme",
    input_tokens: object = "120",
    trace_id: str = TRACE_ID,
) -> dict:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": "",
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": input_tokens}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 30}},
            {"key": "tollmeter.tenant.id", "value": {"stringValue": tenant}},
        ],
        "status": {"code": 1},
        "futureField": {"ignored": True},
    }


def json_request(*spans: dict) -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]
                    },
                    "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}],
                }
            ]
        }
    ).encode()


def protobuf_status(response: httpx.Response) -> status_pb2.Status:
    assert response.headers["content-type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(response.content)


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_real_exporter_spans_are_metered(collector, make_spans, tenant_totals, compression):
    exporter = OTLPSpanExporter(
        endpoint=f"{collector.http_endpoint}/v1/traces", compression=compression
    )
    try:
        assert exporter.export(make_spans(5, tenant="acme")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert tenant_totals(collector.events()) == {"acme": (5, 500, 100)}


def test_otlp_json_with_hex_ids_and_string_integers(collector):
    response = post(collector, "/v1/traces", json_request(json_span()), JSON)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    [event] = collector.events()
    assert (event.trace_id, event.span_id) == (TRACE_ID, SPAN_ID)
    assert (event.tenant_id, event.input_tokens, event.output_tokens) == ("acme", 120, 30)
    assert event.event_time_ns == 1_700_000_000_000_000_000


def test_json_partial_success_is_json(collector):
    body = json_request(json_span(), json_span("eee19b7ec3c1b175", input_tokens="-1"))
    response = post(collector, "/v1/traces", body, JSON)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "input_tokens" in partial["errorMessage"]
    assert len(collector.events()) == 1


@pytest.mark.parametrize(
    ("span", "reason"),
    [
        (json_span(trace_id="5b8e"), "traceId must be 32 hex digits"),
        (json_span(span_id="zzzzzzzzzzzzzzzz"), "spanId is not hexadecimal"),
        (json_span(span_id="ZW5jb2RlZA=="), "spanId must be 16 hex digits"),
        (json_span(input_tokens={"x": 1}), "ExportTraceServiceRequest"),
    ],
)
def test_json_with_bad_ids_or_types_is_400_json_status(collector, span, reason):
    response = post(collector, "/v1/traces", json_request(span), JSON)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert reason in response.json()["message"]
    assert collector.events() == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"resourceSpans": ' * 100_000],
    ids=["syntax", "array", "invalid-utf8", "deep"],
)
def test_broken_json_is_400(collector, body):
    response = post(collector, "/v1/traces", body, JSON)
    assert response.status_code == 400
    assert response.json()["code"] == code_pb2.INVALID_ARGUMENT


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x05abc"])
def test_undecodable_protobuf_is_400_with_status(collector, body):
    response = post(collector, "/v1/traces", body, PROTOBUF)
    assert response.status_code == 400
    status = protobuf_status(response)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in status.message


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/xml"])
def test_unknown_content_type_is_415(collector, make_spans, content_type):
    body = encode_spans(make_spans(1)).SerializeToString()
    response = post(collector, "/v1/traces", body, {"content-type": content_type})
    assert response.status_code == 415
    assert collector.events() == []


def test_unknown_content_encoding_is_415(collector, make_spans):
    body = encode_spans(make_spans(1)).SerializeToString()
    response = post(collector, "/v1/traces", body, {**PROTOBUF, "content-encoding": "br"})
    assert response.status_code == 415


def test_content_type_parameters_and_protobuf_response(collector, make_spans):
    body = encode_spans(make_spans(2)).SerializeToString()
    headers = {"content-type": "application/x-protobuf; charset=binary", "content-encoding": ""}
    response = post(collector, "/v1/traces", body, headers)
    assert response.status_code == 200
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()


class TestSizeLimits:
    LIMIT: ClassVar[dict[str, Any]] = {"receivers": {"http": {"max_body_bytes": "64KiB"}}}

    def test_oversized_body_is_413(self, collector_factory, make_spans):
        running = collector_factory(**self.LIMIT)
        body = encode_spans(make_spans(1, extra={"pad": "x" * 100_000})).SerializeToString()
        response = post(running, "/v1/traces", body, PROTOBUF)
        assert response.status_code == 413
        assert protobuf_status(response).code == code_pb2.RESOURCE_EXHAUSTED

    def test_oversized_chunked_body_is_413(self, collector_factory):
        running = collector_factory(**self.LIMIT)

        def chunks():
            for _ in range(100):
                yield b"\x00" * 4096

        response = httpx.post(
            f"{running.http_endpoint}/v1/traces", content=chunks(), headers=PROTOBUF, timeout=10
        )
        assert response.status_code == 413

    def test_gzip_bomb_hits_the_limit(self, collector_factory):
        running = collector_factory(**self.LIMIT)
        bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024), compresslevel=9)
        assert len(bomb) < 64 * 1024
        response = post(running, "/v1/traces", bomb, {**PROTOBUF, "content-encoding": "gzip"})
        assert response.status_code == 413

    def test_gzip_within_the_limit(self, collector_factory, make_spans, tenant_totals):
        running = collector_factory(**self.LIMIT)
        body = gzip.compress(encode_spans(make_spans(3)).SerializeToString())
        response = post(running, "/v1/traces", body, {**PROTOBUF, "content-encoding": "gzip"})
        assert response.status_code == 200
        assert tenant_totals(running.events()) == {"tenant-a": (3, 300, 60)}


@pytest.mark.parametrize(
    "body",
    [b"not gzip at all", gzip.compress(b"\x0a\x00" * 100)[:-12]],
    ids=["not-gzip", "truncated"],
)
def test_bad_gzip_is_400(collector, body):
    response = post(collector, "/v1/traces", body, {**PROTOBUF, "content-encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in protobuf_status(response).message


def test_metrics_and_logs_json(collector):
    metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "gen_ai.x"}]}]}]}
    logs = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{"traceId": TRACE_ID, "spanId": SPAN_ID}]}]}
        ]
    }
    for path, document in [("/v1/metrics", metrics), ("/v1/logs", logs)]:
        response = post(collector, path, json.dumps(document).encode(), JSON)
        assert response.status_code == 200, response.text
        assert response.json() == {}


def test_wrong_method_and_path(collector):
    assert httpx.get(f"{collector.http_endpoint}/v1/traces", timeout=10).status_code == 405
    assert post(collector, "/v1/spans", b"", PROTOBUF).status_code == 404


class TestIngestKeys:
    KEYS: ClassVar[dict[str, Any]] = {
        "management": {"ingest_keys": {"key-any": None, "key-acme": "acme"}}
    }

    def test_missing_or_unknown_key_is_401(self, collector_factory):
        running = collector_factory(**self.KEYS)
        for extra in [{}, {"x-tollmeter-key": "nope"}, {"authorization": "Basic a2V5LWFueTo="}]:
            response = post(running, "/v1/traces", json_request(json_span()), {**JSON, **extra})
            assert response.status_code == 401
            assert response.json()["code"] == code_pb2.UNAUTHENTICATED
        assert running.events() == []

    def test_exporter_with_key_header(self, collector_factory, make_spans, tenant_totals):
        running = collector_factory(**self.KEYS)
        exporter = OTLPSpanExporter(
            endpoint=f"{running.http_endpoint}/v1/traces",
            headers={"authorization": "Bearer key-acme"},
        )
        try:
            assert exporter.export(make_spans(2, tenant="acme")) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert tenant_totals(running.events()) == {"acme": (2, 200, 40)}

    def test_bound_key_spoofing_another_tenant_is_rejected(self, collector_factory):
        running = collector_factory(**self.KEYS)
        body = json_request(json_span(tenant="acme"), json_span("eee19b7ec3c1b175", tenant="evil"))
        response = post(running, "/v1/traces", body, {**JSON, "x-tollmeter-key": "key-acme"})
        assert response.status_code == 200
        assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
        assert [event.tenant_id for event in running.events()] == ["acme"]
