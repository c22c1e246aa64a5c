"""The Redis limit engine as replicas see it: two engines on one real redis-server."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import CheckRequest, LimitsConfig
from tollmeter.collector.limits._redis_engine import RedisLimitEngine

QUOTA = {"name": "quota", "limit": 10, "measure": "requests", "window": "day"}


@pytest.fixture
def replicas(redis_url: str) -> Iterator[Any]:
    """``replicas(config, n=2)`` -> n engines on the test's Redis, closed afterwards."""
    made: list[RedisLimitEngine] = []

    def make(config: LimitsConfig, n: int = 2, **options: Any) -> list[RedisLimitEngine]:
        options = {"storage": redis_url, "redis_timeout_s": 5.0, **options}
        shared = dataclasses.replace(config, **options)
        engines = [RedisLimitEngine(shared) for _ in range(n)]
        made.extend(engines)
        return engines

    yield make
    for engine in made:
        engine.close()


def _req(tenant: str = "acme", **kw: Any) -> CheckRequest:
    return CheckRequest(tenant=tenant, estimated_input_tokens=10, **kw)


def test_a_quota_admits_exactly_n_across_replicas_under_concurrent_checks(replicas, make_limits):
    engines = replicas(make_limits(QUOTA))
    barrier = threading.Barrier(64)
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait(timeout=10)
        result, _ = engines[i % 2].check(_req())
        with lock:
            allowed.append(result.allowed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert (allowed.count(True), allowed.count(False)) == (10, 54)


def test_the_same_request_id_on_two_replicas_reserves_once(replicas, make_limits):
    first, second = replicas(make_limits({**QUOTA, "limit": 2}))
    a, _ = first.check(_req(request_id="r-1"))
    b, _ = second.check(_req(request_id="r-1"))
    assert a.allowed
    assert b == a
    # One unit left: the retry did not take one.
    assert second.check(_req())[0].allowed
    assert not first.check(_req())[0].allowed


def test_a_reservation_of_a_killed_replica_expires_and_frees_the_quota(
    replicas, make_limits, redis_url
):
    config = make_limits(
        {**QUOTA, "limit": 1}, reservation_ttl="1s", expired_reservations="release"
    )
    (survivor,) = replicas(config, n=1)
    child = f"""
import dataclasses, os, signal, sys
from tollmeter.collector.limits import CheckRequest, LimitsConfig
from tollmeter.collector.limits._redis_engine import RedisLimitEngine
config = LimitsConfig.from_mapping({{"reservation_ttl": "1s", "expired_reservations": "release",
    "storage": {redis_url!r}, "rules": [{{**{QUOTA!r}, "limit": 1}}]}})
result, _ = RedisLimitEngine(config).check(CheckRequest(tenant="acme"))
print(result.reservation_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -9, done.stderr
    reservation_id = done.stdout.strip()
    assert survivor.reservation(reservation_id) is not None
    assert not survivor.check(_req())[0].allowed
    expired: list[str] = []
    wait = threading.Event()
    for _ in range(300):
        expired += [r.id for r in survivor.expire_due()[0]]
        if expired:
            break
        wait.wait(0.02)
    assert expired == [reservation_id]
    assert survivor.check(_req())[0].allowed


def test_a_threshold_fires_once_across_replicas(replicas, make_limits):
    rule = {**QUOTA, "limit": 4, "alert_at": [0.5], "action": "alert"}
    first, second = replicas(make_limits(rule))
    fired = []
    for engine in (first, second, first, second, first, second):
        _, notices = engine.check(_req())
        fired += [(n.kind, n.threshold) for n in notices]
    assert fired == [("threshold_crossed", 0.5), ("limit_exceeded", None)]


def test_a_span_reconciles_a_reservation_made_on_another_replica(replicas, make_limits):
    first, second = replicas(make_limits({**QUOTA, "measure": "total", "limit": 1000}))
    result, _ = first.check(CheckRequest(tenant="acme", estimated_input_tokens=900))
    event = UsageEvent(
        event_id="e-1",
        event_time_ns=int(first._clock() * 1e9),
        provider="openai",
        operation="chat",
        tenant_id="acme",
        input_tokens=100,
        output_tokens=0,
        total_tokens=100,
        reservation_id=result.reservation_id,
    )
    second.record_usage([event])
    assert first.status("acme")["limits"][0]["remaining"] == 900
    # Reported again (another instrumentation): plain usage, the reservation is gone.
    first.record_usage([event])
    assert second.status("acme")["limits"][0]["remaining"] == 800


@pytest.mark.parametrize(("mode", "allowed"), [("open", True), ("closed", False)])
def test_redis_down_answers_as_configured_logs_once_and_recovers(
    replicas, make_limits, redis_server, caplog, mode, allowed
):
    (engine,) = replicas(make_limits(QUOTA), n=1, redis_unavailable=mode, redis_timeout_s=1.0)
    assert engine.check(_req())[0].reason is None
    caplog.set_level(logging.WARNING, logger="tollmeter.collector.limits")
    redis_server.stop()
    try:
        answers = [engine.check(_req()) for _ in range(20)]
    finally:
        redis_server.start()
    assert {(r.allowed, r.reason) for r, _ in answers} == {(allowed, "limits storage unavailable")}
    assert all(r.reservation_id is None for r, _ in answers)
    begins = [r for r in caplog.records if "outage begins" in r.getMessage()]
    assert len(begins) == 1
    recovered = None
    wait = threading.Event()
    for _ in range(200):
        recovered, _ = engine.check(_req())
        if recovered.reason is None:
            break
        wait.wait(0.05)
    assert recovered is not None
    assert recovered.allowed
    assert recovered.reason is None
    assert [r for r in caplog.records if "outage ends" in r.getMessage()]
    # This Redis keeps nothing across a restart: the counter starts over.
    assert engine.status("acme")["limits"][0]["remaining"] == 9


@pytest.mark.parametrize("hostile", ["acme:c:quota:tenant=acme", "*", "acme*", "{acme}", "a%3Acme"])
def test_tenant_ids_with_key_separators_cannot_reach_another_tenants_keys(
    replicas, make_limits, redis_url, hostile
):
    (engine,) = replicas(make_limits({**QUOTA, "limit": 3}), n=1)
    for _ in range(3):
        assert engine.check(_req("acme"))[0].allowed
    # The hostile tenant has its own full quota, and sees nothing of acme's.
    for _ in range(3):
        assert engine.check(_req(hostile))[0].allowed
    assert not engine.check(_req(hostile))[0].allowed
    assert [s["remaining"] for s in engine.status(hostile)["limits"]] == [0]
    assert engine.status(hostile)["active_reservations"] == 3
    assert engine.status("acme")["active_reservations"] == 3
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = list(client.scan_iter(count=1000))
    finally:
        client.close()
    scopes = {"tollmeter:limits:t:acme:", f"tollmeter:limits:t:{_quoted(hostile)}:"}
    for key in keys:
        if key in ("tollmeter:limits:expiry",) or key.startswith("tollmeter:limits:rid:"):
            continue
        assert sum(key.startswith(scope) for scope in scopes) == 1, key


def _quoted(tenant: str) -> str:
    from urllib.parse import quote

    return quote(tenant, safe="")
