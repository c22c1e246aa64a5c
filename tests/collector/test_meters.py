"""Meters: live totals per window and dimension, bounded, rebuilt from the ledger."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollmeter.collector._meters import Meters, MeterTotals
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import open_ledger

NOW_S = int(time.time())
NOW = datetime.fromtimestamp(NOW_S, tz=timezone.utc)


def event(number: int, *, seconds_ago: int = 0, **fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "event_id": f"e{number}",
        "event_time_ns": (NOW_S - seconds_ago) * 10**9,
        "provider": "openai",
        "operation": "chat",
        "tenant_id": "acme",
        "input_tokens": 10,
        "cache_read_input_tokens": 4,
        "output_tokens": 5,
        "reasoning_output_tokens": 1,
        "total_tokens": 15,
        "response_model": "gpt-4o",
    }
    values.update(fields)
    return UsageEvent(**values)


def test_totals_by_each_dimension_and_combination() -> None:
    meters = Meters()
    meters.apply(
        [
            event(1, tenant_id="a", project_id="p1", feature="chat", api_key_id="k1"),
            event(2, tenant_id="a", project_id="p2", response_model="claude"),
            event(3, tenant_id="b", project_id="p1", cost=Decimal("0.25"), currency="USD"),
        ]
    )

    assert meters.totals("minute", at=NOW).requests == 3
    assert meters.totals("day", at=NOW, tenant="a").total_tokens == 30
    assert meters.totals("hour", at=NOW, project="p1").requests == 2
    assert meters.totals("month", at=NOW, model="claude").requests == 1
    assert meters.totals("day", at=NOW, feature="chat").requests == 1
    assert meters.totals("day", at=NOW, api_key="k1").requests == 1
    assert meters.totals("day", at=NOW, tenant="a", project="p1").requests == 1
    assert meters.totals("day", at=NOW, tenant="b").cost == Decimal("0.25")
    assert meters.totals("day", at=NOW, tenant="nobody") == MeterTotals()
    breakdown = meters.breakdown("day", "tenant", at=NOW)
    assert {name: t.requests for name, t in breakdown.items()} == {"a": 2, "b": 1}


def test_every_bucket_is_counted() -> None:
    meters = Meters()
    meters.apply([event(1)])
    totals = meters.totals("day", at=NOW)
    assert (
        totals.input_tokens,
        totals.cache_read_input_tokens,
        totals.cache_write_input_tokens,
        totals.output_tokens,
        totals.reasoning_output_tokens,
        totals.total_tokens,
        totals.requests,
    ) == (10, 4, 0, 5, 1, 15, 1)
    assert totals.to_json()["cost"] == "0"


def test_estimated_usage_is_told_apart() -> None:
    meters = Meters()
    meters.apply([event(1), event(2, usage_source="estimate", total_tokens=7, output_tokens=0)])
    totals = meters.totals("day", at=NOW)
    assert (totals.requests, totals.estimated_requests) == (2, 1)
    assert (totals.total_tokens, totals.estimated_total_tokens) == (22, 7)


def test_old_buckets_are_not_kept() -> None:
    meters = Meters(retention_s={"minute": 120, "hour": 7200, "day": 86400, "month": 86400 * 40})
    now_s = int(time.time())  # not NOW_S: the retention is shorter than a test run
    old, recent = (now_s - 3600) * 10**9, now_s * 10**9
    meters.apply([event(1, event_time_ns=old), event(2, event_time_ns=recent)])
    assert meters.totals("minute").requests == 1
    stale = datetime.fromtimestamp(now_s - 3600, tz=timezone.utc)
    assert meters.totals("minute", at=stale).requests == 0, "older than minute retention"
    assert meters.totals("hour", at=stale).requests == 1


def test_memory_stays_bounded_under_a_stream_of_minutes() -> None:
    meters = Meters(retention_s={"minute": 600, "hour": 7200, "day": 86400, "month": 86400 * 40})
    meters.apply([event(i, seconds_ago=60 * i) for i in range(500)])
    assert meters.bucket_count("minute") <= 11
    assert meters.bucket_count("hour") <= 3
    assert meters.bucket_count() < 20


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * 86400),
            st.sampled_from(["a", "b"]),
            st.sampled_from([None, "p"]),
            st.sampled_from(["provider", "estimate"]),
            st.integers(0, 1000),
        ),
        max_size=30,
    )
)
def test_rebuilt_meters_equal_live_meters(tmp_path_factory: pytest.TempPathFactory, specs) -> None:
    events = [
        event(
            i,
            seconds_ago=ago,
            tenant_id=tenant,
            project_id=project,
            usage_source=source,
            total_tokens=tokens,
            cost=Decimal(tokens) / 1000,
            currency="USD",
        )
        for i, (ago, tenant, project, source, tokens) in enumerate(specs)
    ]
    path: Path = tmp_path_factory.mktemp("meters") / "ledger.db"
    live = Meters()
    with open_ledger(f"sqlite:///{path}") as ledger:
        live.apply(ledger.append(events).committed)
    rebuilt = Meters()
    with open_ledger(f"sqlite:///{path}") as ledger:
        rebuilt.rebuild(ledger)
    for window in ("minute", "hour", "day", "month"):
        for ago in {0, 3600, 86400, 2 * 86400}:
            at = datetime.fromtimestamp(NOW_S - ago, tz=timezone.utc)
            for tenant in (None, "a", "b"):
                assert rebuilt.totals(window, at=at, tenant=tenant) == live.totals(
                    window, at=at, tenant=tenant
                )
            assert rebuilt.totals(window, at=at, tenant="a", project="p") == live.totals(
                window, at=at, tenant="a", project="p"
            )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="lacks"):
        Meters(retention_s={"minute": 60})
    with pytest.raises(ValueError, match="unknown meter dimension"):
        Meters().breakdown("day", "colour")
