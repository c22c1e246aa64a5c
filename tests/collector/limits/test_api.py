"""The limits HTTP API over real HTTP: check, reconcile, status, admin reload, bad input."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from starlette.applications import Starlette

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.limits import LimitsService, limits_routes
from tollmeter.collector.storage import open_ledger

DAILY = {"name": "daily", "limit": 10_000, "window": "day", "action": "block"}
TPM = {"name": "tpm", "limit": 600, "window": {"per": "1m"}, "action": "throttle"}


@pytest.fixture
def api(make_limits, serve_app):
    ledger = open_ledger("memory://")
    service = LimitsService(make_limits(DAILY, TPM), ledger=ledger)
    service.start()
    with (
        serve_app(Starlette(routes=limits_routes(service))) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield client, service, ledger
    service.close()
    ledger.close()


def _check(client, **body):
    return client.post("/api/v1/check", json={"tenant": "acme", **body})


def test_check_reserves_and_denies_with_retry_after(api):
    client, _, _ = api
    allowed = _check(client, estimated_input_tokens=500, max_output_tokens=100)
    assert allowed.status_code == 200
    body = allowed.json()
    assert body["allowed"] is True
    assert body["action"] == "allow"
    assert body["reservation_id"]
    assert {s["name"]: s["remaining"] for s in body["limits"]} == {"daily": 9400, "tpm": 0}
    denied = _check(client, estimated_input_tokens=60)
    assert denied.status_code == 200
    body = denied.json()
    assert (body["allowed"], body["action"], body["denied_by"]) == (False, "throttle", "tpm")
    # 60 tokens at 10 a second; the bucket refills in real time between the two checks.
    assert 0 < body["retry_after_s"] <= 6.0
    assert int(denied.headers["Retry-After"]) >= body["retry_after_s"]
    assert body["reservation_id"] is None


def test_same_request_id_is_answered_once(api):
    client, _, _ = api
    first = _check(client, estimated_input_tokens=100, request_id="req-1").json()
    second = _check(client, estimated_input_tokens=100, request_id="req-1").json()
    assert second["reservation_id"] == first["reservation_id"]
    status = client.get("/api/v1/tenants/acme/status").json()
    assert status["active_reservations"] == 1


def test_concurrent_http_checks_admit_exactly_the_quota(api):
    client, _, _ = api
    client.put(
        "/api/v1/limits",
        json={"rules": [{"name": "quota", "limit": 10_000, "window": "day"}]},
    ).raise_for_status()
    barrier = threading.Barrier(64)
    answers = []
    lock = threading.Lock()

    pool = httpx.Client(
        base_url=str(client.base_url), timeout=30, limits=httpx.Limits(max_connections=64)
    )

    def worker():
        barrier.wait(timeout=30)
        answer = _check(pool, estimated_input_tokens=900, max_output_tokens=100).json()
        with lock:
            answers.append(answer["allowed"])

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    pool.close()
    assert answers.count(True) == 10
    assert len(answers) == 64


def test_reconcile_records_usage_once_and_cancel_releases(api):
    client, _, ledger = api
    rid = _check(client, estimated_input_tokens=400).json()["reservation_id"]
    answer = client.post(
        "/api/v1/reconcile",
        json={
            "reservation_id": rid,
            "input_tokens": 120,
            "output_tokens": 30,
            "provider": "openai",
        },
    )
    assert answer.status_code == 200
    assert answer.json()["sequence"] == 1
    again = client.post("/api/v1/reconcile", json={"reservation_id": rid, "input_tokens": 1})
    assert again.status_code == 404
    [event] = ledger.read_events(0, 10)
    assert (event.tenant_id, event.total_tokens, event.reservation_id) == ("acme", 150, rid)

    other = _check(client, estimated_input_tokens=300).json()["reservation_id"]
    cancel = client.post("/api/v1/reconcile", json={"reservation_id": other, "cancelled": True})
    assert cancel.json() == {"reservation_id": other, "released": True}
    limits = client.get("/api/v1/tenants/acme/status").json()["limits"]
    assert {s["name"]: s["remaining"] for s in limits}["daily"] == 10_000 - 150


def test_status_says_what_is_blocked_until_when(api):
    client, service, _ = api
    service.on_committed(
        [
            UsageEvent(
                event_id="big",
                event_time_ns=time.time_ns(),
                provider="openai",
                operation="chat",
                tenant_id="acme",
                input_tokens=10_000,
                total_tokens=10_000,
            )
        ]
    )
    status = client.get("/api/v1/tenants/acme/status").json()
    assert status["blocked"] is True
    daily = next(s for s in status["limits"] if s["name"] == "daily")
    assert (daily["blocked"], daily["remaining"]) == (True, 0)
    assert daily["blocked_until"] == daily["reset_at"]
    assert daily["blocked_until"].endswith("T00:00:00Z")
    assert client.get("/api/v1/tenants/nobody/status").json()["limits"] == []


def test_status_shows_what_open_reservations_hold_on_each_limit(api):
    client, _, _ = api
    reservation = _check(client, estimated_input_tokens=500, max_output_tokens=100).json()
    status = client.get("/api/v1/tenants/acme/status").json()
    assert {s["name"]: s["reserved"] for s in status["limits"]} == {"daily": 600, "tpm": 600}
    client.post(
        "/api/v1/reconcile",
        json={"reservation_id": reservation["reservation_id"], "cancelled": True},
    )
    status = client.get("/api/v1/tenants/acme/status").json()
    assert {s["name"]: s["reserved"] for s in status["limits"]} == {"daily": 0, "tpm": 0}


def test_recent_denials_are_kept_per_tenant(api):
    client, _, _ = api
    assert _check(client, estimated_input_tokens=600, request_id="fits").json()["allowed"]
    for number in range(3):
        denied = _check(client, estimated_input_tokens=60, request_id=f"over-{number}").json()
        assert denied["allowed"] is False
    _check(client, tenant="globex", estimated_input_tokens=10, request_id="other")
    decisions = client.get("/api/v1/tenants/acme/decisions").json()
    assert decisions["tenant"] == "acme"
    assert [d["request_id"] for d in decisions["decisions"]] == ["over-2", "over-1", "over-0"]
    assert {(d["event"], d["limit"]) for d in decisions["decisions"]} == {("request_denied", "tpm")}
    assert client.get("/api/v1/tenants/globex/decisions").json()["decisions"] == []


def test_admin_reload_keeps_state_and_rejects_invalid_limits(api):
    client, _, _ = api
    _check(client, estimated_input_tokens=400)
    current = client.get("/api/v1/limits").json()
    assert [r["name"] for r in current["limits"]["rules"]] == ["daily", "tpm"]
    assert current["counters"]["checks_allowed"] == 1
    assert current["counters"]["reservations_open"] == 1
    rules = current["limits"]["rules"]
    rules[0]["limit"] = 20_000
    assert client.put("/api/v1/limits", json={"rules": rules}).status_code == 200
    remaining = {s["name"]: s["remaining"] for s in _check(client).json()["limits"]}
    # The bucket refills in real time between the two checks (10 tokens a second).
    assert remaining["daily"] == 19_600
    assert 200 <= remaining["tpm"] <= 600
    bad = client.put(
        "/api/v1/limits", json={"rules": [{"name": "x", "limit": -5, "window": "day"}]}
    )
    assert bad.status_code == 400
    assert "limits.rules[0].limit" in bad.json()["error"]
    assert [r["name"] for r in client.get("/api/v1/limits").json()["limits"]["rules"]] == [
        "daily",
        "tpm",
    ]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"estimated_input_tokens": 5}', "tenant: required"),
        (b'{"tenant": "a", "estimated_input_tokens": -1}', "estimated_input_tokens"),
        (b'{"tenant": "a", "estimated_input_tokens": 1e3}', "estimated_input_tokens"),
        (b'{"tenant": "a", "max_output_tokens": true}', "max_output_tokens"),
        (b'{"tenant": "", "model": "x"}', "tenant"),
        (b'{"tenant": "a", "surprise": 1}', "surprise: unknown field"),
        (b'{"tenant": "a", "dry_run": "yes"}', "dry_run"),
        (b'{"tenant": "' + b"x" * 300 + b'"}', "tenant"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_checks_are_rejected(api, body, detail):
    client, _, _ = api
    answer = client.post("/api/v1/check", content=body)
    assert answer.status_code == 400
    assert answer.json()["code"] == "bad_request"
    assert detail in answer.json()["error"]


def test_oversized_bodies_are_too_large(api):
    client, _, _ = api
    body = b'{"tenant": "a", "pad": "' + b"x" * 70_000 + b'"}'
    for path in ("/api/v1/check", "/api/v1/reconcile"):
        answer = client.post(path, content=body)
        assert answer.status_code == 413
        assert answer.json()["code"] == "too_large"
        assert "larger than" in answer.json()["error"]
    answer = client.put("/api/v1/limits", content=body)
    assert (answer.status_code, answer.json()["code"]) == (413, "too_large")


def test_malformed_reconciles_are_rejected(api):
    client, _, _ = api
    assert client.post("/api/v1/reconcile", json={}).status_code == 400
    bad = client.post("/api/v1/reconcile", json={"reservation_id": "r", "input_tokens": -3})
    assert bad.status_code == 400
    unknown = client.post("/api/v1/reconcile", json={"reservation_id": "nope"})
    assert unknown.status_code == 404


def test_dry_run_reserves_nothing(api):
    client, _, _ = api
    answer = _check(client, estimated_input_tokens=600, dry_run=True).json()
    assert answer["allowed"] is True
    assert answer["reservation_id"] is None
    assert _check(client, estimated_input_tokens=600).json()["allowed"] is True


def test_the_routes_document_themselves_in_openapi(make_limits):
    from tollmeter.collector._management import openapi_document

    service = LimitsService(make_limits(DAILY))
    try:
        paths = openapi_document(limits_routes(service))["paths"]
    finally:
        service.close()
    assert set(paths) == {
        "/api/v1/check",
        "/api/v1/reconcile",
        "/api/v1/tenants/{tenant}/status",
        "/api/v1/tenants/{tenant}/decisions",
        "/api/v1/limits",
    }
    assert set(paths["/api/v1/limits"]) == {"get", "put"}
    reconcile = paths["/api/v1/reconcile"]["post"]
    assert reconcile["summary"].startswith("Report the actual usage")
    assert reconcile["responses"]["404"] == {
        "description": "unknown, already reconciled or expired reservation"
    }


def _rule(**changes):
    return {**DAILY, **changes}


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"rules": [{"name": "x", "limit": NaN, "window": "day"}]}', "limits.rules[0].limit"),
        (b'{"rules": [{"name": "x", "limit": Infinity, "window": "day"}]}', "rules[0].limit"),
        (b'{"rules": [{"name": "x", "limit": 1e400, "window": "day"}]}', "rules[0].limit"),
        (b'{"rules": [{"name": "x", "limit": -Infinity, "window": "day"}]}', "rules[0].limit"),
        (b'{"rules": [{"name": "x", "limit": 1' + b"0" * 400 + b', "window": "day"}]}', "limit"),
        (b'{"rules": [{"name": "x", "limit": 1e16, "window": "day"}]}', "rules[0].limit"),
        (b'{"rules": [{"name": "x", "limit": 5, "window": {"per": NaN}}]}', "window.per"),
        (b'{"rules": [{"name": "x", "limit": 5, "window": {"per": 1e300}}]}', "window.per"),
        (
            b'{"rules": [{"name": "x", "limit": 5, "window": {"per": 60, "burst": Infinity}}]}',
            "window.burst",
        ),
        (b'{"rules": [{"name": "x", "limit": 5, "window": "day", "alert_at": [NaN]}]}', "alert"),
        (
            b'{"rules": [{"name": "x", "limit": 5, "window": "day", "measure": "weighted",'
            b' "weights": {"output": NaN}}]}',
            "weights.output",
        ),
        (b'{"rules": [], "reservation_ttl": Infinity}', "limits.reservation_ttl"),
        (b'{"rules": [], "state_flush_interval": NaN}', "limits.state_flush_interval"),
        (b'{"rules": [], "reservation_ttl": "99999999999999d"}', "limits.reservation_ttl"),
        (b"{}", "limits.rules"),
        (b'{"rule": []}', "limits.rules"),
        (b'{"rules": {}}', "limits.rules"),
        (b'{"rules": [], "surprise": 1}', "limits.surprise"),
    ],
)
def test_invalid_limits_are_refused_and_the_old_ones_stay(api, body, key):
    client, _, _ = api
    before = client.get("/api/v1/limits").json()["limits"]
    answer = client.put("/api/v1/limits", content=body)
    assert answer.status_code == 400
    assert any(key in problem["key"] for problem in answer.json()["problems"])
    assert client.get("/api/v1/limits").json()["limits"] == before
    assert _check(client, estimated_input_tokens=1).status_code == 200
    assert client.get("/api/v1/tenants/acme/status").status_code == 200


def test_every_problem_of_a_limits_body_is_named(api):
    client, _, _ = api
    rules = [
        _rule(name="a", limit=-1, alert_at=["x"]),
        _rule(name="b", window={"per": 0}),
        _rule(name="a"),
    ]
    answer = client.put("/api/v1/limits", json={"rules": rules, "timezone": "Mars/Base"})
    assert answer.status_code == 400
    keys = {problem["key"] for problem in answer.json()["problems"]}
    assert keys == {
        "limits.timezone",
        "limits.rules[0].limit",
        "limits.rules[0].alert_at[0]",
        "limits.rules[1].window.per",
        "limits.rules[2].name",
    }


def test_removing_every_limit_takes_an_explicit_empty_list(api):
    client, service, _ = api
    ttl = service.engine.config.reservation_ttl_s
    answer = client.put("/api/v1/limits", json={"rules": [], "expired_reservations": "release"})
    assert answer.status_code == 200
    assert answer.json()["limits"]["rules"] == []
    # A setting the body leaves out keeps its value in force.
    assert answer.json()["limits"]["reservation_ttl"] == ttl


@pytest.mark.parametrize(
    "body",
    [
        b'{"reservation_id": "RID", "duration_s": NaN}',
        b'{"reservation_id": "RID", "duration_s": Infinity}',
        b'{"reservation_id": "RID", "duration_s": 1e400}',
        b'{"reservation_id": "RID", "duration_s": -1}',
        b'{"reservation_id": "RID", "input_tokens": 10, "cache_read_input_tokens": 11}',
        b'{"reservation_id": "RID", "output_tokens": 1, "reasoning_output_tokens": 2}',
    ],
)
def test_a_reconcile_with_impossible_numbers_is_refused_and_keeps_the_reservation(api, body):
    client, service, ledger = api
    rid = _check(client, estimated_input_tokens=40).json()["reservation_id"]
    answer = client.post("/api/v1/reconcile", content=body.replace(b"RID", rid.encode()))
    assert answer.status_code == 400
    assert service.engine.reservation(rid) is not None
    assert ledger.read_events(0, 10) == []
