"""Migration 10: plan assignments every process sharing a ledger reads, and the plan on
each usage event (SQLite, in memory and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.export._schema import events_to_table
from tollmeter.collector.storage import Ledger, open_ledger


def test_an_assignment_is_replaced_and_read_by_another_connection(ledger_url: str) -> None:
    with open_ledger(ledger_url) as writer:
        assert writer.tenant_plans() == {}
        writer.set_tenant_plan("acme", "free", 1)
        writer.set_tenant_plan("globex", "pro", 2)
        writer.set_tenant_plan("acme", "pro", 3)
        assert writer.tenant_plans() == {"acme": "pro", "globex": "pro"}
        if ledger_url == "memory://":
            return  # an in-memory ledger has no second reader
        with open_ledger(ledger_url) as reader:
            assert reader.tenant_plans() == {"acme": "pro", "globex": "pro"}


def test_the_plan_of_an_event_reads_back_and_reaches_parquet(
    ledger: Ledger, make_event: Callable[..., UsageEvent]
) -> None:
    ledger.append([make_event(response_id="a", plan="free"), make_event(response_id="b")])
    first, second = ledger.read_events(0, 10)
    assert (first.plan, second.plan) == ("free", None)
    table = events_to_table([first, second], collector_id="c1")
    assert table.column("plan").to_pylist() == ["free", None]
