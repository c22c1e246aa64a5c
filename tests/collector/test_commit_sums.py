"""A commit's per-minute sums, summed once by the ledger, feed meters and metrics exactly.

The oracle is the plainest reading of the events: each committed event added on its own
to its bucket and labels, as meters and the Prometheus counters counted before the
ledger handed its sums on.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollmeter.collector._meters import Meters
from tollmeter.collector._records import USAGE_SOURCES, UsageEvent
from tollmeter.collector.observability._usage import UsageMetrics
from tollmeter.collector.storage import WINDOWS, bucket_start, open_ledger

NOW_S = int(time.time())


@st.composite
def usage_events(draw: st.DrawFn) -> UsageEvent:
    input_tokens = draw(st.integers(0, 10**7))
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cache_read))
    output_tokens = draw(st.integers(0, 10**6))
    priced = draw(st.booleans())
    return UsageEvent(
        event_id=f"e{draw(st.integers(0, 200))}",
        # A few minutes, so that events share minutes and cells.
        event_time_ns=(NOW_S - draw(st.integers(0, 150))) * 10**9 + draw(st.integers(0, 10**9 - 1)),
        provider="openai",
        operation="chat",
        tenant_id=draw(st.sampled_from(["acme", "globex"])),
        project_id=draw(st.sampled_from([None, "web"])),
        feature=draw(st.sampled_from([None, None, "search"])),
        api_key_id=draw(st.sampled_from([None, None, "k1"])),
        request_model=draw(st.sampled_from(["gpt-4o", None])),
        response_model=draw(st.sampled_from([None, None, "gpt-4o-2024-08-06"])),
        usage_source=draw(st.sampled_from([*USAGE_SOURCES, "provider", "provider"])),
        input_tokens=input_tokens,
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
        output_tokens=output_tokens,
        reasoning_output_tokens=draw(st.integers(0, output_tokens)),
        total_tokens=input_tokens + output_tokens,
        cost=Decimal(draw(st.integers(0, 10**9))).scaleb(-12) if priced else None,
        currency=draw(st.sampled_from(["USD", "EUR"])) if priced else None,
        trace_id=draw(st.sampled_from([None, "0af7651916cd43dd8448eb211c80319c"])),
    )


def _dimensions(event: UsageEvent) -> tuple[str, str, str, str, str]:
    return (
        event.tenant_id,
        event.project_id or "",
        event.model,
        event.feature or "",
        event.api_key_id or "",
    )


def _expected_meters(events: list[UsageEvent]) -> dict[tuple[Any, ...], list[Any]]:
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for event in events:
        seconds = event.event_time_ns // 10**9
        estimated = event.usage_source != "provider"
        amount = [
            event.input_tokens,
            event.cache_read_input_tokens,
            event.cache_write_input_tokens,
            event.output_tokens,
            event.reasoning_output_tokens,
            event.total_tokens,
            1,
            event.total_tokens if estimated else 0,
            1 if estimated else 0,
            event.cost or Decimal(0),
        ]
        for window in WINDOWS:
            key = (window, bucket_start(window, seconds), *_dimensions(event))
            cell = cells.setdefault(key, [0] * 9 + [Decimal(0)])
            cell[:] = [a + b for a, b in zip(cell, amount, strict=True)]
    return cells


def _expected_metrics(events: list[UsageEvent]) -> tuple[Counter[Any], Counter[Any], Counter[Any]]:
    tokens: Counter[Any] = Counter()
    requests: Counter[Any] = Counter()
    costs: Counter[Any] = Counter()
    for event in events:
        labels = (event.tenant_id, event.project_id or "", event.model)
        buckets = {
            "input": event.uncached_input_tokens,
            "cache_read": event.cache_read_input_tokens,
            "cache_write": event.cache_write_input_tokens,
            "output": event.non_reasoning_output_tokens,
            "reasoning": event.reasoning_output_tokens,
        }
        for token_type, amount in buckets.items():
            if amount:
                tokens[(*labels, token_type, event.usage_source)] += amount
        requests[labels] += 1
        if event.cost is not None:
            costs[(event.tenant_id, event.currency)] += float(event.cost)
    return tokens, requests, costs


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(usage_events(), max_size=40))
def test_meters_and_metrics_from_the_commit_sums_equal_event_by_event_counts(
    events: list[UsageEvent],
) -> None:
    with open_ledger("memory://") as ledger:
        result = ledger.append(events)
    committed = result.committed

    meters = Meters()
    meters.apply_minutes(result.minutes)
    for (window, bucket, *dims), cell in _expected_meters(committed).items():
        at = datetime.fromtimestamp(bucket, tz=timezone.utc)
        filters = dict(zip(("tenant", "project", "model", "feature", "api_key"), dims, strict=True))
        totals = meters.totals(window, at=at, **filters)
        assert [getattr(totals, name) for name in _METER_FIELDS] == cell, (window, dims)

    metrics = UsageMetrics(max_tenants=100)
    metrics.apply_commit(committed, result.minutes)
    families = {family.name: family for family in metrics.collect()}
    got_tokens = Counter(
        {tuple(s.labels.values()): s.value for s in families["tollmeter_tokens"].samples}
    )
    got_requests = Counter(
        {tuple(s.labels.values()): s.value for s in families["tollmeter_requests"].samples}
    )
    got_costs = Counter(
        {tuple(s.labels.values()): s.value for s in families["tollmeter_cost"].samples}
    )
    tokens, requests, costs = _expected_metrics(committed)
    assert got_tokens == tokens
    assert got_requests == requests
    assert got_costs.keys() == costs.keys()
    for key, value in costs.items():
        assert abs(got_costs[key] - value) <= 1e-9 * max(1.0, value)


_METER_FIELDS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "total_tokens",
    "requests",
    "estimated_total_tokens",
    "estimated_requests",
    "cost",
)
