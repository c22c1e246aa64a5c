"""Properties of the engine over random interleavings of checks, reports, cancels and time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import CheckRequest, LimitEngine, LimitsConfig

LIMIT = 5_000
CONFIG = LimitsConfig.from_mapping(
    {
        "reservation_ttl": "10m",
        "rules": [
            {"name": "daily", "limit": LIMIT, "window": "day"},
            {"name": "tpm", "limit": 3_000, "window": {"per": "1m"}, "action": "throttle"},
        ],
    }
)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("check"), st.integers(0, 2_000), st.integers(0, 1_000)),
        st.tuples(st.just("report"), st.integers(0, 100), st.floats(0.0, 1.0)),
        st.tuples(st.just("cancel"), st.integers(0, 100), st.just(0.0)),
        st.tuples(st.just("wait"), st.integers(1, 120), st.just(0.0)),
    ),
    max_size=80,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=150, deadline=None)
@given(steps)
def test_usage_through_reservations_never_passes_a_blocking_limit(script):
    clock = Clock()
    engine = LimitEngine(CONFIG, clock=clock)
    open_reservations: list[tuple[str, int, int]] = []
    for index, (op, a, b) in enumerate(script):
        if op == "check":
            result, _ = engine.check(
                CheckRequest(tenant="t", estimated_input_tokens=a, max_output_tokens=b)
            )
            if result.allowed:
                open_reservations.append((result.reservation_id, a, b))
        elif op in ("report", "cancel") and open_reservations:
            rid, inp, out = open_reservations.pop(a % len(open_reservations))
            if op == "cancel":
                assert engine.release(rid)
                continue
            # The call used at most what was reserved (the estimate is an upper bound here).
            used_in, used_out = int(inp * b), int(out * b)
            engine.record_usage(
                [
                    UsageEvent(
                        event_id=f"e{index}",
                        event_time_ns=int(clock.now * 1e9),
                        provider="openai",
                        operation="chat",
                        tenant_id="t",
                        input_tokens=used_in,
                        output_tokens=used_out,
                        total_tokens=used_in + used_out,
                        reservation_id=rid,
                    )
                ]
            )
        elif op == "wait":
            clock.now += a
        for status in engine.check(CheckRequest(tenant="t"), dry_run=True)[0].limits:
            assert status.remaining >= -1e-6, (status.name, status.remaining)
