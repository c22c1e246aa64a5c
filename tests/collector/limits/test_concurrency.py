"""Concurrency limits: calls in flight per key, on both engines."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import CheckRequest, LimitsConfig, LimitsService
from tollmeter.collector.limits._model import Changes
from tollmeter.collector.limits._redis_engine import RedisLimitEngine
from tollmeter.collector.limits._state import LimitStateStore
from tollmeter.semconv.errors import ConfigurationError

IN_FLIGHT = {"name": "in-flight", "measure": "concurrency", "limit": 3, "action": "throttle"}


def _req(tenant: str = "acme", inp: int = 10, **kw: Any) -> CheckRequest:
    return CheckRequest(tenant=tenant, estimated_input_tokens=inp, **kw)


def _event(reservation_id: str | None, tenant: str = "acme") -> UsageEvent:
    return UsageEvent(
        event_id=f"e-{reservation_id}",
        event_time_ns=1_800_000_000 * 10**9,
        provider="openai",
        operation="chat",
        tenant_id=tenant,
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        request_model="gpt-4o",
        reservation_id=reservation_id,
    )


def _in_flight(engine: Any, tenant: str = "acme") -> float:
    """Calls in flight by the status API; a counter at rest is not listed (none in flight)."""
    entries = [e for e in engine.status(tenant)["limits"] if e["name"] == "in-flight"]
    return float(entries[0]["in_flight"]) if entries else 0.0


def test_concurrent_checks_admit_exactly_the_limit(make_engine, make_limits, clock):
    engine = make_engine(make_limits({**IN_FLIGHT, "limit": 5}), clock=clock)
    barrier = threading.Barrier(48)
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=10)
        result, _ = engine.check(_req())
        with lock:
            allowed.append(result.allowed)

    threads = [threading.Thread(target=worker) for _ in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert (allowed.count(True), allowed.count(False)) == (5, 43)
    assert _in_flight(engine) == 5
    denied, _ = engine.check(_req())
    assert (denied.action, denied.denied_by, denied.retry_after_s) == ("throttle", "in-flight", 1.0)


def test_reconcile_release_and_expiry_each_free_a_slot(make_engine, make_limits, clock):
    config = make_limits({**IN_FLIGHT, "limit": 3}, reservation_ttl="1m")
    engine = make_engine(config, clock=clock)
    ids = [engine.check(_req())[0].reservation_id for _ in range(3)]
    assert not engine.check(_req())[0].allowed
    engine.record_usage([_event(ids[0])])  # the span of a finished call
    assert _in_flight(engine) == 2
    assert engine.release(ids[1])
    assert _in_flight(engine) == 1
    clock.advance(61)
    due, _ = engine.expire_due()
    assert [r.id for r in due] == [ids[2]]
    assert _in_flight(engine) == 0
    # The span of the expired call arriving late frees nothing more.
    held = engine.check(_req())[0]
    engine.record_usage([_event(ids[2])])
    assert _in_flight(engine) == 1
    assert held.allowed
    # Usage of a call that never checked holds no slot.
    engine.record_usage([_event(None)])
    assert _in_flight(engine) == 1


def test_a_check_denied_by_another_limit_holds_no_slot(make_engine, make_limits, clock):
    daily = {"name": "daily", "limit": 100, "window": "day"}
    engine = make_engine(make_limits(IN_FLIGHT, daily), clock=clock)
    assert engine.check(_req(inp=80))[0].allowed
    denied, _ = engine.check(_req(inp=80))
    assert denied.denied_by == "daily"
    assert _in_flight(engine) == 1
    # And a check denied by the concurrency limit takes nothing from the daily one.
    for _ in range(2):
        assert engine.check(_req(inp=5))[0].allowed
    assert engine.check(_req(inp=5))[0].denied_by == "in-flight"
    (daily_status,) = [e for e in engine.status("acme")["limits"] if e["name"] == "daily"]
    assert daily_status["remaining"] == 10


def test_slots_are_per_key_and_idempotent_per_request_id(make_engine, make_limits, clock):
    engine = make_engine(make_limits({**IN_FLIGHT, "limit": 1}), clock=clock)
    first, _ = engine.check(_req(request_id="r-1"))
    again, _ = engine.check(_req(request_id="r-1"))
    assert first.allowed
    assert again.reservation_id == first.reservation_id
    assert _in_flight(engine) == 1
    assert engine.check(_req("globex"))[0].allowed
    assert not engine.check(_req())[0].allowed


def test_concurrency_config_takes_no_window_and_reads_back(make_limits):
    config = make_limits(IN_FLIGHT)
    assert config.rules[0].measure == "concurrency"
    from tollmeter.collector.limits import limits_to_mapping

    again = LimitsConfig.from_mapping(limits_to_mapping(config))
    assert again.rules == config.rules
    with pytest.raises(ConfigurationError) as caught:
        make_limits({**IN_FLIGHT, "window": "day", "alert_at": [0.5]})
    text = str(caught.value)
    assert "limits.rules[0].window: not valid with measure: concurrency" in text
    assert "limits.rules[0].alert_at: not valid with measure: concurrency" in text


def test_the_slot_of_a_killed_replica_expires(redis_url, make_limits):
    options = {"reservation_ttl": "1s", "storage": redis_url, "rules": [{**IN_FLIGHT, "limit": 1}]}
    survivor = RedisLimitEngine(LimitsConfig.from_mapping(options))
    child = f"""
