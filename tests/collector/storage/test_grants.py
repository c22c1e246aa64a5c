"""Grants in the ledger, on every backend: burnt in the events' transaction, exactly once."""

from __future__ import annotations

from decimal import Decimal

from tests.collector.storage.conftest import BASE_NS, EventFactory
from tollmeter.collector.grants import Grant
from tollmeter.collector.storage import Ledger, open_ledger

DAY_NS = 86_400 * 1_000_000_000


def _grant(grant_id: str, amount: int, **fields: object) -> Grant:
    values: dict[str, object] = {
        "grant_id": grant_id,
        "tenant_id": "acme",
        "amount": Decimal(amount),
        "unit": "tokens",
        "effective_ns": BASE_NS - DAY_NS,
        "expires_ns": BASE_NS + 30 * DAY_NS,
        "time_zone": "UTC",
        "created_ns": BASE_NS - DAY_NS,
    }
    values.update(fields)
    return Grant(**values)  # type: ignore[arg-type]


def _balances(ledger: Ledger) -> dict[str, Decimal]:
    return {grant.grant_id: balance for grant, balance in ledger.list_grants("acme")}


def test_usage_burns_earliest_expiry_then_priority_then_oldest(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ledger.create_grant(_grant("late", 1000, expires_ns=BASE_NS + 60 * DAY_NS, priority=9))
    ledger.create_grant(_grant("old", 100, created_ns=BASE_NS - 3 * DAY_NS))
    ledger.create_grant(_grant("young", 100, created_ns=BASE_NS - 2 * DAY_NS))
    ledger.create_grant(_grant("urgent", 100, created_ns=BASE_NS - DAY_NS, priority=1))
    ledger.append([make_event(total_tokens=150), make_event(total_tokens=100)])
    assert _balances(ledger) == {
        "late": Decimal(1000),
        "old": Decimal(0),
        "young": Decimal(50),
        "urgent": Decimal(0),
    }
    assert ledger.grant_balances("acme") == {
        "tokens": {"balance": Decimal(1050), "overage": Decimal(0)}
    }


def test_usage_beyond_every_grant_is_overage_and_no_balance_goes_negative(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ledger.create_grant(_grant("small", 100))
    ledger.append([make_event(total_tokens=150), make_event(tenant_id="other")])
    assert _balances(ledger) == {"small": Decimal(0)}
    assert ledger.grant_balances("acme") == {
        "tokens": {"balance": Decimal(0), "overage": Decimal(50)}
    }
    # A tenant without grants has no movements at all.
    assert ledger.grant_balances("other") == {}
    kinds = [(m.kind, m.amount) for _, m in ledger.grant_movements("acme", 0, 10)]
    assert kinds == [("granted", 100), ("consumed", -100), ("overage", -50)]


def test_a_replayed_batch_burns_nothing_again(ledger: Ledger, make_event: EventFactory) -> None:
    ledger.create_grant(_grant("g", 1000))
    batch = [make_event(), make_event()]
    ledger.append(batch)
    ledger.append(batch)
    assert _balances(ledger) == {"g": Decimal(700)}


def test_a_second_replica_burns_a_batch_the_first_committed_only_once(
    durable_url: str, make_event: EventFactory
) -> None:
    batch = [make_event(), make_event()]
    with open_ledger(durable_url) as first, open_ledger(durable_url) as second:
        first.create_grant(_grant("g", 1000))
        assert not second.create_grant(_grant("g", 5))
        first.append(batch)
        second.append(batch)
        assert _balances(second) == {"g": Decimal(700)}


def test_money_grants_burn_by_cost_in_their_currency(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ledger.create_grant(_grant("usd", 10, unit="USD"))
    ledger.append(
        [
            make_event(cost=Decimal("0.25"), currency="USD"),
            make_event(cost=Decimal("5"), currency="EUR"),
            make_event(cost=None),
        ]
    )
    assert _balances(ledger) == {"usd": Decimal("9.75")}


def test_a_grant_outside_its_dates_is_not_burnt(ledger: Ledger, make_event: EventFactory) -> None:
    ledger.create_grant(_grant("future", 100, effective_ns=BASE_NS + DAY_NS))
    ledger.create_grant(_grant("gone", 100, expires_ns=BASE_NS))
    ledger.append([make_event(event_time_ns=BASE_NS)])
    assert _balances(ledger) == {"future": Decimal(100), "gone": Decimal(100)}


def test_ending_rolls_over_up_to_the_cap_and_expires_the_rest_once(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ledger.create_grant(_grant("capped", 1000, expires_ns=BASE_NS + DAY_NS, rollover="300"))
    ledger.create_grant(_grant("kept", 100, expires_ns=BASE_NS + DAY_NS, rollover="all"))
    ledger.create_grant(_grant("lost", 100, expires_ns=BASE_NS + DAY_NS))
    ledger.append([make_event(total_tokens=150)])
    ended = ledger.end_grants(BASE_NS + DAY_NS)
    assert ledger.end_grants(BASE_NS + 2 * DAY_NS) == []
    summary = {e.grant.grant_id: (e.carried, e.expired) for e in ended}
    assert summary == {
        "capped": (Decimal(300), Decimal(550)),
        "kept": (Decimal(100), Decimal(0)),
        "lost": (Decimal(0), Decimal(100)),
    }
    balances = _balances(ledger)
    assert balances["capped"] == balances["kept"] == balances["lost"] == 0
    assert balances["capped.next"] == 300
    assert balances["kept.next"] == 100
    following = {e.grant.grant_id: e.next_grant for e in ended}["capped"]
    assert following is not None
    assert following.effective_ns == BASE_NS + DAY_NS
    # The next period is as long as the first: two days.
    assert following.expires_ns == BASE_NS + 3 * DAY_NS


def test_voiding_takes_off_the_rest_and_every_balance_is_its_movements(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ledger.create_grant(_grant("g", 1000))
    ledger.append([make_event()])
    voided = ledger.void_grant("g", BASE_NS + DAY_NS)
    assert voided is not None
    assert voided.voided_ns == BASE_NS + DAY_NS
    assert ledger.void_grant("missing", BASE_NS) is None
    ledger.append([make_event()])
    movements = [m for _, m in ledger.grant_movements(None, 0, 100)]
    assert [m.kind for m in movements] == ["granted", "consumed", "voided", "overage"]
    assert sum(m.amount for m in movements if m.grant_id == "g") == _balances(ledger)["g"] == 0


def test_a_tenant_id_no_database_can_hold_burns_its_grants_alike(
    ledger: Ledger, make_event: EventFactory
) -> None:
    tenant = "ac\x00me"
    ledger.create_grant(_grant("nul", 1000, tenant_id=tenant))
    ledger.append([make_event(tenant_id=tenant)])
    ((_, balance),) = ledger.list_grants(tenant)
    assert balance == 850
    assert ledger.grant_balances(tenant)["tokens"]["balance"] == 850


def test_an_organisation_grant_is_burnt_by_the_usage_of_its_tenants(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ledger.create_grant(_grant("pool", 1000, tenant_id="", org_id="acme-org"))
    ledger.append(
        [
            make_event(tenant_id="search", org_id="acme-org"),
            make_event(tenant_id="support", org_id="acme-org"),
            make_event(tenant_id="outsider"),
        ]
    )
    assert ledger.grant_balances(org="acme-org") == {
        "tokens": {"balance": Decimal(700), "overage": Decimal(0)}
    }
    movements = [m for _, m in ledger.grant_movements(None, 0, 10, org="acme-org")]
    assert [(m.tenant_id, m.kind, m.amount) for m in movements] == [
        ("", "granted", 1000),
        ("search", "consumed", -150),
        ("support", "consumed", -150),
    ]
    assert ledger.grant_balances("outsider") == {}


def test_a_state_key_is_claimed_once_among_the_processes_sharing_a_ledger(
    durable_url: str,
) -> None:
    with open_ledger(durable_url) as first, open_ledger(durable_url) as second:
        assert first.claim_state("grants.low_balance.g", "1")
        assert not second.claim_state("grants.low_balance.g", "2")
        assert not first.claim_state("grants.low_balance.g", "3")
        assert second.get_state("grants.low_balance.g") == "1"
