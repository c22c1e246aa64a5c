"""Forecasts: the projection method on synthetic history, and the service around it."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tollmeter.collector._organisations import OrganisationsConfig
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import CheckRequest, HooksConfig, LimitsService
from tollmeter.collector.limits._forecast import project
from tollmeter.collector.limits._plan_book import PlanBook
from tollmeter.collector.limits._plans import PlansConfig
from tollmeter.collector.storage import open_ledger

UTC = ZoneInfo("UTC")
WEEKLY = (1.0, 1.1, 1.15, 1.05, 0.95, 0.35, 0.3)
"""Monday to Sunday: busy weekdays, quiet weekends."""
NOW = datetime(2027, 3, 16, 12, tzinfo=timezone.utc).timestamp()  # a Tuesday, noon


def synthetic_days(start: date, days: int, *, seed: int = 15) -> dict[date, float]:
    """Daily usage with a weekly season, a slow trend and noise, the same on every run."""
    rng = random.Random(seed)
    out = {}
    for i in range(days):
        day = start + timedelta(days=i)
        trend = 1.0 + 0.002 * i
        noise = max(0.2, rng.gauss(1.0, 0.12))
        out[day] = 50_000.0 * WEEKLY[day.weekday()] * trend * noise
    return out


def _ts(day: date, fraction: float = 0.0) -> float:
    midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
    return midnight + fraction * 86400


def _month_bounds(year: int, month: int) -> tuple[date, date]:
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    return first, following


def evaluate(fractions: tuple[float, ...], *, history_days: int = 365) -> dict[float, float]:
    """Mean absolute percentage error of the end-of-month projection at each fraction of
    the month, over the ten months that follow eight weeks of history.

    Usage within a day is spread evenly. ``history_days`` hides older days: 13 makes the
    method fall back to the plain recent rate, 0 to the window's own pace."""
    data = synthetic_days(date(2026, 1, 5), 400)
    errors: dict[float, list[float]] = {f: [] for f in fractions}
    for month in range(3, 13):
        first, following = _month_bounds(2026, month)
        start, end = _ts(first), _ts(following)
        actual = sum(a for d, a in data.items() if first <= d < following)
        for fraction in fractions:
            now = start + fraction * (end - start)
            today = datetime.fromtimestamp(now, timezone.utc).date()
            into_today = (now - _ts(today)) / 86400
            used = sum(a for d, a in data.items() if first <= d < today)
            used += data[today] * into_today
            oldest = today - timedelta(days=history_days)
            history = {d: a for d, a in data.items() if oldest <= d < today}
            forecast = project(
                history=history, used=used, limit=1e12, start=start, end=end, now=now, tz=UTC
            )
            assert forecast is not None
            errors[fraction].append(abs(forecast.projected - actual) / actual)
    return {f: 100 * sum(e) / len(e) for f, e in errors.items()}


def test_projection_error_on_a_weekly_seasonal_history_is_small_and_shrinks():
    fractions = (0.25, 0.5, 0.75)
    errors = {days: evaluate(fractions, history_days=days) for days in (365, 13, 0)}
    # The figures quoted in docs/limits.md (mean absolute percentage error, in %): the
    # profile, the plain recent rate, the window's own pace.
    table = {days: [round(e[f], 1) for f in fractions] for days, e in errors.items()}
    assert table == {365: [2.3, 2.1, 1.5], 13: [3.4, 3.4, 2.0], 0: [3.7, 3.0, 1.6]}
    profile = errors[365]
    assert profile[0.25] > profile[0.5] > profile[0.75]
    assert all(profile[f] < min(errors[13][f], errors[0][f]) for f in fractions)


def test_a_steady_history_projects_exactly():
    first, following = _month_bounds(2027, 3)
    history = {first - timedelta(days=i): 1000.0 for i in range(1, 43)}
    history.update({first + timedelta(days=i): 1000.0 for i in range(15)})
    forecast = project(
        history=history,
        used=15_000.0,
        limit=25_000.0,
        start=_ts(first),
        end=_ts(following),
        now=NOW,
        tz=UTC,
    )
    assert forecast is not None
    assert forecast.method == "weekly_profile"
    # Half of today and the 15 days of March left, at 1000 a day.
    assert forecast.projected == pytest.approx(30_500.0)
    assert forecast.reaches_at == pytest.approx(NOW + 10 * 86400)


