"""The ``internal`` filter of usage queries on every backend: answered from the raw events
(rollups sum both kinds together), over a bounded range only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.collector.storage.conftest import BASE_NS
from tollmeter.collector.storage import InvalidQuery, Ledger, UsageQuery

# Whole days: without the filter the same range is answered from the rollups.
START = datetime.fromtimestamp(BASE_NS // 10**9 // 86400 * 86400, tz=timezone.utc)
END = START + timedelta(days=1)


def test_the_internal_filter_splits_usage_the_rollups_keep_together(
    ledger: Ledger, make_event
) -> None:
    ledger.append(
        [
            make_event(total_tokens=100, internal=True, workflow_id="evals"),
            make_event(total_tokens=30, internal=True),
            make_event(total_tokens=7, workflow_id="chat"),
            make_event(total_tokens=5, tenant_id="globex"),
        ]
    )

    def totals(internal: bool | None) -> dict[str | None, tuple[int, int]]:
        query = UsageQuery(start=START, end=END, internal=internal, group_by=("tenant",))
        return {r.tenant: (r.total_tokens, r.requests) for r in ledger.query_usage(query)}

    assert totals(None) == {"acme": (137, 3), "globex": (5, 1)}
    assert totals(True) == {"acme": (130, 2)}
    assert totals(False) == {"acme": (7, 1), "globex": (5, 1)}
    by_day = ledger.query_usage(UsageQuery(start=START, end=END, internal=True, window="day"))
    assert [(r.window_start, r.total_tokens) for r in by_day] == [(START, 130)]
    workflows = ledger.query_workflows(UsageQuery(start=START, end=END, internal=False))
    assert [r.workflow for r in workflows] == ["chat"]


@pytest.mark.parametrize(
    "bounds",
    [{}, {"start": START}, {"start": START, "end": START + timedelta(days=32)}],
)
def test_an_internal_filter_needs_a_bounded_range(bounds: dict[str, datetime]) -> None:
    with pytest.raises(InvalidQuery):
        UsageQuery(internal=True, **bounds)
