"""Usage queries: filters, group-by and windows, answered from rollups or raw events."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import (
    DIMENSIONS,
    InvalidQuery,
    Ledger,
    UsageQuery,
    bucket_start,
    open_ledger,
)

UTC = timezone.utc
T0 = datetime(2026, 1, 31, 23, 58, 30, tzinfo=UTC)


def at(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000


def test_totals_group_by_and_filters(ledger: Ledger, make_event) -> None:
    ledger.append(
        [
            make_event(tenant_id="a", input_tokens=10, total_tokens=10, output_tokens=0),
            make_event(tenant_id="a", input_tokens=5, total_tokens=7, output_tokens=2),
            make_event(tenant_id="b", response_model="claude", input_tokens=1, total_tokens=1),
        ]
    )

    (total,) = ledger.query_usage(UsageQuery())
    assert (total.requests, total.input_tokens, total.tenant) == (3, 16, None)

    rows = ledger.query_usage(UsageQuery(group_by=("tenant", "model")))
    assert [(r.tenant, r.model, r.requests, r.total_tokens) for r in rows] == [
        ("a", "gpt-4o-mini-2024-07-18", 2, 17),
        ("b", "claude", 1, 1),
    ]
    (only_b,) = ledger.query_usage(UsageQuery(tenant="b"))
    assert only_b.input_tokens == 1
    assert ledger.query_usage(UsageQuery(tenant="nobody")) == []


def test_windows_split_at_calendar_boundaries(ledger: Ledger, make_event) -> None:
    times = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), T0 + timedelta(days=1)]
    ledger.append([make_event(event_time_ns=at(t)) for t in times])

    months = ledger.query_usage(UsageQuery(window="month"))
    assert [(r.window_start, r.requests) for r in months] == [
        (datetime(2026, 1, 1, tzinfo=UTC), 2),
        (datetime(2026, 2, 1, tzinfo=UTC), 2),
    ]
    days = ledger.query_usage(UsageQuery(window="day", start=datetime(2026, 2, 1, tzinfo=UTC)))
    assert [(r.window_start, r.requests) for r in days] == [
        (datetime(2026, 2, 1, tzinfo=UTC), 2),
    ]
    # An unaligned range falls back to raw events and still buckets by window.
    minutes = ledger.query_usage(
        UsageQuery(window="minute", start=T0 + timedelta(seconds=1), end=T0 + timedelta(hours=1))
    )
    assert [r.requests for r in minutes] == [1, 1]


def test_weeks_start_on_monday_utc(ledger: Ledger, make_event) -> None:
    times = [
        datetime(2026, 3, 9, 0, 0, tzinfo=UTC),  # a Monday
        datetime(2026, 3, 15, 23, 59, 59, tzinfo=UTC),  # the Sunday ending that week
        datetime(2026, 3, 16, 0, 0, tzinfo=UTC),  # the next Monday
        datetime(2026, 3, 18, 12, 0, tzinfo=UTC),
    ]
    ledger.append([make_event(event_time_ns=at(t)) for t in times])
    expected = [(datetime(2026, 3, 9, tzinfo=UTC), 2), (datetime(2026, 3, 16, tzinfo=UTC), 2)]
    # From day rollups, and from raw events when the range is not aligned to days.
    weeks = ledger.query_usage(UsageQuery(window="week"))
    assert [(r.window_start, r.requests) for r in weeks] == expected
    raw = ledger.query_usage(
        UsageQuery(window="week", start=datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC))
    )
    assert [(r.window_start, r.requests) for r in raw] == expected


def test_costs_sum_exactly(ledger: Ledger, make_event) -> None:
    ledger.append([make_event(cost=Decimal("0.1"), currency="USD") for _ in range(3)])
    ledger.append([make_event()])  # unpriced events add tokens, not cost

    (row,) = ledger.query_usage(UsageQuery())
    assert (row.cost, row.currency, row.requests) == (Decimal("0.3"), "USD", 4)
    assert row.to_json()["cost"] == "0.3"
    (raw,) = ledger.query_usage(UsageQuery(start=datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)))
    assert raw.cost == Decimal("0.3")


def test_a_query_without_costs_has_the_same_tokens(ledger: Ledger, make_event) -> None:
    ledger.append([make_event(cost=Decimal("0.1"), currency="USD") for _ in range(3)])
    raw_start = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)  # not aligned: raw events
    for query in (UsageQuery(window="day"), UsageQuery(window="day", start=raw_start)):
        (priced,) = ledger.query_usage(query)
        (tokens,) = ledger.query_usage(dataclasses.replace(query, costs=False))
        assert (tokens.cost, tokens.currency) == (None, None)
        assert dataclasses.replace(tokens, cost=priced.cost, currency=priced.currency) == priced


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_by": ("colour",)}, "cannot group by colour"),
        ({"group_by": ("tenant", "tenant")}, "repeats"),
        ({"window": "fortnight"}, "unknown window"),
        ({"start": datetime(2026, 1, 2)}, "time zone"),
        ({"start": T0, "end": T0}, "before end"),
        ({"limit": 0}, "limit"),
        ({"start": datetime(1, 1, 1, tzinfo=UTC)}, "between 1970 and 2200"),
        ({"end": datetime(9999, 12, 31, tzinfo=UTC)}, "between 1970 and 2200"),
        (
            {"start": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))},
            "between 1970 and 2200",
        ),
    ],
)
def test_invalid_queries_are_refused(kwargs, message) -> None:
    with pytest.raises(InvalidQuery, match=message):
        UsageQuery(**kwargs)


def test_limit_caps_rows(ledger: Ledger, make_event) -> None:
    ledger.append([make_event(tenant_id=f"t{i}") for i in range(5)])
    assert len(ledger.query_usage(UsageQuery(group_by=("tenant",), limit=2))) == 2


_events = st.lists(
    st.builds(
        dict,
        offset_s=st.integers(0, 90 * 86400),
        tenant=st.sampled_from(["a", "b", "c"]),
        project=st.sampled_from([None, "p1", "p2"]),
        model=st.sampled_from(["m1", "m2"]),
        feature=st.sampled_from([None, "chat"]),
        api_key=st.sampled_from([None, "k1"]),
        source=st.sampled_from(["provider", "estimate"]),
        tokens=st.integers(0, 10**6),
        cost=st.one_of(st.none(), st.decimals("0", "10", places=9)),
    ),
    max_size=40,
)
_queries = st.builds(
    dict,
    group_by=st.lists(st.sampled_from(DIMENSIONS), unique=True, max_size=3).map(tuple),
    window=st.sampled_from([None, "minute", "hour", "day", "month"]),
    start_s=st.one_of(st.none(), st.integers(0, 90 * 86400)),
    align=st.sampled_from([None, "minute", "hour", "day", "month"]),
    tenant=st.sampled_from([None, "a"]),
)


def _expected(events: list[UsageEvent], query: UsageQuery) -> dict[tuple[object, ...], list]:
    expected: dict[tuple[object, ...], list] = defaultdict(lambda: [0, 0, Decimal(0)])
    start_ns = query.start_ns()
    for event in events:
        if start_ns is not None and event.event_time_ns < start_ns:
            continue
        if query.tenant is not None and event.tenant_id != query.tenant:
            continue
        values = {
            "tenant": event.tenant_id,
            "project": event.project_id,
            "model": event.model,
            "feature": event.feature,
            "api_key": event.api_key_id,
            "usage_source": event.usage_source,
        }
        window = (
            None
            if query.window is None
            else bucket_start(query.window, event.event_time_ns // 10**9)
        )
        acc = expected[(window, *(values[name] for name in query.group_by))]
        acc[0] += event.total_tokens
        acc[1] += 1
        acc[2] += event.cost or 0
    return dict(expected)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(specs=_events, queries=st.lists(_queries, min_size=1, max_size=5))
def test_rollups_and_raw_events_agree_with_python_sums(fresh_ledger_url, specs, queries) -> None:
    base = int(T0.timestamp())
    events = [
        UsageEvent(
            event_id=f"e{i}",
            event_time_ns=(base + spec["offset_s"]) * 10**9 + i,
            provider="openai",
            operation="chat",
            tenant_id=spec["tenant"],
            project_id=spec["project"],
            response_model=spec["model"],
            feature=spec["feature"],
            api_key_id=spec["api_key"],
            usage_source=spec["source"],
            input_tokens=spec["tokens"],
            total_tokens=spec["tokens"],
            cost=spec["cost"],
            currency=None if spec["cost"] is None else "USD",
        )
        for i, spec in enumerate(specs)
    ]
    with open_ledger(fresh_ledger_url()) as ledger:
        ledger.append(events)
        for spec in queries:
            start = None
            if spec["start_s"] is not None:
                start_s = base + spec["start_s"]
                if spec["align"] is not None:
                    start_s = bucket_start(spec["align"], start_s)
                start = datetime.fromtimestamp(start_s, tz=UTC)
            query = UsageQuery(
                group_by=spec["group_by"], window=spec["window"], start=start, tenant=spec["tenant"]
            )
            rows = ledger.query_usage(query)
            got = {
                (
                    None if row.window_start is None else int(row.window_start.timestamp()),
                    *(getattr(row, name) for name in query.group_by),
                ): [row.total_tokens, row.requests, row.cost or Decimal(0)]
                for row in rows
            }
            assert got == _expected(events, query)


def test_old_minute_rollups_are_pruned_and_minute_queries_stay_exact(tmp_path, make_event) -> None:
    now_s = int(time.time())
    with open_ledger(f"sqlite:///{tmp_path}/ledger.db", minute_rollups_s=3600) as ledger:
        ledger.append(
            [
                make_event(event_time_ns=(now_s - 7200) * 10**9),
                make_event(event_time_ns=(now_s - 60) * 10**9),
            ]
        )
        conn = sqlite3.connect(tmp_path / "ledger.db")
        minutes = conn.execute("SELECT bucket FROM rollups WHERE granularity = 'minute'")
        assert [bucket for (bucket,) in minutes] == [(now_s - 60) // 60 * 60]
        conn.close()

        since = datetime.fromtimestamp((now_s - 3 * 3600) // 3600 * 3600, tz=UTC)
        for query in (UsageQuery(window="minute", start=since), UsageQuery(window="minute")):
            assert [r.requests for r in ledger.query_usage(query)] == [1, 1]
        recent = datetime.fromtimestamp((now_s - 600) // 60 * 60, tz=UTC)
        assert [
            r.requests for r in ledger.query_usage(UsageQuery(window="minute", start=recent))
        ] == [1]
