"""Internal usage: a real collector marks the operator's own calls, by span attribute or
environment, and only for spans sent without a tenant-bound ingest key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

OPERATOR_KEY = "operator-key-0123456789"
ACME_KEY = "acme-key-0123456789"


def _send(collector: Any, key: str, spans: Sequence[ReadableSpan]) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"{collector.http_endpoint}/v1/traces",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_internal_by_attribute_or_environment_but_never_from_a_tenant_key(
    collector_factory: Callable[..., Any], make_spans: Callable[..., list[ReadableSpan]]
) -> None:
    collector = collector_factory(
        ingest={"internal_environments": ["staging"]},
        management={"ingest_keys": {OPERATOR_KEY: None, ACME_KEY: "acme"}},
    )
    internal = {"tollmeter.internal": True}
    staging = {"tollmeter.environment": "staging"}
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="evals", extra=internal))
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="stage", extra=staging))
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="customer"))
    # The tenant's own key cannot turn its usage internal, by either means.
    _send(collector, ACME_KEY, make_spans(1, tenant="acme", id_prefix="sneaky", extra=internal))
    _send(collector, ACME_KEY, make_spans(1, tenant="acme", id_prefix="sneaky-env", extra=staging))

    marks = {event.response_id: event.internal for event in collector.events()}
    assert marks == {
        "evals-0": True,
        "stage-0": True,
        "customer-0": False,
        "sneaky-0": False,
        "sneaky-env-0": False,
    }
