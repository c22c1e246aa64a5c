"""Counting provider response ids reported for two tenants, with a log that cannot flood."""

from __future__ import annotations

import logging

from tollmeter.collector._records import UsageEvent
from tollmeter.collector._shared_ids import SharedResponseIds


def _event(tenant: str, response_id: str | None, provider: str = "openai") -> UsageEvent:
    return UsageEvent(
        event_id=f"{tenant}-{provider}-{response_id}",
        event_time_ns=0,
        provider=provider,
        operation="chat",
        tenant_id=tenant,
        response_id=response_id,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_another_tenants_id_counts() -> None:
    shared = SharedResponseIds()
    assert shared.observe([_event("a", "r1"), _event("a", None), _event("b", None)]) == 0
    # Same tenant again (not a duplicate the ledger dropped: a second instrumentation's
    # event would have the same id), another provider's id, no id at all: none count.
    assert shared.observe([_event("a", "r1"), _event("b", "r1", "anthropic")]) == 0
    assert shared.observe([_event("b", "r1"), _event("c", "r1")]) == 2
    assert shared.count == 2


def test_the_log_says_so_at_most_once_per_interval(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="tollmeter.collector._shared_ids")
    clock = Clock()
    shared = SharedResponseIds(log_interval_s=60, clock=clock)
    shared.observe([_event("a", f"r{n}") for n in range(10)])
    for n in range(10):
        shared.observe([_event("b", f"r{n}")])
        clock.now += 1
    assert len(caplog.records) == 1
    clock.now += 60
    shared.observe([_event("c", "r0")])
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().startswith("10 usage event(s)")
    assert shared.count == 11


def test_memory_is_bounded_to_the_latest_ids() -> None:
    shared = SharedResponseIds(capacity=3)
    shared.observe([_event("a", f"r{n}") for n in range(5)])
    # r0 and r1 were forgotten; r4 is still known.
    assert shared.observe([_event("b", "r0"), _event("b", "r4")]) == 1
