"""One tenant's reports never suppress another's: dedupe is scoped to the tenant."""

from __future__ import annotations

import logging

import grpc
import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _export(endpoint: str, payload: bytes) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(
            TRACES, response_deserializer=ExportTraceServiceResponse.FromString
        )
        response: ExportTraceServiceResponse = stub(payload, timeout=30)
        return response


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_the_same_response_ids_from_two_tenants_are_both_billed(
    collector, make_spans, tenant_totals, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="tollmeter.collector._shared_ids")
    first = encode_spans(make_spans(3, tenant="tenant-a", id_prefix="shared")).SerializeToString()
    _export(collector.grpc_endpoint, first)
    _export(collector.grpc_endpoint, first)  # a retried batch stays exactly once
    second = encode_spans(
        make_spans(3, tenant="tenant-b", id_prefix="shared", input_tokens=7, output_tokens=1)
    ).SerializeToString()
    _export(collector.grpc_endpoint, second)
    _export(collector.grpc_endpoint, second)

    assert tenant_totals(collector.events()) == {
        "tenant-a": (3, 300, 60),
        "tenant-b": (3, 21, 3),
    }
    url = collector.management_url
    assert _metric(url, "tollmeter_usage_events_shared_response_id_total") == 3
    assert _metric(url, "tollmeter_usage_events_duplicate_total") == 6
    warnings = [r for r in caplog.records if r.name == "tollmeter.collector._shared_ids"]
    assert len(warnings) == 1
    assert "another tenant" in warnings[0].getMessage()


def test_two_instrumentations_of_one_tenant_still_count_once(
    collector, make_spans, tenant_totals
) -> None:
    ours = make_spans(2, tenant="tenant-a", id_prefix="call")
    theirs = make_spans(
        2,
        tenant="tenant-a",
        id_prefix="call",
        extra={"llm.request.type": "chat", "gen_ai.system": "openai"},
    )
    _export(collector.grpc_endpoint, encode_spans(ours).SerializeToString())
    _export(collector.grpc_endpoint, encode_spans(theirs).SerializeToString())
    assert tenant_totals(collector.events()) == {"tenant-a": (2, 200, 40)}