import os, signal
from tollmeter.collector.limits import CheckRequest, LimitsConfig
from tollmeter.collector.limits._redis_engine import RedisLimitEngine
engine = RedisLimitEngine(LimitsConfig.from_mapping({options!r}))
result, _ = engine.check(CheckRequest(tenant="acme"))
print(result.reservation_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    try:
        done = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == -9, done.stderr
        assert not survivor.check(_req())[0].allowed
        expired: list[str] = []
        wait = threading.Event()
        for _ in range(300):
            expired += [r.id for r in survivor.expire_due()[0]]
            if expired:
                break
            wait.wait(0.02)
        assert expired == [done.stdout.strip()]
        assert survivor.check(_req())[0].allowed
    finally:
        survivor.close()


def test_in_flight_lists_every_key_with_calls_in_flight(make_engine, make_limits):
    rule = {**IN_FLIGHT, "group_by": ["tenant", "project"]}
    engine = make_engine(make_limits(rule, {"name": "daily", "limit": 100, "window": "day"}))
    engine.check(_req(project="web"))
    engine.check(_req(project="web"))
    engine.check(_req("odd:tenant*", project="a=b:c"))
    released = engine.check(_req("globex"))[0].reservation_id
    assert engine.release(released)
    assert sorted(engine.in_flight(), key=str) == sorted(
        [
            ("in-flight", {"tenant": "acme", "project": "web"}, 2.0),
            ("in-flight", {"tenant": "odd:tenant*", "project": "a=b:c"}, 1.0),
        ],
        key=str,
    )


def test_a_requeued_reservation_holds_its_slot_again_and_frees_it_once(
    make_engine, make_limits, clock
):
    engine = make_engine(make_limits(IN_FLIGHT, reservation_ttl="1m"), clock=clock)
    first = engine.check(_req())[0].reservation_id
    clock.advance(61)
    due, _ = engine.expire_due()
    assert _in_flight(engine) == 0
    engine.requeue(due)  # billing the expiry failed: the reservation is open again
    assert _in_flight(engine) == 1
    engine.check(_req())
    engine.record_usage([_event(first)])
    assert _in_flight(engine) == 1


def test_calls_in_flight_after_a_restart_are_the_open_reservations(tmp_path, make_limits, clock):
    state = tmp_path / "limits.db"
    config = make_limits(IN_FLIGHT)
    service = LimitsService(config, state_path=state, clock=clock)
    ids = [service.check(_req()).reservation_id for _ in range(2)]
    service.close()
    # A counter written behind at another moment than the reservations (a crash
    # between the two writes) must not leave slots taken for ever.
    store = LimitStateStore(state)
    [(slot, level, stamp, fingerprint)] = store.load()[0]
    assert (slot, level) == (("in-flight", ("acme",)), 2.0)
    store.save(Changes(counters={slot: (3.0, stamp, fingerprint)}))
    store.close()
    service = LimitsService(config, state_path=state, clock=clock)
    try:
        assert _in_flight(service) == 2
        service.on_committed([_event(ids[0])])
        assert _in_flight(service) == 1
        # A lower limit keeps what is in flight.
        service.reload(make_limits({**IN_FLIGHT, "limit": 1}))
        assert _in_flight(service) == 1
        assert not service.check(_req()).allowed
    finally:
        service.close()
