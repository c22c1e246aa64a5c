"""Migration 10: plan assignments every process sharing a ledger reads, and the plan on
each usage event, which usage queries filter and group by (SQLite, in memory and
PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.collector.storage.conftest import BASE_NS
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.export._schema import events_to_table
from tollmeter.collector.storage import InvalidQuery, Ledger, UsageQuery, open_ledger

# Whole days: without the plan the same range is answered from the rollups.
START = datetime.fromtimestamp(BASE_NS // 10**9 // 86400 * 86400, tz=timezone.utc)
END = START + timedelta(days=1)


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


def test_an_assignment_is_removed_for_every_connection(ledger_url: str) -> None:
    with open_ledger(ledger_url) as writer:
        writer.set_tenant_plan("acme", "pro", 1)
        writer.set_tenant_plan("globex", "pro", 2)
        assert writer.clear_tenant_plan("acme") is True
        assert writer.clear_tenant_plan("acme") is False
        assert writer.clear_tenant_plan("initech") is False
        assert writer.tenant_plans() == {"globex": "pro"}
        if ledger_url == "memory://":
            return  # an in-memory ledger has no second reader
        with open_ledger(ledger_url) as reader:
            assert reader.tenant_plans() == {"globex": "pro"}


def test_the_plan_of_an_event_reads_back_and_reaches_parquet(
    ledger: Ledger, make_event: Callable[..., UsageEvent]
) -> None:
    ledger.append([make_event(response_id="a", plan="free"), make_event(response_id="b")])
    first, second = ledger.read_events(0, 10)
    assert (first.plan, second.plan) == ("free", None)
    table = events_to_table([first, second], collector_id="c1")
    assert table.column("plan").to_pylist() == ["free", None]


def test_usage_is_filtered_and_grouped_by_the_plan_of_each_event(
    ledger: Ledger, make_event: Callable[..., UsageEvent]
) -> None:
    ledger.append(
        [
            make_event(total_tokens=100, plan="free", workflow_id="digest"),
            make_event(total_tokens=30, plan="free", tenant_id="globex"),
            # acme upgraded within the day: its usage splits by plan within one rollup bucket.
            make_event(total_tokens=7, plan="pro", workflow_id="chat"),
            make_event(total_tokens=5),
        ]
    )

    def totals(**query: Any) -> list[tuple[Any, ...]]:
        rows = ledger.query_usage(UsageQuery(start=START, end=END, **query))
        return [(r.plan, r.tenant, r.total_tokens, r.requests) for r in rows]

    assert totals(group_by=("plan",)) == [
        (None, None, 5, 1),
        ("free", None, 130, 2),
        ("pro", None, 7, 1),
    ]
    assert totals(group_by=("tenant", "plan")) == [
        (None, "acme", 5, 1),
        ("free", "acme", 100, 1),
        ("pro", "acme", 7, 1),
        ("free", "globex", 30, 1),
    ]
    assert totals(plan="free", group_by=("tenant",)) == [
        (None, "acme", 100, 1),
        (None, "globex", 30, 1),
    ]
    by_day = ledger.query_usage(UsageQuery(start=START, end=END, plan="pro", window="day"))
    assert [(r.window_start, r.total_tokens) for r in by_day] == [(START, 7)]
    workflows = ledger.query_workflows(UsageQuery(start=START, end=END, plan="pro"))
    assert [r.workflow for r in workflows] == ["chat"]


@pytest.mark.parametrize(
    "query",
    [
        {"plan": "pro"},
        {"group_by": ("plan",), "start": START},
        {"plan": "pro", "start": START, "end": START + timedelta(days=32)},
    ],
)
def test_the_plan_needs_a_bounded_range(query: dict[str, Any]) -> None:
    with pytest.raises(InvalidQuery, match="plan"):
        UsageQuery(**query)
