"""Limits at organisation, tenant and project level: a call reserves on all three at once,
all or nothing, on both engines, so tenants share their organisation's pool."""

from __future__ import annotations

import threading
from typing import Any

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import CheckRequest

ORG_DAY = {
    "name": "org-day",
    "limit": 10_000,
    "window": "day",
    "match": {"org": "*"},
    "group_by": ["org"],
}
TENANT_DAY = {"name": "tenant-day", "limit": 1000, "window": "day"}
PROJECT_DAY = {
    "name": "project-day",
    "limit": 300,
    "window": "day",
    "match": {"project": "*"},
    "group_by": ["tenant", "project"],
}


def _req(
    tenant: str, inp: int, *, org: str | None = "acme", project: str | None = None
) -> CheckRequest:
    return CheckRequest(tenant=tenant, project=project, estimated_input_tokens=inp, org=org)


def _remaining(engine: Any, request: CheckRequest) -> dict[str, float]:
    result, _ = engine.check(request, dry_run=True)
    return {status.name: status.remaining for status in result.limits}


def test_tenants_of_one_org_share_its_quota_under_concurrent_checks(
    make_engine, make_limits, clock
):
    # Every tenant could take all 64 calls alone; the organisation's pool holds 10.
    tenants = {**TENANT_DAY, "limit": 1_000_000}
    engine = make_engine(make_limits(ORG_DAY, tenants), clock=clock)
    barrier = threading.Barrier(64)
    admitted: dict[str, int] = {"team-a": 0, "team-b": 0}
    lock = threading.Lock()

    def worker(tenant: str) -> None:
        barrier.wait(timeout=10)
        result, _ = engine.check(_req(tenant, 1000))
        if result.allowed:
            with lock:
                admitted[tenant] += 1

    threads = [
        threading.Thread(target=worker, args=("team-a" if i % 2 else "team-b",)) for i in range(64)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert admitted["team-a"] + admitted["team-b"] == 10
    denied, _ = engine.check(_req("team-a", 1000))
    assert (denied.allowed, denied.denied_by) == (False, "org-day")
    # Another organisation's tenant, and a tenant of none, have pools of their own.
    assert engine.check(_req("globex-1", 1000, org="globex"))[0].allowed
    assert engine.check(_req("loner", 1000, org=None))[0].allowed


def test_a_full_project_denies_and_reserves_on_no_level(make_engine, make_limits, clock):
    engine = make_engine(make_limits(ORG_DAY, TENANT_DAY, PROJECT_DAY), clock=clock)
    assert engine.check(_req("team-a", 300, project="search"))[0].allowed
    denied, _ = engine.check(_req("team-a", 100, project="search"))
    assert (denied.allowed, denied.denied_by) == (False, "project-day")
    # Neither the tenant's nor the organisation's pool was charged by the denied call.
    assert _remaining(engine, _req("team-a", 0, project="chat")) == {
        "org-day": 9700.0,
        "tenant-day": 700.0,
        "project-day": 300.0,
    }


def test_a_full_tenant_denies_a_project_with_room_and_reserves_on_no_level(
    make_engine, make_limits, clock
):
    engine = make_engine(make_limits(ORG_DAY, TENANT_DAY, PROJECT_DAY), clock=clock)
    for project in ("p1", "p2", "p3"):
        assert engine.check(_req("team-a", 300, project=project))[0].allowed
    denied, _ = engine.check(_req("team-a", 200, project="p4"))
    assert (denied.allowed, denied.denied_by) == (False, "tenant-day")
    assert _remaining(engine, _req("team-a", 0, project="p4")) == {
        "org-day": 9100.0,
        "tenant-day": 100.0,
        "project-day": 300.0,
    }
    # The organisation's pool still serves its other tenants.
    assert engine.check(_req("team-b", 200, project="p4"))[0].allowed


def test_a_full_org_denies_its_tenants_and_reserves_on_no_level(make_engine, make_limits, clock):
    org = {**ORG_DAY, "limit": 500}
    engine = make_engine(make_limits(org, TENANT_DAY, PROJECT_DAY), clock=clock)
    assert engine.check(_req("team-b", 450))[0].allowed
    denied, _ = engine.check(_req("team-a", 100, project="search"))
    assert (denied.allowed, denied.denied_by) == (False, "org-day")
    assert _remaining(engine, _req("team-a", 0, project="search")) == {
        "org-day": 50.0,
        "tenant-day": 1000.0,
        "project-day": 300.0,
    }


def test_usage_settles_every_level_and_unreserved_usage_charges_the_org(
    make_engine, make_limits, clock
):
    engine = make_engine(make_limits(ORG_DAY, TENANT_DAY, PROJECT_DAY), clock=clock)
    reserved, _ = engine.check(_req("team-a", 300, project="search"))
    spans = [
        # The reserved call used 100 tokens, not 300: every level gets the 200 back.
        UsageEvent(
            event_id="e-1",
            event_time_ns=int(clock() * 1e9),
            provider="openai",
            operation="chat",
            tenant_id="team-a",
            project_id="search",
            org_id="acme",
            input_tokens=100,
            total_tokens=100,
            reservation_id=reserved.reservation_id,
        ),
        # A call never checked still counts against its organisation's pool.
        UsageEvent(
            event_id="e-2",
            event_time_ns=int(clock() * 1e9),
            provider="openai",
            operation="chat",
            tenant_id="team-b",
            org_id="acme",
            input_tokens=400,
            total_tokens=400,
        ),
    ]
    engine.record_usage(spans)
    assert _remaining(engine, _req("team-a", 0, project="search")) == {
        "org-day": 9500.0,
        "tenant-day": 900.0,
        "project-day": 200.0,
    }
