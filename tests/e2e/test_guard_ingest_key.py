"""The guard with a tenant-bound ingest key instead of an admin key, end to end.

A real ``tollmeter collector`` process requiring keys, an app using the real OpenAI SDK
against the fake LLM server, instrumented and exporting its spans over OTLP/HTTP with
the same ingest key it gives the guard. The key checks its own tenant, is refused for
another one, and a denied call never reaches the provider.
"""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation import Guard, GuardUnavailable, QuotaExceeded, attribute
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv.attributes import TOLLMETER_RESERVATION_ID

ADMIN = "e2e-admin"
ACME_KEY = "e2e-ingest-acme"
QUOTA = 2000


@pytest.fixture
def keyed_collector(collector_process, tmp_path):
    config = tmp_path / "tollmeter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "management": {"admin_keys": [ADMIN], "ingest_keys": {ACME_KEY: "acme"}},
                "limits": {
                    "reservation_ttl": "1h",
                    "rules": [{"name": "quota", "limit": QUOTA, "window": "day"}],
                },
            }
        )
    )
    return collector_process(args=["--config", str(config)])


@pytest.fixture
def app(fake_llm, keyed_collector):
    """The instrumented app: spans go out with the ingest key only when flushed."""
    exporter = OTLPSpanExporter(
        endpoint=f"{keyed_collector.http_endpoint}/v1/traces",
        headers={"x-tollmeter-key": ACME_KEY},
        timeout=10,
    )
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    seen = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(seen))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider())
    client = openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0)
    yield keyed_collector, client, provider, seen
    client.close()
    instrumentor.uninstrument()
    provider.shutdown()


def _chat(client, max_tokens: int):
    return client.chat.completions.create(
        model="gpt-4o-mini",
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": "Is this call within the quota?"}],
    )


def _status(collector, tenant: str) -> dict:
    answer = httpx.get(
        f"{collector.management_url}/api/v1/tenants/{tenant}/status",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()


def _remaining(collector, tenant: str) -> float:
    limits = _status(collector, tenant)["limits"]
    return limits[0]["remaining"] if limits else float(QUOTA)


def test_a_bound_ingest_key_guards_its_tenant(app, fake_llm):
    collector, client, provider, seen = app
    guard = Guard(collector.management_url, api_key=ACME_KEY, fail_mode="closed").install()
    try:
        with attribute(tenant="acme"):
            reply = _chat(client, max_tokens=1500)
            before = len(fake_llm.requests())
            with pytest.raises(QuotaExceeded) as denied:
                _chat(client, max_tokens=1500)
        assert len(fake_llm.requests()) == before
        assert denied.value.limit == "quota"
    finally:
        guard.uninstall()
    (span,) = seen.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[TOLLMETER_RESERVATION_ID]

    # The span, sent with the same key, replaces the reservation with the actual usage.
    assert provider.force_flush(10_000)
    used = reply.usage.prompt_tokens + reply.usage.completion_tokens
    deadline = time.monotonic() + 30
    while _remaining(collector, "acme") != QUOTA - used and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert _remaining(collector, "acme") == QUOTA - used
    assert _status(collector, "acme")["active_reservations"] == 0
    usage = httpx.get(
        f"{collector.management_url}/api/v1/usage?group_by=tenant",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    ).json()
    assert [(row["tenant"], row["requests"]) for row in usage["rows"]] == [("acme", 1)]


def test_a_bound_ingest_key_cannot_spend_another_tenants_quota(app, fake_llm):
    collector, client, _, seen = app
    guard = Guard(collector.management_url, api_key=ACME_KEY, fail_mode="closed").install()
    try:
        before = len(fake_llm.requests())
        with attribute(tenant="globex"), pytest.raises(GuardUnavailable):
            _chat(client, max_tokens=100)
        assert len(fake_llm.requests()) == before
    finally:
        guard.uninstall()
    assert seen.get_finished_spans() == ()
    assert _status(collector, "globex")["active_reservations"] == 0
    assert _remaining(collector, "globex") == QUOTA


def test_a_guard_without_a_known_key_is_refused(app, fake_llm):
    collector, client, _, _ = app
    for key in (None, "not-a-key", ADMIN.upper()):
        guard = Guard(collector.management_url, api_key=key, fail_mode="closed").install()
        try:
            before = len(fake_llm.requests())
            with attribute(tenant="acme"), pytest.raises(GuardUnavailable):
                _chat(client, max_tokens=100)
            assert len(fake_llm.requests()) == before
        finally:
            guard.uninstall()
    assert _remaining(collector, "acme") == QUOTA


def test_an_unattributed_call_is_charged_to_the_keys_tenant(app, fake_llm):
    collector, client, _, seen = app
    guard = Guard(collector.management_url, api_key=ACME_KEY, fail_mode="closed").install()
    try:
        _chat(client, max_tokens=100)  # no attribute(): the bound key names the tenant
    finally:
        guard.uninstall()
    (span,) = seen.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[TOLLMETER_RESERVATION_ID]
    assert _status(collector, "acme")["active_reservations"] == 1
