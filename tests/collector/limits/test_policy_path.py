"""The policy path: a checked call's usage event records the limits' decision on it.

A real collector in-process, the real OpenAI SDK against the fake LLM server, the guard
checking before each call, and spans exported over OTLP/gRPC with tenant-bound keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.collector.conftest import RunningCollector, genai_spans
from tollmeter.collector._organisations import OrganisationsConfig
from tollmeter.collector.limits import CheckRequest, LimitsService
from tollmeter.collector.limits._policy import MAX_POLICY_BYTES, policy_text
from tollmeter.collector.storage import open_ledger
from tollmeter.instrumentation import Guard, attribute
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv.attributes import TOLLMETER_RESERVATION_ID

ADMIN = "policy-admin"
TEAM_A_KEY = "policy-ingest-team-a"
GLOBEX_KEY = "policy-ingest-globex"
RULES = [
    {
        "name": "org-day",
        "limit": 100_000,
        "window": "day",
        "match": {"org": "*"},
        "group_by": ["org"],
    },
    {"name": "tenant-day", "limit": 50_000, "window": "day"},
    {
        "name": "search-day",
        "limit": 20_000,
        "window": "day",
        "match": {"project": "search"},
        "group_by": ["tenant", "project"],
    },
]


@pytest.fixture
def running(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory(
        organisations={"acme": {"tenants": ["team-a"]}},
        limits={"reservation_ttl": "1h", "rules": RULES},
        management={
            "admin_keys": [ADMIN],
            "ingest_keys": {TEAM_A_KEY: "team-a", GLOBEX_KEY: "globex"},
        },
    )


@pytest.fixture
def app(running: RunningCollector, fake_llm: Any) -> Iterator[tuple[openai.OpenAI, Any]]:
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint,
        insecure=True,
        headers={"x-tollmeter-key": TEAM_A_KEY},
        timeout=10,
    )
    seen = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(seen))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider())
    client = openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0)
    guard = Guard(running.management_url, api_key=TEAM_A_KEY, fail_mode="closed").install()
    yield client, seen
    guard.uninstall()
    client.close()
    instrumentor.uninstrument()
    provider.shutdown()


def _events(running: RunningCollector, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.get(
            f"{running.management_url}/api/v1/events",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        answer.raise_for_status()
        events: list[dict[str, Any]] = answer.json()["events"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def test_a_checked_call_records_the_limits_and_the_decision(running, app) -> None:
    client, seen = app
    with attribute(tenant="team-a", project="search"):
        client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        )
    (span,) = seen.get_finished_spans()
    reservation = span.attributes[TOLLMETER_RESERVATION_ID]
    (event,) = _events(running, 1)
    assert (event["tenant_id"], event["org_id"], event["reservation_id"]) == (
        "team-a",
        "acme",
        reservation,
    )
    assert json.loads(event["policy"]) == {
        "decision": "allow",
        "reservation": reservation,
        "limits": ["org-day", "tenant-day", "search-day"],
    }


def test_another_tenants_reservation_is_never_joined(running) -> None:
    checked = httpx.post(
        f"{running.management_url}/api/v1/check",
        json={"tenant": "team-a", "estimated_input_tokens": 100},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    ).json()
    rid = checked["reservation_id"]
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint,
        insecure=True,
        headers={"x-tollmeter-key": GLOBEX_KEY},
        timeout=10,
    )
    try:
        spans = genai_spans(1, tenant="globex", extra={TOLLMETER_RESERVATION_ID: rid})
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    (event,) = _events(running, 1)
    assert (event["tenant_id"], event["reservation_id"], event["policy"]) == ("globex", rid, None)


def test_an_oversize_policy_keeps_a_prefix_of_its_limits_and_says_so(
    make_engine, make_limits, clock
) -> None:
    names = [f"limit-{i:03d}-" + "x" * 40 for i in range(40)]
    rules = [{"name": name, "limit": 1_000_000, "window": "day"} for name in names]
    engine = make_engine(make_limits(*rules), clock=clock)
    result, _ = engine.check(CheckRequest(tenant="acme", estimated_input_tokens=10))
    reservation = engine.reservation(result.reservation_id)
    text = policy_text(reservation)
    assert len(text.encode()) <= MAX_POLICY_BYTES
    policy = json.loads(text)
    assert policy["truncated"] is True
    assert (policy["decision"], policy["reservation"]) == ("allow", result.reservation_id)
    kept = policy["limits"]
    assert 0 < len(kept) < len(names)
    assert kept == names[: len(kept)]


def test_an_unchecked_call_has_no_policy(running) -> None:
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint,
        insecure=True,
        headers={"x-tollmeter-key": TEAM_A_KEY},
        timeout=10,
    )
    try:
        assert exporter.export(genai_spans(1, tenant="team-a")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    (event,) = _events(running, 1)
    assert (event["org_id"], event["reservation_id"], event["policy"]) == ("acme", None, None)


def test_expired_and_reconciled_reservations_carry_their_policy_and_org(make_limits, clock) -> None:
    downgrade = {
        "name": "tenant-soft",
        "limit": 100,
        "window": "day",
        "action": "downgrade",
        "downgrade_model": "gpt-4o-mini",
    }
    ledger = open_ledger("memory://")
    service = LimitsService(
        make_limits(RULES[0], downgrade, reservation_ttl="1m"),
        ledger=ledger,
        clock=clock,
        organisations=OrganisationsConfig.from_mapping(
            {"acme": {"tenants": ["team-a"]}}, "organisations"
        ),
    )
    try:
        expiring = service.check(CheckRequest(tenant="team-a", estimated_input_tokens=500))
        reconciled = service.check(CheckRequest(tenant="team-a", estimated_input_tokens=10))
        event = service.reconcile(reconciled.reservation_id, {"input_tokens": 8})
        assert event is not None
        clock.advance(61)
        assert service.expire() == 1
        by_reservation = {e.reservation_id: e for e in ledger.read_events(0, 10)}
        for result in (expiring, reconciled):
            stored = by_reservation[result.reservation_id]
            assert stored.org_id == "acme"
            assert json.loads(stored.policy or "") == {
                "decision": "downgrade",
                "reservation": result.reservation_id,
                "limits": ["org-day", "tenant-soft"],
                "downgrade": "gpt-4o-mini",
            }
    finally:
        service.close()
        ledger.close()
