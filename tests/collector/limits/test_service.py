"""The limits service: durable state across restarts, expiry into a real ledger, reconcile."""

from __future__ import annotations

import threading

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import CheckRequest, HooksConfig, LimitsService
from tollmeter.collector.storage import open_ledger

DAILY = {"name": "daily", "limit": 1000, "window": "day", "alert_at": [0.5]}


def _req(inp=100, **kw):
    return CheckRequest(tenant="acme", estimated_input_tokens=inp, **kw)


def _python_hook(tmp_path, monkeypatch, name):
    module = tmp_path / f"{name}.py"
    module.write_text("received = []\n\ndef hook(payload):\n    received.append(payload)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return HooksConfig.from_mapping([{"type": "python", "target": f"{name}:hook"}])


def test_state_and_fired_thresholds_survive_a_restart(tmp_path, make_limits, clock, monkeypatch):
    hooks = _python_hook(tmp_path, monkeypatch, "restart_hook")
    state = tmp_path / "limits.db"
    service = LimitsService(make_limits(DAILY), hooks, state_path=state, clock=clock)
    service.start()
    reserved = service.check(_req(inp=600, request_id="r-1"))
    assert reserved.allowed
    service.close()

    service = LimitsService(make_limits(DAILY), hooks, state_path=state, clock=clock)
    service.start()
    try:
        # Same request id: same reservation, not a second one.
        assert service.check(_req(inp=600, request_id="r-1")).reservation_id == (
            reserved.reservation_id
        )
        assert not service.check(_req(inp=401)).allowed
        assert service.check(_req(inp=400)).allowed
        # The reservation is still known after the restart and reconciles.
        service.on_committed([_usage(reservation_id=reserved.reservation_id, inp=100)])
        assert service.status("acme")["limits"][0]["remaining"] == 500
    finally:
        service.close()
    import restart_hook

    fired = [p for p in restart_hook.received if p["event"] == "threshold_crossed"]
    assert len(fired) == 1


def test_expired_reservation_lands_in_the_ledger_once(tmp_path, make_limits, clock):
    ledger = open_ledger("memory://")
    service = LimitsService(
        make_limits(DAILY, reservation_ttl="1m"),
        ledger=ledger,
        state_path=tmp_path / "limits.db",
        clock=clock,
        collector_id="c1",
    )
    try:
        result = service.check(_req(inp=700, model="gpt-4o", project="p"))
        assert service.expire() == 0
        clock.advance(61)
        assert service.expire() == 1
        assert service.expire() == 0
        events = ledger.read_events(0, 10)
        assert len(events) == 1
        event = events[0]
        assert (event.usage_source, event.input_tokens, event.tenant_id) == (
            "reservation",
            700,
            "acme",
        )
        assert (event.reservation_id, event.request_model, event.project_id) == (
            result.reservation_id,
            "gpt-4o",
            "p",
        )
        # Billing the same expiry again (a retry after a crash) is dropped by the ledger.
        assert ledger.append([event]).duplicates == 1
        # Committed reservation usage coming back from the pipeline is not counted twice.
        service.on_committed(events)
        assert service.status("acme")["limits"][0]["remaining"] == 300
    finally:
        service.close()
        ledger.close()


def test_reconcile_writes_actual_usage_once(make_limits, clock):
    ledger = open_ledger("memory://")
    service = LimitsService(make_limits(DAILY), ledger=ledger, clock=clock)
    try:
        result = service.check(_req(inp=900))
        usage = {"input_tokens": 120, "output_tokens": 30, "provider": "openai"}
        event = service.reconcile(result.reservation_id, usage)
        assert event is not None
        assert (event.total_tokens, event.usage_source, event.sequence) == (150, "provider", 1)
        assert service.reconcile(result.reservation_id, usage) is None
        assert ledger.last_sequence() == 1
        assert service.status("acme")["limits"][0]["remaining"] == 850
    finally:
        service.close()
        ledger.close()


def test_background_thread_expires_and_persists(tmp_path, make_limits):
    ledger = open_ledger("memory://")
    limits = make_limits(DAILY, reservation_ttl="50ms", state_flush_interval="10ms")
    service = LimitsService(limits, ledger=ledger, expiry_interval_s=0.01)
    service.start()
    try:
        service.check(_req(inp=10))
        done = threading.Event()
        for _ in range(500):
            if ledger.last_sequence() == 1:
                done.set()
                break
            done.wait(0.01)
        assert done.is_set()
    finally:
        service.close()
        ledger.close()


def _usage(*, reservation_id=None, inp=0, out=0):
    return UsageEvent(
        event_id=f"span-{reservation_id}-{inp}-{out}",
        event_time_ns=1_800_000_000 * 10**9,
        provider="openai",
        operation="chat",
        tenant_id="acme",
        input_tokens=inp,
        output_tokens=out,
        total_tokens=inp + out,
        reservation_id=reservation_id,
    )


def test_failed_billing_puts_expired_reservations_back(tmp_path, make_limits, clock):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    service = LimitsService(make_limits(DAILY, reservation_ttl="1m"), ledger=ledger, clock=clock)
    try:
        service.check(_req(inp=700))
        clock.advance(61)
        ledger.close()  # every append now fails with StorageError
        assert service.expire() == 0
        assert service.status("acme")["active_reservations"] == 1
        service._ledger = reopened = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        assert service.expire() == 1
        assert [e.usage_source for e in reopened.read_events(0, 10)] == ["reservation"]
    finally:
        service.close()
        reopened.close()
