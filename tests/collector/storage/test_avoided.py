"""Avoided usage in every ledger backend: stored once per (tenant, avoided id), apart from
usage events, and summed per tenant, feature and model with one row per currency."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.collector.storage.conftest import BASE_NS
from tollmeter.collector._avoided import AvoidedCall
from tollmeter.collector.storage import Ledger

END = 2**63 - 1


def _hit(
    avoided_id: str,
    tenant: str = "acme",
    *,
    feature: str | None = "faq",
    model: str = "gpt-4o-mini",
    tokens: tuple[int, int] = (100, 20),
    cost: str | None = "0.000027",
    currency: str | None = "USD",
    time_ns: int = BASE_NS,
) -> AvoidedCall:
    return AvoidedCall(
        avoided_id=avoided_id,
        tenant_id=tenant,
        feature=feature,
        provider="openai",
        model=model,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=None if cost is None else Decimal(cost),
        currency=currency,
        time_ns=time_ns,
    )


def test_avoided_calls_are_stored_once_per_tenant_and_id(ledger: Ledger) -> None:
    first = _hit("hit-1")
    stored = ledger.append_avoided([first, first, _hit("hit-1", "globex")])
    assert [(c.tenant_id, c.sequence) for c in stored] == [("acme", 1), ("globex", 2)]
    assert ledger.append_avoided([first]) == []
    # Avoided usage is not usage: the events stay empty.
    assert ledger.read_events(0, 10) == []
    (acme,) = ledger.summarize_avoided(start_ns=0, end_ns=END, tenant="acme", group_by=[])
    assert acme == {
        "calls": 1,
        "avoided_input_tokens": 100,
        "avoided_output_tokens": 20,
        "avoided_total_tokens": 120,
        "saved_cost": "0.000027",
        "currency": "USD",
        "unpriced_calls": 0,
    }


def test_the_summary_groups_by_tenant_feature_and_model(ledger: Ledger) -> None:
    ledger.append_avoided(
        [
            _hit("a", cost="0.1"),
            _hit("b", cost="0.2", tokens=(1, 2)),
            _hit("c", feature="search", model="gpt-4o"),
            _hit("d", "globex", cost=None, currency=None),
            _hit("e", "globex", cost="7", currency="EUR"),
            _hit("f", time_ns=BASE_NS + 10),
        ]
    )
    rows = ledger.summarize_avoided(
        start_ns=BASE_NS, end_ns=BASE_NS + 1, tenant=None, group_by=["tenant", "feature", "model"]
    )
    picked = {
        (r["tenant"], r["feature"], r["model"], r["currency"]): (
            r["calls"],
            r["avoided_total_tokens"],
            r["saved_cost"],
            r["unpriced_calls"],
        )
        for r in rows
    }
    assert picked == {
        ("acme", "faq", "gpt-4o-mini", "USD"): (2, 123, "0.3", 0),
        ("acme", "search", "gpt-4o", "USD"): (1, 120, "0.000027", 0),
        ("globex", "faq", "gpt-4o-mini", None): (1, 120, None, 1),
        ("globex", "faq", "gpt-4o-mini", "EUR"): (1, 120, "7", 0),
    }
    by_model = ledger.summarize_avoided(start_ns=0, end_ns=END, tenant="acme", group_by=["model"])
    assert [(r["model"], r["calls"]) for r in by_model] == [("gpt-4o", 1), ("gpt-4o-mini", 3)]
    with pytest.raises(ValueError, match="cannot group"):
        ledger.summarize_avoided(start_ns=0, end_ns=END, tenant=None, group_by=["project"])
