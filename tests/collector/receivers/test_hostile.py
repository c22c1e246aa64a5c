"""Hostile OTLP input: invalid UTF-8, random bytes, huge attributes, floods of tiny spans.
Each gets a clear answer, the collector keeps serving, other tenants' usage is untouched."""

from __future__ import annotations

import random

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = {"content-type": "application/x-protobuf"}


def grpc_call(endpoint: str, payload: bytes):
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(
            TRACES, response_deserializer=ExportTraceServiceResponse.FromString
        )
        return stub(payload, timeout=30)


def grpc_status(endpoint: str, payload: bytes) -> grpc.StatusCode:
    try:
        grpc_call(endpoint, payload)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def seeded(collector, make_spans, tenant_totals):
    """A collector already holding another tenant's usage."""
    grpc_call(
        collector.grpc_endpoint, encode_spans(make_spans(2, tenant="bystander")).SerializeToString()
    )
    before = tenant_totals(collector.events())["bystander"]
    yield collector
    assert tenant_totals(collector.events())["bystander"] == before
    assert httpx.get(f"{collector.management_url}/readyz", timeout=10).status_code == 200


def test_invalid_utf8_in_a_string_is_refused(seeded, make_spans):
    payload = encode_spans(make_spans(1, tenant="PLACEHOLDER")).SerializeToString()
    broken = payload.replace(b"PLACEHOLDER", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5")
    with pytest.raises(grpc.RpcError) as info:
        grpc_call(seeded.grpc_endpoint, broken)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    response = httpx.post(f"{seeded.http_endpoint}/v1/traces", content=broken, headers=PROTOBUF)
    assert response.status_code == 400


def test_random_bytes_never_crash_the_receivers(seeded):
    rng = random.Random(20240607)
    answered = {"ok": 0, "invalid": 0}
    for size in [1, 2, 7, 64, 512, 4096] * 8:
        payload = rng.randbytes(size)
        status = grpc_status(seeded.grpc_endpoint, payload)
        assert status in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
        answered["invalid" if status is grpc.StatusCode.INVALID_ARGUMENT else "ok"] += 1
        response = httpx.post(
            f"{seeded.http_endpoint}/v1/traces", content=payload, headers=PROTOBUF
        )
        assert response.status_code in (200, 400)
    assert answered["invalid"] > 0


def test_truncations_of_a_valid_request(seeded, make_spans):
    payload = encode_spans(make_spans(3, tenant="cut")).SerializeToString()
    for cut in range(1, len(payload), max(1, len(payload) // 40)):
        status = grpc_status(seeded.grpc_endpoint, payload[:cut])
        assert status in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)


def test_huge_attribute_values(collector, make_spans):
    huge_model = make_spans(1, id_prefix="model", extra={"gen_ai.request.model": "m" * 500_000})
    huge_tenant = make_spans(1, tenant="t" * 100_000, id_prefix="tenant")
    payload = encode_spans(huge_model + huge_tenant).SerializeToString()
    response = grpc_call(collector.grpc_endpoint, payload)
    assert response.partial_success.rejected_spans == 1
    assert "tenant id longer than" in response.partial_success.error_message
    [event] = collector.events()
    assert event.tenant_id == "tenant-a"
    assert 0 < len(event.request_model or "") < 500_000


def test_a_flood_of_tiny_spans(collector):
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=i.to_bytes(16, "big"),
                                span_id=i.to_bytes(8, "big"),
                                name="x",
                            )
                            for i in range(1, 20_001)
                        ]
                    )
                ]
            )
        ]
    )
    response = grpc_call(collector.grpc_endpoint, request.SerializeToString())
    assert response.partial_success.rejected_spans == 0
    assert collector.events() == []
