"""The grants service on a real ledger: its gate, its hooks, and its routes in a collector."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.collector.conftest import RunningCollector
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.grants import Grant
from tollmeter.collector.grants._config import GrantsConfig
from tollmeter.collector.grants._service import GrantsService
from tollmeter.collector.limits._model import CheckRequest, Notice
from tollmeter.collector.storage import Ledger, open_ledger

NOW_S = 1_773_500_966.0
HOUR_NS = 3_600 * 1_000_000_000
ADMIN = "grants-admin"
ACME_KEY = "grants-ingest-acme"


class Clock:
    def __init__(self) -> None:
        self.now = NOW_S

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{tmp_path}/ledger.db")


def _grant(grant_id: str, amount: int, tenant: str = "acme", **fields: object) -> Grant:
    values: dict[str, object] = {
        "grant_id": grant_id,
        "tenant_id": tenant,
        "amount": Decimal(amount),
        "unit": "tokens",
        "effective_ns": int(NOW_S * 1e9) - HOUR_NS,
        "expires_ns": int(NOW_S * 1e9) + HOUR_NS,
        "time_zone": "UTC",
    }
    values.update(fields)
    return Grant(**values)  # type: ignore[arg-type]


def _use(
    ledger: Ledger, service: GrantsService, event_id: str, tokens: int, **fields: object
) -> None:
    event = UsageEvent(
        event_id=event_id,
        event_time_ns=int(NOW_S * 1e9),
        provider="openai",
        operation="chat",
        tenant_id="acme",
        input_tokens=tokens,
        output_tokens=0,
        total_tokens=tokens,
    )
    event = dataclasses.replace(event, **fields)  # type: ignore[arg-type]
    service.on_committed(ledger.append([event]).committed)


def test_the_gate_blocks_only_tenants_under_block_whose_grants_are_used_up(
    ledger: Ledger,
) -> None:
    clock = Clock()
    config = GrantsConfig(overage="block", tenants={"lenient": "allow"})
    service = GrantsService(config, ledger, clock=clock)
    service.create(_grant("g", 100))
    service.create(_grant("l", 100, tenant="lenient"))
    acme, lenient = CheckRequest(tenant="acme"), CheckRequest(tenant="lenient")
    assert service.gate(acme) is None
    _use(ledger, service, "e1", 100)
    denied = service.gate(acme)
    assert denied is not None
    assert (denied.allowed, denied.denied_by, denied.reason) == (
        False,
        "grants",
        "grants exhausted",
    )
    assert service.gate(lenient) is None
    # Tenants without grants are not governed by them.
    assert service.gate(CheckRequest(tenant="nobody")) is None
    # A new grant lifts the block at once; at its expiry the block is back.
    service.create(_grant("top-up", 10))
    assert service.gate(acme) is None
    clock.now += 3600
    assert service.gate(acme) is not None


def test_an_organisation_grant_is_shared_by_its_tenants_after_their_own(
    ledger: Ledger,
) -> None:
    clock = Clock()
    config = GrantsConfig(overage="block")
    service = GrantsService(config, ledger, clock=clock, org_of_tenant={"search": "acme-org"})
    service.create(_grant("own", 50, tenant="search"))
    # The organisation's grant expires later: the tenant's own burns first.
    org_grant = _grant("pool", 100, tenant="", org_id="acme-org")
    service.create(dataclasses.replace(org_grant, expires_ns=org_grant.expires_ns + HOUR_NS))
    _use(ledger, service, "e1", 80, tenant_id="search", org_id="acme-org")
    balances = {g.grant_id: b for g, b in ledger.list_grants(None)}
    assert balances == {"own": Decimal(0), "pool": Decimal(70)}
    assert ledger.grant_balances(org="acme-org")["tokens"]["balance"] == 70
    # The tenant's history shows what it burnt of the organisation's grant.
    burnt = [(m.grant_id, m.amount) for _, m in ledger.grant_movements("search", 0, 10)]
    assert burnt == [("own", 50), ("own", -50), ("pool", -30)]
    assert service.gate(CheckRequest(tenant="search")) is None
    _use(ledger, service, "e2", 100, tenant_id="search", org_id="acme-org")
    assert ledger.grant_balances("search")["tokens"] == {
        "balance": Decimal(0),
        "overage": Decimal(30),
    }
    assert service.gate(CheckRequest(tenant="search")) is not None


def test_low_balance_fires_once_per_grant_and_not_again_after_a_restart(
    ledger: Ledger,
) -> None:
    notices: list[Notice] = []
    config = GrantsConfig(low_balance_fraction=0.25)
    service = GrantsService(config, ledger, notify=notices.append, clock=Clock())
    service.create(_grant("g", 100))
    _use(ledger, service, "e1", 70)
    assert notices == []
    _use(ledger, service, "e2", 10)
    _use(ledger, service, "e3", 10)
    assert [(n.kind, n.detail and n.detail["balance"]) for n in notices] == [
        ("grant_low_balance", "20")
    ]
    restarted: list[Notice] = []
    again = GrantsService(config, ledger, notify=restarted.append, clock=Clock())
    _use(ledger, again, "e4", 5)
    assert restarted == []


def test_a_grant_running_low_is_announced_by_one_replica_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    told: list[Notice] = []
    config = GrantsConfig(low_balance_fraction=0.5)
    with open_ledger(url) as first, open_ledger(url) as second:
        one = GrantsService(config, first, notify=told.append, clock=Clock())
        other = GrantsService(config, second, notify=told.append, clock=Clock())
        one.create(_grant("g", 100))
        other.refresh()
        _use(first, one, "e1", 60)
        other.refresh()
        one.refresh()
    assert [n.kind for n in told] == ["grant_low_balance"]


def test_grant_expired_fires_once_with_what_rolled_over(ledger: Ledger) -> None:
    notices: list[Notice] = []
    clock = Clock()
    service = GrantsService(GrantsConfig(), ledger, notify=notices.append, clock=clock)
    service.create(_grant("g", 100, rollover="30"))
    _use(ledger, service, "e1", 50)
    service.tick()
    assert notices == []
    clock.now += 3600
    service.tick()
    service.tick()
    assert [n.to_json() for n in notices] == [
        {
            "event": "grant_expired",
            "time": notices[0].to_json()["time"],
            "tenant": "acme",
            "org": None,
            "grant_id": "g",
            "unit": "tokens",
            "expired": "20",
            "rolled_over": "30",
            "next_grant_id": "g.next",
        }
    ]


@pytest.fixture
def keyed(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory(
        management={"admin_keys": [ADMIN], "ingest_keys": {ACME_KEY: "acme"}},
        organisations={"acme-org": {"tenants": ["acme"]}},
    )


def test_routes_admin_manages_and_a_tenant_key_sees_only_its_own(keyed: RunningCollector) -> None:
    api = f"{keyed.management_url}/api/v1/grants"
    admin = {"authorization": f"Bearer {ADMIN}"}
    tenant = {"authorization": f"Bearer {ACME_KEY}"}
    body = {"tenant": "acme", "amount": "12.50", "unit": "USD", "grant_id": "credit"}
    assert httpx.post(api, json=body, headers=tenant, timeout=10).status_code == 403
    assert httpx.post(api, json=body, headers=admin, timeout=10).status_code == 201
    assert httpx.post(api, json=body, headers=admin, timeout=10).status_code == 409
    bad = {"tenant": "acme", "amount": -1, "unit": "dollars", "time_zone": "Mars/Olympus"}
    refused = httpx.post(api, json=bad, headers=admin, timeout=10)
    assert refused.status_code == 400
    assert (
        httpx.post(
            api, json={**body, "grant_id": "x", "colour": 1}, headers=admin, timeout=10
        ).status_code
        == 400
    )

    own = httpx.get(f"{api}/balance", headers=tenant, timeout=10)
    assert own.status_code == 200
    assert own.json()["units"] == {"USD": {"balance": "12.50", "overage": "0"}}
    other = httpx.get(f"{api}/balance", params={"tenant": "globex"}, headers=tenant, timeout=10)
    assert other.status_code == 403
    assert httpx.get(api, headers=tenant, timeout=10).status_code == 403

    pool = {"org": "acme-org", "amount": 100, "grant_id": "pool"}
    assert httpx.post(api, json=pool, headers=admin, timeout=10).status_code == 201
    both = {**pool, "tenant": "acme", "grant_id": "both"}
    assert httpx.post(api, json=both, headers=admin, timeout=10).status_code == 400
    shared = httpx.get(f"{api}/balance", headers=tenant, timeout=10).json()["org"]
    assert shared["org"] == "acme-org"
    assert shared["units"] == {"tokens": {"balance": "100", "overage": "0"}}
    by_org = httpx.get(f"{api}/balance", params={"org": "acme-org"}, headers=admin, timeout=10)
    assert by_org.json()["units"] == shared["units"]
    assert (
        httpx.get(
            f"{api}/balance", params={"org": "acme-org"}, headers=tenant, timeout=10
        ).status_code
        == 403
    )

    voided = httpx.post(f"{api}/credit/void", headers=admin, timeout=10)
    assert voided.status_code == 200
    assert httpx.post(f"{api}/missing/void", headers=admin, timeout=10).status_code == 404
    history = httpx.get(f"{api}/history", headers=tenant, timeout=10).json()
    assert [(m["kind"], m["amount"]) for m in history["movements"]] == [
        ("granted", "12.50"),
        ("voided", "-12.50"),
    ]
