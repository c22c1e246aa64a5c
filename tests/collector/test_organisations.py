"""Organisations in a real collector: the configured mapping, a shared quota over the
check API, and tenants that claim an organisation that is not theirs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.collector.conftest import RunningCollector, genai_spans
from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig

ADMIN = "org-admin"
TEAM_A_KEY = "ingest-team-a"
LONER_KEY = "ingest-loner"
SHARED_KEY = "ingest-shared"
ORGANISATIONS = {"acme": {"tenants": ["team-a", "team-b"]}, "globex": {"tenants": ["globex-1"]}}
LIMITS = {
    "reservation_ttl": "1h",
    "rules": [
        {
            "name": "org-day",
            "limit": 1000,
            "window": "day",
            "match": {"org": "*"},
            "group_by": ["org"],
        }
    ],
}


@pytest.fixture
def running(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory(
        organisations=ORGANISATIONS,
        limits=LIMITS,
        management={
            "admin_keys": [ADMIN],
            "ingest_keys": {TEAM_A_KEY: "team-a", LONER_KEY: "loner", SHARED_KEY: None},
        },
    )


def _check(running: RunningCollector, tenant: str, tokens: int, **extra: Any) -> dict[str, Any]:
    answer = httpx.post(
        f"{running.management_url}/api/v1/check",
        json={"tenant": tenant, "estimated_input_tokens": tokens, **extra},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def _send(running: RunningCollector, key: str, tenant: str, org: str, prefix: str) -> None:
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint, insecure=True, headers={"x-tollmeter-key": key}, timeout=10
    )
    spans = genai_spans(
        1, tenant=tenant, id_prefix=prefix, input_tokens=300, extra={"tollmeter.org.id": org}
    )
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _events_by_tenant(running: RunningCollector, count: int) -> dict[str, str | None]:
    deadline = time.monotonic() + 10
    while len(events := running.events()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return {event.tenant_id: event.org_id for event in events}


def test_every_problem_of_the_section_is_reported_with_its_key_path() -> None:
    with pytest.raises(InvalidConfig) as raised:
        Config.from_mapping(
            {
                "organisations": {
                    "acme": {"tenants": ["team-a"], "plan": "gold"},
                    "globex": {"tenants": ["team-a"]},
                    "initech": {"tenants": "team-c"},
                }
            }
        )
    keys = sorted(problem.key for problem in raised.value.problems)
    assert keys == [
        "organisations.acme.plan",
        "organisations.globex.tenants[0]",
        "organisations.initech.tenants",
    ]


def test_tenants_of_one_org_share_its_quota_through_the_check_api(
    running: RunningCollector,
) -> None:
    assert _check(running, "team-a", 600)["allowed"]
    denied = _check(running, "team-b", 600)
    assert (denied["allowed"], denied["denied_by"]) == (False, "org-day")
    assert _check(running, "team-b", 400)["allowed"]
    # Another organisation, and a tenant of none, are not held by acme's pool.
    assert _check(running, "globex-1", 600)["allowed"]
    assert _check(running, "loner", 5000)["allowed"]


def test_a_check_cannot_name_its_own_organisation(running: RunningCollector) -> None:
    answer = httpx.post(
        f"{running.management_url}/api/v1/check",
        json={"tenant": "team-a", "org": "globex", "estimated_input_tokens": 1},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert answer.status_code == 400


def test_claimed_organisations_count_only_where_the_configuration_is_silent(
    running: RunningCollector,
) -> None:
    # A tenant the configuration maps cannot move to another organisation...
    _send(running, TEAM_A_KEY, "team-a", "globex", "hostile-a")
    # ...nor can a tenant of none join one through a key bound to it...
    _send(running, LONER_KEY, "loner", "acme", "hostile-loner")
    # ...while a key bound to no tenant speaks for an unmapped tenant's organisation.
    _send(running, SHARED_KEY, "freelancer", "indie", "trusted")
    assert _events_by_tenant(running, 3) == {
        "team-a": "acme",
        "loner": None,
        "freelancer": "indie",
    }
    # Team-a's call (320 tokens in all) went to acme's pool, the loner's to none.
    left = _check(running, "team-b", 0, dry_run=True)["limits"]
    assert [(s["name"], s["remaining"]) for s in left] == [("org-day", 680.0)]


def _usage(running: RunningCollector, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{running.management_url}/api/v1/usage?{query}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    answer.raise_for_status()
    rows: list[dict[str, Any]] = answer.json()["rows"]
    return rows


def test_usage_by_organisation_maps_tenants_at_query_time(running: RunningCollector) -> None:
    calls = {"team-a": 2, "team-b": 1, "globex-1": 1, "loner": 1}
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint,
        insecure=True,
        headers={"x-tollmeter-key": SHARED_KEY},
        timeout=10,
    )
    try:
        for tenant, count in calls.items():
            spans = genai_spans(count, tenant=tenant, id_prefix=tenant, input_tokens=100)
            assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    _events_by_tenant(running, sum(calls.values()))
    by_org = _usage(running, "group_by=org")
    assert [(row["org"], row["requests"], row["input_tokens"]) for row in by_org] == [
        (None, 1, 100),
        ("acme", 3, 300),
        ("globex", 1, 100),
    ]
    (acme,) = _usage(running, "org=acme&group_by=model")
    assert (acme["model"], acme["tenant"], acme["requests"]) == ("gpt-4o-mini", None, 3)
    per_tenant = _usage(running, "org=acme&group_by=tenant,org")
    assert [(row["org"], row["tenant"], row["requests"]) for row in per_tenant] == [
        ("acme", "team-a", 2),
        ("acme", "team-b", 1),
    ]
    assert [row["requests"] for row in _usage(running, "org=globex")] == [1]
