"""Usage per workflow run on every backend: calls, hidden and loop tokens, cost, bounds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.collector.storage.conftest import BASE_NS
from tollmeter.collector.storage import InvalidQuery, Ledger, UsageQuery

START = datetime.fromtimestamp(BASE_NS // 10**9, tz=timezone.utc) - timedelta(hours=1)
END = START + timedelta(days=1)


def test_loop_tokens_are_retries_and_calls_after_the_first(ledger: Ledger, make_event) -> None:
    ms = 1_000_000
    ledger.append(
        [
            # Appended out of time order: the first call is the earliest, not the first stored.
            make_event(
                workflow_id="run-1",
                event_time_ns=BASE_NS + 30 * ms,
                total_tokens=200,
                hidden_input_tokens=40,
                cost=Decimal("0.02"),
                currency="USD",
            ),
            make_event(
                workflow_id="run-1",
                event_time_ns=BASE_NS + 10 * ms,
                total_tokens=150,
                hidden_input_tokens=40,
                cost=Decimal("0.01"),
                currency="USD",
            ),
            make_event(
                workflow_id="run-1",
                event_time_ns=BASE_NS + 20 * ms,
                total_tokens=170,
                attempt=1,
                hidden_input_tokens=40,
                cost=Decimal("0.015"),
                currency="USD",
            ),
            # A workflow whose only call is a retry: all of it is loop.
            make_event(workflow_id="run-2", total_tokens=90, attempt=2),
            make_event(workflow_id="run-1", tenant_id="globex", total_tokens=10),
            make_event(total_tokens=1000),
        ]
    )
    rows = ledger.query_workflows(UsageQuery(start=START, end=END))
    assert [(r.tenant, r.workflow) for r in rows] == [
        ("acme", "run-1"),
        ("acme", "run-2"),
        ("globex", "run-1"),
    ]
    run, retry_only, other = rows
    assert (run.calls, run.total_tokens, run.loop_tokens, run.retries) == (3, 520, 370, 1)
    assert (run.hidden_input_tokens, run.cost, run.currency) == (120, Decimal("0.045"), "USD")
    assert (retry_only.loop_tokens, retry_only.retries) == (90, 1)
    assert (other.loop_tokens, other.hidden_input_tokens, other.cost) == (0, None, None)
    only_globex = ledger.query_workflows(UsageQuery(tenant="globex", start=START, end=END))
    assert [r.tenant for r in only_globex] == ["globex"]
    assert len(ledger.query_workflows(UsageQuery(start=START, end=END, limit=1))) == 1


@pytest.mark.parametrize(
    "query",
    [
        UsageQuery(),
        UsageQuery(start=START),
        UsageQuery(start=START, end=START + timedelta(days=32)),
        UsageQuery(start=START, end=END, group_by=("tenant",)),
        UsageQuery(start=START, end=END, window="day"),
    ],
)
def test_an_unbounded_or_mixed_workflow_query_is_refused(ledger: Ledger, query) -> None:
    with pytest.raises(InvalidQuery):
        ledger.query_workflows(query)
