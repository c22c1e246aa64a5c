"""Who may call the check API: admin keys, and ingest keys bound to a tenant or not.

A real collector on free ports, spoken to over real HTTP. Check and reconcile accept
admin and ingest keys; an ingest key bound to a tenant acts for that tenant only and a
refused request leaves the limit state untouched; every other ``/api/`` route still
needs an admin key.
"""

from __future__ import annotations

import httpx
import pytest

ADMIN = "admin-secret"
BOUND = "ingest-acme"
UNBOUND = "ingest-any"
KEYS = {"admin_keys": [ADMIN], "ingest_keys": {BOUND: "acme", UNBOUND: None}}
LIMITS = {
    "reservation_ttl": "1h",
    "rules": [{"name": "quota", "limit": 10_000, "window": "day", "group_by": ["tenant"]}],
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def running(collector_factory):
    return collector_factory(limits=LIMITS, management=KEYS)


@pytest.fixture
def api(running):
    with httpx.Client(base_url=running.management_url, timeout=10) as client:
        yield client


def check(api, key: str, **body) -> httpx.Response:
    return api.post(
        "/api/v1/check",
        json={"estimated_input_tokens": 300, "max_output_tokens": 100, **body},
        headers=bearer(key),
    )


def status(api, tenant: str) -> dict:
    answer = api.get(f"/api/v1/tenants/{tenant}/status", headers=bearer(ADMIN))
    answer.raise_for_status()
    return answer.json()


def remaining(api, tenant: str) -> float:
    limits = status(api, tenant)["limits"]
    return limits[0]["remaining"] if limits else 10_000


def test_an_admin_key_checks_and_reconciles_any_tenant(api, running):
    for tenant in ("acme", "globex"):
        answer = check(api, ADMIN, tenant=tenant)
        assert answer.status_code == 200
        assert answer.json()["allowed"]
        assert remaining(api, tenant) == 10_000 - 400
    rid = check(api, ADMIN, tenant="globex", request_id="r-1").json()["reservation_id"]
    done = api.post(
        "/api/v1/reconcile",
        json={"reservation_id": rid, "input_tokens": 50, "output_tokens": 5},
        headers=bearer(ADMIN),
    )
    assert done.status_code == 200
    assert [e.tenant_id for e in running.events()] == ["globex"]


def test_a_bound_ingest_key_checks_its_tenant_and_defaults_to_it(api, running):
    named = check(api, BOUND, tenant="acme")
    assert (named.status_code, named.json()["allowed"]) == (200, True)
    # No tenant in the request: the key's tenant is meant.
    unnamed = check(api, BOUND, request_id="no-tenant")
    assert (unnamed.status_code, unnamed.json()["allowed"]) == (200, True)
    rid = unnamed.json()["reservation_id"]
    assert running.collector.limits.engine.reservation(rid).request.tenant == "acme"
    # The header OTLP exporters use works too.
    other_header = api.post(
        "/api/v1/check",
        json={"tenant": None, "estimated_input_tokens": 10},
        headers={"x-tollmeter-key": BOUND},
    )
    assert other_header.status_code == 200
    assert remaining(api, "acme") == 10_000 - 400 - 400 - 10

    done = api.post(
        "/api/v1/reconcile",
        json={"reservation_id": rid, "input_tokens": 120, "output_tokens": 30},
        headers=bearer(BOUND),
    )
    assert done.status_code == 200
    assert [(e.tenant_id, e.input_tokens) for e in running.events()] == [("acme", 120)]
    released = api.post(
        "/api/v1/reconcile",
        json={"reservation_id": named.json()["reservation_id"], "cancelled": True},
        headers=bearer(BOUND),
    )
    assert released.json() == {"reservation_id": named.json()["reservation_id"], "released": True}


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_bound_ingest_key_is_refused_for_another_tenant_and_reserves_nothing(api, dry_run):
    before = status(api, "globex")
    counts = api.get("/api/v1/limits", headers=bearer(ADMIN)).json()["counters"]
    for tenant in ("globex", "ACME", "acme "):
        refused = check(api, BOUND, tenant=tenant, request_id=f"steal-{tenant}", dry_run=dry_run)
        assert refused.status_code == 403
        assert refused.json()["code"] == "forbidden"
        assert "bound to tenant 'acme'" in refused.json()["error"]
    assert status(api, "globex") == before
    assert before["active_reservations"] == 0
    assert api.get("/api/v1/limits", headers=bearer(ADMIN)).json()["counters"] == counts
    # The same request id stays free for the rightful tenant's key.
    allowed = check(api, UNBOUND, tenant="globex", request_id="steal-globex")
    assert allowed.json()["allowed"]


def test_a_bound_ingest_key_cannot_settle_another_tenants_reservation(api, running):
    rid = check(api, ADMIN, tenant="globex").json()["reservation_id"]
    for body in (
        {"reservation_id": rid, "input_tokens": 1, "output_tokens": 1},
        {"reservation_id": rid, "cancelled": True},
    ):
        refused = api.post("/api/v1/reconcile", json=body, headers=bearer(BOUND))
        assert refused.status_code == 403
        assert refused.json()["code"] == "forbidden"
    assert running.collector.limits.engine.reservation(rid) is not None
    assert remaining(api, "globex") == 10_000 - 400
    assert running.events() == []
    settled = api.post(
        "/api/v1/reconcile",
        json={"reservation_id": rid, "input_tokens": 7, "output_tokens": 3},
        headers=bearer(UNBOUND),
    )
    assert settled.status_code == 200
    assert [(e.tenant_id, e.input_tokens) for e in running.events()] == [("globex", 7)]


def test_an_unbound_ingest_key_checks_any_tenant_but_must_name_it(api):
    for tenant in ("acme", "globex"):
        assert check(api, UNBOUND, tenant=tenant).json()["allowed"]
    missing = check(api, UNBOUND)
    assert missing.status_code == 400
    assert missing.json()["error"] == "tenant: required"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("no-such-key"),
        {"Authorization": f"Basic {BOUND}"},
        {"Authorization": "Bearer"},
        {"x-tollmeter-key": "no-such-key"},
        bearer("k" * 4096),
        bearer(BOUND.upper()),
    ],
    ids=["none", "unknown", "basic", "empty", "unknown-header", "huge", "wrong-case"],
)
def test_check_and_reconcile_without_a_known_key_are_401(api, headers):
    before = api.get("/api/v1/limits", headers=bearer(ADMIN)).json()["counters"]
    for path, body in (
        ("/api/v1/check", {"tenant": "acme", "estimated_input_tokens": 1}),
        ("/api/v1/reconcile", {"reservation_id": "r", "cancelled": True}),
    ):
        refused = api.post(path, json=body, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["code"] == "unauthorized"
    assert api.get("/api/v1/limits", headers=bearer(ADMIN)).json()["counters"] == before


@pytest.mark.parametrize("key", [BOUND, UNBOUND])
def test_every_other_api_route_refuses_ingest_keys(api, key):
    requests = [
        ("GET", "/api/v1/usage", None),
        ("GET", "/api/v1/events", None),
        ("GET", "/api/v1/limits", None),
        ("PUT", "/api/v1/limits", {"rules": []}),
        ("GET", "/api/v1/tenants/acme/status", None),
        ("GET", "/api/v1/no-such-route", None),
        ("GET", "/api/v1/check", None),  # a route of check, but not its method
    ]
    for method, path, body in requests:
        refused = api.request(method, path, json=body, headers=bearer(key))
        assert refused.status_code == 403, path
        assert "admin key" in refused.json()["error"]
    rules = api.get("/api/v1/limits", headers=bearer(ADMIN)).json()["limits"]["rules"]
    assert [rule["name"] for rule in rules] == ["quota"]
    for path in ("/api/v1/usage", "/api/v1/events", "/api/v1/tenants/acme/status"):
        assert api.get(path, headers=bearer(ADMIN)).status_code == 200


def test_malformed_requests_from_a_bound_key_are_400(api):
    for body in ({"tenant": 5}, {"tenant": ""}, {"tenant": "acme", "bogus": 1}):
        answer = api.post("/api/v1/check", json=body, headers=bearer(BOUND))
        assert answer.status_code == 400, body
    not_json = api.post("/api/v1/check", content=b"\xff{", headers=bearer(BOUND))
    assert not_json.status_code == 400
    unknown = api.post(
        "/api/v1/reconcile",
        json={"reservation_id": "nope", "cancelled": True},
        headers=bearer(BOUND),
    )
    assert unknown.status_code == 404


def test_with_ingest_keys_only_check_needs_a_key_and_admin_routes_are_closed(collector_factory):
    running = collector_factory(limits=LIMITS, management={"ingest_keys": {BOUND: "acme"}})
    with httpx.Client(base_url=running.management_url, timeout=10) as api:
        assert api.post("/api/v1/check", json={"tenant": "acme"}).status_code == 401
        assert check(api, BOUND).json()["allowed"]
        assert check(api, BOUND, tenant="globex").status_code == 403
        # acme's key (or no key) must not read another tenant's usage or change limits.
        for key in (None, BOUND):
            headers = {} if key is None else bearer(key)
            for method, path in (
                ("GET", "/api/v1/usage?tenant=globex"),
                ("GET", "/api/v1/events"),
                ("GET", "/api/v1/meters"),
                ("GET", "/api/v1/tenants/globex/status"),
                ("GET", "/api/v1/limits"),
                ("PUT", "/api/v1/limits"),
            ):
                answer = api.request(method, path, headers=headers, json={"rules": []})
                assert answer.status_code == 401, (key, method, path)


def test_without_keys_check_is_open(collector_factory):
    running = collector_factory(limits=LIMITS)
    with httpx.Client(base_url=running.management_url, timeout=10) as api:
        answer = api.post("/api/v1/check", json={"tenant": "acme", "estimated_input_tokens": 1})
        assert answer.json()["allowed"]
        # An unknown key is not an error where no key is needed.
        assert check(api, "whatever", tenant="acme").status_code == 200


def test_openapi_lists_ingest_keys_only_where_a_tenant_key_may_call(api):
    document = api.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ingestKey"]["scheme"] == schemes["adminKey"]["scheme"] == "bearer"
    both = [{"adminKey": []}, {"ingestKey": []}]
    assert document["paths"]["/api/v1/check"]["post"]["security"] == both
    assert document["paths"]["/api/v1/reconcile"]["post"]["security"] == both
    assert document["paths"]["/api/v1/outcomes"]["post"]["security"] == both
    # A tenant's own grants: its balance and history, never another tenant's.
    assert document["paths"]["/api/v1/grants/balance"]["get"]["security"] == both
    assert document["paths"]["/api/v1/grants/history"]["get"]["security"] == both
    assert "403" in document["paths"]["/api/v1/check"]["post"]["responses"]
    for path, item in document["paths"].items():
        ingest = (
            "/api/v1/check",
            "/api/v1/reconcile",
            "/api/v1/outcomes",
            "/api/v1/grants/balance",
            "/api/v1/grants/history",
        )
        if path.startswith("/api/") and path not in ingest:
            for operation in item.values():
                assert operation["security"] == [{"adminKey": []}], path


def test_a_request_id_is_per_tenant_so_no_key_sees_another_tenants_decision(api, running):
    theirs = check(api, UNBOUND, tenant="globex", request_id="order-1").json()
    ours = check(api, BOUND, request_id="order-1").json()
    assert ours["allowed"]
    assert ours["reservation_id"] != theirs["reservation_id"]
    assert [status["key"] for status in ours["limits"]] == [{"tenant": "acme"}]
    engine = running.collector.limits.engine
    assert engine.reservation(ours["reservation_id"]).request.tenant == "acme"
    assert remaining(api, "acme") == remaining(api, "globex") == 10_000 - 400
    # Within a tenant the request id still makes the check idempotent.
    assert check(api, BOUND, request_id="order-1").json() == ours
