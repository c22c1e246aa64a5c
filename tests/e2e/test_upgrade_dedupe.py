"""Dedupe across the upgrade to tenant-scoped event ids, on a ledger the previous release wrote.

``tests/fixtures/release-0.1.0/`` holds a ledger of release 0.1.0, whose event ids did not
include the tenant. A batch that release acknowledged and a sender retries against this one
must still count once; the same response id reported for another tenant is that tenant's
call and is billed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1.0"


def _spans(tenant: str, response_id: str) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.id": response_id,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "tollmeter.tenant.id": tenant,
    }
    with provider.get_tracer("upgrade").start_as_current_span("chat", attributes=attributes):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _provider_events(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/events", params={"limit": 1000}, timeout=10)
    answer.raise_for_status()
    return [e for e in answer.json()["events"] if e["usage_source"] == "provider"]


def test_a_call_retried_across_the_upgrade_counts_once(collector_process, tmp_path: Path):
    workdir = tmp_path / "upgraded"
    shutil.copytree(FIXTURE, workdir)
    collector = collector_process(
        args=["--config", "collector.yaml"],
        # The fixture's dedupe keys were written when it was made: keep them in the window.
        env={"TOLLMETER_DEDUPE_WINDOW": "3650d"},
        workdir=workdir,
    )
    url = collector.management_url
    before = _provider_events(url)
    acme = {e["response_id"] for e in before if e["tenant_id"] == "acme"}
    retried = sorted(acme)[0]

    exporter = OTLPSpanExporter(endpoint=f"{collector.http_endpoint}/v1/traces", timeout=10)
    try:
        assert exporter.export(_spans("acme", retried)) is SpanExportResult.SUCCESS
        assert _provider_events(url) == before
        assert exporter.export(_spans("initech", retried)) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    after = _provider_events(url)
    assert len(after) == len(before) + 1
    assert (after[-1]["tenant_id"], after[-1]["response_id"]) == ("initech", retried)
