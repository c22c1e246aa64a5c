"""Properties of grants: what burning, ending and expiry may never do."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.grants import Grant
from tollmeter.collector.grants._model import allocate, local_instant_ns
from tollmeter.collector.storage import open_ledger

HOUR_NS = 3_600 * 1_000_000_000
BASE_NS = 1_773_500_966 * 1_000_000_000
ZONES = ("UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata")

grant_specs = st.lists(
    st.tuples(
        st.integers(1, 500),  # amount
        st.integers(-5, 5),  # start, hours from BASE
        st.one_of(st.none(), st.integers(1, 20)),  # length in hours
        st.integers(-2, 2),  # priority
        st.sampled_from(["none", "all", "50"]),
    ),
    max_size=5,
)
usage_specs = st.lists(st.tuples(st.integers(0, 300), st.integers(-6, 30)), max_size=20)


@given(
    balances=st.lists(st.integers(0, 1000), max_size=6),
    amount=st.integers(0, 5000),
)
def test_allocation_takes_the_usage_exactly_and_overdraws_no_grant(
    balances: list[int], amount: int
) -> None:
    grants = [
        (Grant(f"g{i}", "t", Decimal(1000), "tokens", 0, None, "UTC"), Decimal(b))
        for i, b in enumerate(balances)
    ]
    taken, overage = allocate(grants, Decimal(amount))
    left = {g.grant_id: b for g, b in grants}
    for grant, part in taken:
        assert 0 < part <= left[grant.grant_id]
        left[grant.grant_id] -= part
    assert sum(part for _, part in taken) + overage == amount
    assert overage >= 0
    assert overage == 0 or all(b == 0 for b in left.values())


@settings(max_examples=60, deadline=None)
@given(specs=grant_specs, usage=usage_specs, end_after=st.integers(0, 40))
def test_ledger_balances_are_their_movements_and_never_negative(
    specs: list[tuple[int, int, int | None, int, str]],
    usage: list[tuple[int, int]],
    end_after: int,
) -> None:
    with open_ledger("memory://") as ledger:
        for i, (amount, start, length, priority, rollover) in enumerate(specs):
            ledger.create_grant(
                Grant(
                    grant_id=f"g{i}",
                    tenant_id="acme",
                    amount=Decimal(amount),
                    unit="tokens",
                    effective_ns=BASE_NS + start * HOUR_NS,
                    expires_ns=None if length is None else BASE_NS + (start + length) * HOUR_NS,
                    time_zone="UTC",
                    priority=priority,
                    rollover=rollover,
                    created_ns=i,
                )
            )
        half = len(usage) // 2
        events = [
            UsageEvent(
                event_id=f"e{i}",
                event_time_ns=BASE_NS + hours * HOUR_NS,
                provider="openai",
                operation="chat",
                tenant_id="acme",
                input_tokens=tokens,
                output_tokens=0,
                total_tokens=tokens,
            )
            for i, (tokens, hours) in enumerate(usage)
        ]
        ledger.append(events[:half])
        ledger.end_grants(BASE_NS + end_after * HOUR_NS)
        ledger.append(events)  # the first half again: a replay burns nothing
        movements = [m for _, m in ledger.grant_movements(None, 0, 10_000)]
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for movement in movements:
            sums[movement.grant_id] += movement.amount
        for grant, balance in ledger.list_grants("acme"):
            assert balance == sums[grant.grant_id]
            assert balance >= 0
        consumed = -sum(m.amount for m in movements if m.kind == "consumed")
        overage = -sum(m.amount for m in movements if m.kind == "overage")
        used = sum(tokens for tokens, _ in usage)
        assert consumed <= used
        assert consumed + overage == (used if specs else 0)
        per_event = defaultdict(Decimal)
        for m in movements:
            if m.kind in ("consumed", "overage"):
                per_event[m.source_id] -= m.amount
        assert all(per_event[f"e{i}"] == tokens for i, (tokens, _) in enumerate(usage) if specs)


@settings(max_examples=300)
@given(
    zone=st.sampled_from(ZONES),
    local=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)),
)
@example(zone="America/New_York", local=datetime(2026, 3, 8, 2, 30))  # in the spring gap
@example(zone="America/New_York", local=datetime(2026, 11, 1, 1, 30))  # happens twice
@example(zone="Europe/Paris", local=datetime(2026, 3, 29, 2, 0))  # gap, at its start
@example(zone="Europe/Paris", local=datetime(2026, 10, 25, 2, 59, 59))  # twice
@example(zone="Australia/Lord_Howe", local=datetime(2026, 10, 4, 2, 15))  # half-hour gap
@example(zone="Australia/Lord_Howe", local=datetime(2026, 4, 5, 1, 45))  # half-hour twice
def test_expiry_is_exact_at_the_boundary_in_the_grant_zone(zone: str, local: datetime) -> None:
    local = local.replace(microsecond=0)
    tz = ZoneInfo(zone)
    expires = local_instant_ns(local.isoformat(), zone)
    grant = Grant("g", "t", Decimal(1), "tokens", expires - 10 * HOUR_NS, expires, zone)
    assert grant.covers(expires - 1)
    assert not grant.covers(expires)
    first = local.replace(tzinfo=tz, fold=0)
    second = local.replace(tzinfo=tz, fold=1)
    back = datetime.fromtimestamp(expires // 1_000_000_000, tz).replace(tzinfo=None)
    if first.utcoffset() == second.utcoffset() or back == local:
        # The wall time happens once, or twice: then its first occurrence is meant.
        assert back == local
        assert expires == int(first.timestamp()) * 1_000_000_000
        assert expires <= int(second.timestamp()) * 1_000_000_000
    else:
        # The wall time falls in a gap (clocks set forward): it is read with the offset
        # before the gap, so the instant is as far past the wall time as the gap is long.
        offsets = (first.utcoffset(), second.utcoffset())
        assert offsets[0] is not None
        assert offsets[1] is not None
        assert back - local == abs(offsets[1] - offsets[0])
