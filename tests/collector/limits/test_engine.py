"""The limit engine: atomic reservations, windows, reconciliation and thresholds."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import CheckRequest, LimitEngine


def _event(tenant="acme", *, inp=0, out=0, reservation_id=None, t=None, model="gpt-4o", **kw):
    return UsageEvent(
        event_id=kw.pop("event_id", f"e-{tenant}-{inp}-{out}-{reservation_id}"),
        event_time_ns=int((t or 1_800_000_000.0) * 1e9),
        provider="openai",
        operation="chat",
        tenant_id=tenant,
        input_tokens=inp,
        output_tokens=out,
        total_tokens=inp + out,
        request_model=model,
        reservation_id=reservation_id,
        **kw,
    )


def _req(tenant="acme", inp=100, out=0, **kw):
    return CheckRequest(tenant=tenant, estimated_input_tokens=inp, max_output_tokens=out, **kw)


DAILY = {"name": "daily", "limit": 1000, "window": "day", "action": "block"}


def test_concurrent_checks_admit_exactly_what_the_limit_allows(make_engine, make_limits, clock):
    engine = make_engine(make_limits({**DAILY, "limit": 10_000}), clock=clock)
    barrier = threading.Barrier(64)
    results = []
    lock = threading.Lock()

    def worker():
        barrier.wait(timeout=10)
        result, _ = engine.check(_req(inp=1000))
        with lock:
            results.append(result.allowed)

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results.count(True) == 10
    assert results.count(False) == 54


def test_reservation_is_all_or_nothing_across_matching_limits(make_engine, make_limits, clock):
    engine = make_engine(
        make_limits(
            {"name": "tenant", "limit": 1000, "window": "day"},
            {"name": "model", "limit": 300, "window": "day", "match": {"model": "gpt-4*"}},
        ),
        clock=clock,
    )
    first, _ = engine.check(_req(inp=200, model="gpt-4o"))
    assert first.allowed
    denied, notices = engine.check(_req(inp=200, model="gpt-4o"))
    assert not denied.allowed
    assert denied.denied_by == "model"
    assert [n.kind for n in notices] == ["request_denied"]
    # The tenant limit was not charged by the denied request: 800 remain for other models.
    other, _ = engine.check(_req(inp=800, model="claude-sonnet-4"))
    assert other.allowed
    assert {s.name: s.remaining for s in other.limits} == {"tenant": 0.0}


def test_token_bucket_refills_with_time(make_engine, make_limits, clock):
    rule = {"name": "tpm", "limit": 600, "window": {"per": "1m"}, "action": "throttle"}
    engine = make_engine(make_limits(rule), clock=clock)
    assert engine.check(_req(inp=600))[0].allowed
    denied, _ = engine.check(_req(inp=100))
    assert not denied.allowed
    assert denied.action == "throttle"
    assert denied.retry_after_s == pytest.approx(10.0)
    clock.advance(9.9)
    assert not engine.check(_req(inp=100))[0].allowed
    clock.advance(0.2)
    assert engine.check(_req(inp=100))[0].allowed


def test_burst_caps_the_bucket_and_block_waits_for_a_full_bucket(make_engine, make_limits, clock):
    rule = {"name": "rpm", "limit": 60, "measure": "requests", "window": {"per": "1m", "burst": 5}}
    engine = make_engine(make_limits(rule), clock=clock)
    assert [engine.check(_req())[0].allowed for _ in range(6)] == [True] * 5 + [False]
    denied, _ = engine.check(_req())
    assert denied.action == "block"
    assert denied.retry_after_s == pytest.approx(5.0)


def test_request_larger_than_the_bucket_is_denied_without_retry_after(
    make_engine, make_limits, clock
):
    engine = make_engine(
        make_limits({"name": "t", "limit": 100, "window": "1m", "action": "throttle"}), clock=clock
    )
    denied, _ = engine.check(_req(inp=101))
    assert not denied.allowed
    assert denied.retry_after_s is None


@pytest.mark.parametrize(
    ("zone", "local_reset"),
    [("UTC", "2027-01-16T00:00:00+00:00"), ("Asia/Tokyo", "2027-01-16T00:00:00+09:00")],
)
def test_daily_window_resets_at_local_midnight(make_engine, make_limits, clock, zone, local_reset):
    tz = ZoneInfo(zone)
    clock.now = datetime(2027, 1, 15, 23, 30, tzinfo=tz).timestamp()
    engine = make_engine(make_limits(DAILY, timezone=zone), clock=clock)
    assert engine.check(_req(inp=1000))[0].allowed
    denied, _ = engine.check(_req(inp=1))
    assert not denied.allowed
    reset = datetime.fromisoformat(denied.limits[0].to_json()["reset_at"].replace("Z", "+00:00"))
    assert reset == datetime.fromisoformat(local_reset)
    assert denied.retry_after_s == pytest.approx(1800.0)
    clock.advance(1800)
    assert engine.check(_req(inp=1000))[0].allowed


def test_monthly_and_weekly_windows_follow_the_calendar(make_engine, make_limits, clock):
    berlin = ZoneInfo("Europe/Berlin")
    clock.now = datetime(2027, 3, 31, 12, tzinfo=berlin).timestamp()
    engine = make_engine(
        make_limits(
            {"name": "m", "limit": 10, "measure": "requests", "window": "month"},
            {"name": "w", "limit": 100, "measure": "requests", "window": "week"},
            timezone="Europe/Berlin",
        ),
        clock=clock,
    )
    result, _ = engine.check(_req())
    resets = {s.name: s.reset_at for s in result.limits}
    # March 2027 ends after the DST switch: April starts at 00:00 CEST (+02:00).
    assert resets["m"] == datetime(2027, 4, 1, tzinfo=berlin).timestamp()
    assert datetime(2027, 4, 1, tzinfo=berlin).utcoffset().total_seconds() == 7200
    assert resets["w"] == datetime(2027, 4, 5, tzinfo=berlin).timestamp()  # next Monday


def test_same_request_id_gets_the_same_answer_and_one_reservation(make_engine, make_limits, clock):
    engine = make_engine(make_limits(DAILY), clock=clock)
    first, _ = engine.check(_req(inp=600, request_id="r-1"))
    again, _ = engine.check(_req(inp=600, request_id="r-1"))
    assert again == first
    assert engine.check(_req(inp=400, request_id="r-2"))[0].allowed


def test_actual_usage_replaces_the_reservation(make_engine, make_limits, clock):
    engine = make_engine(make_limits(DAILY), clock=clock)
    result, _ = engine.check(_req(inp=900))
    engine.record_usage([_event(inp=100, out=50, reservation_id=result.reservation_id)])
    status = engine.status("acme")
    assert status["limits"][0]["remaining"] == 850
    # A second report of the same reservation (another instrumentation) is plain usage.
    assert engine.reservation(result.reservation_id) is None


def test_usage_without_reservation_counts_and_denies_the_next_check(
    make_engine, make_limits, clock
):
    engine = make_engine(make_limits(DAILY), clock=clock)
    engine.record_usage([_event(inp=990, out=20)])
    assert not engine.check(_req(inp=1))[0].allowed
    assert engine.status("acme")["blocked"] is True
    assert engine.status("other")["limits"] == []


def test_usage_of_a_closed_calendar_period_is_ignored(make_engine, make_limits, clock):
    engine = make_engine(make_limits(DAILY), clock=clock)
    engine.record_usage([_event(inp=500, t=clock.now - 3 * 86400)])
    assert engine.check(_req(inp=1000))[0].allowed


def test_expired_reservations_are_charged_and_a_late_span_corrects_them(
    make_engine, make_limits, clock
):
    engine = make_engine(make_limits(DAILY, reservation_ttl="1m"), clock=clock)
    result, _ = engine.check(_req(inp=700))
    clock.advance(61)
    due, notices = engine.expire_due()
    assert [r.id for r in due] == [result.reservation_id]
    assert [n.kind for n in notices] == ["reservation_expired"]
    assert engine.status("acme")["limits"][0]["remaining"] == 300
    engine.record_usage([_event(inp=100, reservation_id=result.reservation_id)])
    assert engine.status("acme")["limits"][0]["remaining"] == 900


def test_release_mode_gives_the_estimate_back(make_engine, make_limits, clock):
    engine = make_engine(
        make_limits(DAILY, reservation_ttl="1m", expired_reservations="release"), clock=clock
    )
    engine.check(_req(inp=700))
    clock.advance(61)
    engine.expire_due()
    result, _ = engine.check(_req(inp=1000))
    assert result.allowed


def test_thresholds_fire_once_per_window(make_engine, make_limits, clock):
    rule = {**DAILY, "alert_at": [0.5, 0.9], "action": "alert"}
    engine = make_engine(make_limits(rule), clock=clock)
    kinds = []
    for _ in range(12):
        result, notices = engine.check(_req(inp=100))
        assert result.allowed
        kinds += [(n.kind, n.threshold) for n in notices]
    assert kinds == [
        ("threshold_crossed", 0.5),
        ("threshold_crossed", 0.9),
        ("limit_exceeded", None),
    ]
    assert result.action == "alert"
    clock.advance(86400)
    _, notices = engine.check(_req(inp=600))
    assert [(n.kind, n.threshold) for n in notices] == [("threshold_crossed", 0.5)]


def test_downgrade_allows_with_a_cheaper_model(make_engine, make_limits, clock):
    rule = {**DAILY, "action": "downgrade", "downgrade_model": "gpt-4o-mini"}
    engine = make_engine(make_limits(rule), clock=clock)
    assert engine.check(_req(inp=1000))[0].action == "allow"
    result, _ = engine.check(_req(inp=10))
    assert (result.allowed, result.action, result.downgrade_model) == (
        True,
        "downgrade",
        "gpt-4o-mini",
    )


def test_weighted_measure_and_group_by(make_engine, make_limits, clock):
    rule = {
        "name": "weighted",
        "limit": 1000,
        "window": "day",
        "measure": "weighted",
        "weights": {"output": 4, "cache_read": 0.1},
        "group_by": ["tenant", "feature"],
    }
    engine = make_engine(make_limits(rule), clock=clock)
    engine.record_usage([_event(inp=500, out=100, cache_read_input_tokens=400, feature="search")])
    # 100 uncached + 400 * 0.1 cached + 100 * 4 output = 540
    status = engine.status("acme")["limits"]
    assert [(s["key"], s["remaining"]) for s in status] == [
        ({"tenant": "acme", "feature": "search"}, 460)
    ]
    assert engine.check(_req(inp=100, out=100, feature="chat"))[0].allowed
    assert not engine.check(_req(inp=100, out=100, feature="search"))[0].allowed


def test_match_by_project_model_glob_api_key_and_feature(make_engine, make_limits, clock):
    rule = {
        **DAILY,
        "match": {
            "tenant": ["acme", "glob*"],
            "project": "p1",
            "model": "claude-*",
            "api_key": "key-1",
            "feature": "chat",
        },
    }
    engine = make_engine(make_limits(rule), clock=clock)
    full = {"project": "p1", "model": "claude-haiku", "api_key_id": "key-1", "feature": "chat"}
    assert engine.check(_req(**full))[0].limits
    assert engine.check(_req(tenant="globex", **full))[0].limits
    assert not engine.check(_req(**{**full, "model": "gpt-4o"}))[0].limits
    assert not engine.check(_req(**{**full, "project": None}))[0].limits


def test_reload_keeps_state_of_unchanged_and_compatible_limits(make_engine, make_limits, clock):
    engine = make_engine(
        make_limits(DAILY, {"name": "tpm", "limit": 1000, "window": "1m"}), clock=clock
    )
    engine.check(_req(inp=800))
    engine.set_config(
        make_limits(
            {**DAILY, "limit": 2000},
            {"name": "tpm", "limit": 500, "window": "1m"},
            {"name": "new", "limit": 10, "window": "day"},
        )
    )
    remaining = {s.name: s.remaining for s in engine.check(_req(inp=0))[0].limits}
    assert remaining == {"daily": 1200, "tpm": 200, "new": 10}


def test_dry_run_changes_nothing(make_engine, make_limits, clock):
    engine = make_engine(make_limits(DAILY), clock=clock)
    result, _ = engine.check(_req(inp=1000, request_id="x"), dry_run=True)
    assert result.allowed
    assert result.reservation_id is None
    assert engine.check(_req(inp=1000, request_id="x"))[0].reservation_id is not None


def test_idle_counters_are_forgotten(make_limits, clock):
    engine = LimitEngine(
        make_limits(DAILY, {"name": "tpm", "limit": 600, "window": "1m"}), clock=clock
    )
    for i in range(100):
        engine.check(_req(tenant=f"t{i}", inp=10))
    clock.advance(86_400)
    engine.expire_due()
    assert engine.status("t1")["limits"] == []
    assert engine.drain_changes().dropped_counters
    # A fresh counter behaves like the old one at rest.
    assert engine.check(_req(tenant="t1", inp=600))[0].allowed


def test_cost_limits_use_the_price_estimate_then_the_priced_usage(make_engine, make_limits, clock):
    from decimal import Decimal

    rule = {"name": "spend", "measure": "cost", "currency": "USD", "limit": 1.0, "window": "day"}
    priced = []

    def price(model, inp, out):
        priced.append(model)
        return (inp + 4 * out) / 1_000_000

    engine = make_engine(make_limits(rule), clock=clock, cost_estimator=price)
    assert engine.check(_req(inp=500_000, out=100_000, model="gpt-4o"))[0].allowed
    denied, _ = engine.check(_req(inp=200_000, model="gpt-4o"))
    assert not denied.allowed
    engine.record_usage([_event(inp=10, cost=Decimal("0.05"), currency="USD")])
    engine.record_usage([_event(inp=11, cost=Decimal("9"), currency="EUR")])
    assert engine.status("acme")["limits"][0]["remaining"] == pytest.approx(1.0 - 0.9 - 0.05)
    assert priced == ["gpt-4o", "gpt-4o"]
    # Without a cost limit the pricer is never asked.
    cheap = make_engine(make_limits(DAILY), clock=clock, cost_estimator=price)
    cheap.check(_req(model="gpt-4o"))
    assert len(priced) == 2


def test_a_request_owned_by_an_organisation_and_plan_keeps_everything_else():
    request = CheckRequest(
        "t",
        "p",
        "m",
        "k",
        "f",
        estimated_input_tokens=3,
        max_output_tokens=4,
        request_id="r",
        org="old",
        plan="old",
        internal=True,
    )
    owned = request.owned_by("org", "plan")
    assert (owned.org, owned.plan) == ("org", "plan")
    for field in dataclasses.fields(CheckRequest):
        if field.name not in ("org", "plan"):
            assert getattr(owned, field.name) == getattr(request, field.name), field.name