def test_little_history_uses_the_recent_rate_and_none_the_window_pace():
    first, following = _month_bounds(2027, 3)
    bounds = {"start": _ts(first), "end": _ts(following), "now": NOW, "tz": UTC}
    recent = project(history={date(2027, 3, 15): 2000.0}, used=2000.0, limit=1e9, **bounds)
    assert recent is not None
    assert recent.method == "recent_rate"
    assert recent.projected == pytest.approx(2000.0 + 15.5 * 2000.0)
    pace = project(history={}, used=15_500.0, limit=1e9, **bounds)
    assert pace is not None
    assert pace.method == "window_pace"
    assert pace.projected == pytest.approx(31_000.0)
    # Nothing to project from in the first hour of a window without history.
    assert project(history={}, used=5.0, limit=10.0, **{**bounds, "now": _ts(first) + 60}) is None


@pytest.mark.parametrize("hostile", [math.nan, math.inf, -math.inf, -5000.0, 1e308])
def test_hostile_numbers_cannot_enter_a_projection(hostile):
    first, following = _month_bounds(2027, 3)
    history = {first - timedelta(days=i): 1000.0 for i in range(1, 30)}
    history[date(2027, 3, 10)] = hostile
    forecast = project(
        history=history,
        used=hostile,
        limit=25_000.0,
        start=_ts(first),
        end=_ts(following),
        now=NOW,
        tz=UTC,
    )
    assert forecast is not None
    assert math.isfinite(forecast.projected)
    assert forecast.projected >= 0
    assert forecast.reaches_at is None or math.isfinite(forecast.reaches_at)


# -- the service: history from a real ledger, hooks, status ----------------------------

MONTHLY = {"name": "monthly", "limit": 25_000, "window": "month"}


