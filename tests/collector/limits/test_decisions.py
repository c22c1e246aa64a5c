"""The recent denials kept per tenant: newest first, bounded per tenant and in tenants."""

from __future__ import annotations

from tollmeter.collector.limits._decisions import RecentDecisions
from tollmeter.collector.limits._model import Notice


def _denied(tenant: str, request_id: str) -> Notice:
    return Notice(kind="request_denied", time=0.0, tenant=tenant, request_id=request_id)


def test_only_denials_are_kept_newest_first_and_bounded_per_tenant():
    decisions = RecentDecisions(per_tenant=3)
    decisions.record([_denied("acme", f"r{n}") for n in range(5)])
    decisions.record([Notice(kind="threshold_crossed", time=0.0, tenant="acme")])
    assert [n.request_id for n in decisions.of("acme")] == ["r4", "r3", "r2"]
    assert decisions.of("globex") == []


def test_a_flood_of_tenants_forgets_those_denied_least_recently():
    decisions = RecentDecisions(tenants=2)
    decisions.record([_denied("a", "1"), _denied("b", "1")])
    decisions.record([_denied("a", "2")])  # a is now the most recent
    decisions.record([_denied("c", "1")])
    assert [n.request_id for n in decisions.of("a")] == ["2", "1"]
    assert decisions.of("b") == []
    assert [n.request_id for n in decisions.of("c")] == ["1"]