def _event(tenant: str, when: float, tokens: int) -> UsageEvent:
    return UsageEvent(
        event_id=f"{tenant}-{when}",
        event_time_ns=int(when * 1e9),
        provider="openai",
        operation="chat",
        tenant_id=tenant,
        input_tokens=tokens,
        output_tokens=0,
        total_tokens=tokens,
        request_model="gpt-4o",
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """A ledger holding six weeks of steady daily usage before ``NOW``: acme 1000 a
    day, globex 100 a day."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_ledger(url)
    events = []
    for day in range(1, 43):
        noon = NOW - day * 86400
        events += [_event("acme", noon, 1000), _event("globex", noon, 100)]
    opened.append(events)
    yield opened
    opened.close()


def _hook(tmp_path: Any, monkeypatch: Any, name: str) -> HooksConfig:
    module = tmp_path / f"{name}.py"
    module.write_text("received = []\n\ndef hook(payload):\n    received.append(payload)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return HooksConfig.from_mapping([{"type": "python", "target": f"{name}:hook"}])


def _service(make_limits: Any, ledger: Any, hooks: HooksConfig, clock: Any, **kw: Any) -> Any:
    rules = (
        MONTHLY,
        {"name": "tpm", "limit": 10_000, "window": "1m"},
        {"name": "daily-bucket", "limit": 10_000, "window": {"per": "1d"}},
        {"name": "in-flight", "measure": "concurrency", "limit": 4},
    )
    limits = make_limits(*rules, **kw.pop("options", {}))
    return LimitsService(limits, hooks, usage=ledger.query_usage, clock=clock, **kw)


def test_forecast_exceeded_fires_once_per_window_across_a_restart(
    ledger, make_limits, clock, tmp_path, monkeypatch
):
    hooks = _hook(tmp_path, monkeypatch, f"forecast_hook_{id(ledger)}")
    target = hooks.hooks[0].target or ""
    clock.now = NOW
    state = tmp_path / "limits.db"
    service = _service(make_limits, ledger, hooks, clock, state_path=state)
    service.start()
    try:
        assert service.refresh_forecasts() == 1  # acme only: globex stays far below
        assert service.refresh_forecasts() == 1
        service.check(CheckRequest(tenant="acme", estimated_input_tokens=1))
        limits = {e["name"]: e for e in service.status("acme")["limits"]}
        forecast = limits["monthly"]["forecast"]
        assert forecast["projected"] == pytest.approx(30_500.0)
        assert forecast["reaches_limit_at"] == "2027-03-26T12:00:00Z"
        assert forecast["method"] == "weekly_profile"
        # No projection where the window is not a calendar period of a day or more.
        assert [limits[n]["forecast"] for n in ("tpm", "daily-bucket", "in-flight")] == [None] * 3
        gauges = service.gauges()["projected"]
        assert ("monthly", {"tenant": "acme"}) in [(g[0], g[1]) for g in gauges]
    finally:
        service.close()
    service = _service(make_limits, ledger, hooks, clock, state_path=state)
    service.start()
    try:
        service.refresh_forecasts()
        # A new window: the projection passes the limit again and fires again.
        clock.now = datetime(2027, 4, 2, 12, tzinfo=timezone.utc).timestamp()
        ledger.append([_event("acme", NOW + day * 86400, 1000) for day in range(17)])
        service.refresh_forecasts()
    finally:
        service.close()
    received = __import__(target.split(":")[0]).received
    fired = [p for p in received if p["event"] == "forecast_exceeded"]
    assert [(p["key"], p["window"]) for p in fired] == [
        ({"tenant": "acme"}, "2027-03-01"),
        ({"tenant": "acme"}, "2027-04-01"),
    ]
    assert fired[0]["projected"] == pytest.approx(30_500.0)
    assert fired[0]["projected_at"] == "2027-03-26T12:00:00Z"
    assert fired[0]["used"] == 15_000
    assert fired[0]["limit_value"] == 25_000


def test_forecast_exceeded_fires_once_across_redis_replicas(
    ledger, make_limits, clock, tmp_path, monkeypatch, redis_url
):
    hooks = _hook(tmp_path, monkeypatch, f"forecast_redis_hook_{id(ledger)}")
    target = hooks.hooks[0].target or ""
    clock.now = NOW
    options = {"options": {"storage": redis_url}}
    replicas = [_service(make_limits, ledger, hooks, clock, **options) for _ in range(2)]
    for service in replicas:
        service.start()
    try:
        for service in replicas:
            assert service.refresh_forecasts() == 1
        restarted = _service(make_limits, ledger, hooks, clock, **options)
        restarted.start()
        restarted.refresh_forecasts()
        restarted.close()
    finally:
        for service in replicas:
            service.close()
    received = __import__(target.split(":")[0]).received
    assert [p["event"] for p in received] == ["forecast_exceeded"]


def _forecasts(service: Any, tenant: str) -> dict[str, Any]:
    """The tenant's forecast of each limit it has a counter of, by limit name."""
    service.check(CheckRequest(tenant=tenant, estimated_input_tokens=1))
    return {e["name"]: e["forecast"] for e in service.status(tenant)["limits"]}


def test_forecasts_leave_internal_usage_out_where_the_limit_does(ledger, make_limits, clock):
    # globex's own 100 a day, and 5000 a day of the operator's evaluations of it.
    ledger.append(
        [
            dataclasses.replace(_event("globex", NOW - day * 86400 + 60, 5000), internal=True)
            for day in range(0, 43)
        ]
    )
    clock.now = NOW
    rules = (MONTHLY, {**MONTHLY, "name": "monthly-all", "include_internal": True})
    service = LimitsService(make_limits(*rules), usage=ledger.query_usage, clock=clock)
    try:
        # globex passes 25,000 only on the limit that counts internal usage; acme on both.
        assert service.refresh_forecasts() == 3
        forecasts = _forecasts(service, "globex")
        # 1,500 used by the middle of the month, 100 a day for 15.5 days more.
        assert forecasts["monthly"]["projected"] == pytest.approx(3_050.0)
        # ...and 5,000 a day of March 1 to today noon, then 5,000 a day for 15.5 days.
        assert forecasts["monthly-all"]["projected"] == pytest.approx(
            3_050.0 + 16 * 5_000 + 15.5 * 5_000
        )
        exceeded = {(f.limit, f.keymap["tenant"]) for f in service.forecasts() if _past(f)}
        assert exceeded == {("monthly", "acme"), ("monthly-all", "acme"), ("monthly-all", "globex")}
    finally:
        service.close()


def _past(item: Any) -> bool:
    return bool(item.forecast.projected > item.limit_value)


def test_forecasts_cover_organisation_and_plan_limits(ledger, make_limits, clock):
    clock.now = NOW
    org_monthly = {"name": "org-monthly", "limit": 30_000, "window": "month", "group_by": ["org"]}
    plans = PlansConfig.from_mapping(
        {
            "free": {"default": True, "limits": [{**MONTHLY, "name": "plan", "limit": 2_000}]},
            "pro": {"tenants": ["acme"], "limits": [{**MONTHLY, "name": "plan", "limit": 99_000}]},
        }
    )
    service = LimitsService(
        make_limits(org_monthly),
        usage=ledger.query_usage,
        clock=clock,
        organisations=OrganisationsConfig({"acme": "umbrella", "globex": "umbrella"}),
        plans=PlanBook(plans),
    )
    try:
        service.refresh_forecasts()
        projected = {
            (f.limit, tuple(f.keymap.values())): (f.limit_value, f.forecast.projected)
            for f in service.forecasts()
        }
        assert projected == {
            # acme and globex together, 1,100 a day.
            ("org-monthly", ("umbrella",)): (30_000, pytest.approx(33_550.0)),
            # Each tenant at the value of the plan it is on.
            ("plan", ("acme",)): (99_000, pytest.approx(30_500.0)),
            ("plan", ("globex",)): (2_000, pytest.approx(3_050.0)),
        }
        assert _forecasts(service, "globex")["plan"]["projected"] == pytest.approx(3_050.0)
    finally:
        service.close()
