"""Every refusal of the management API has one JSON shape, whoever produces it: a
route's own checks, the key guard, the router's 404 and 405, or an unhandled exception."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ADMIN = "admin-key"
INGEST = "ingest-key"
LIMITS = {"rules": [{"name": "quota", "limit": 10_000, "window": "day", "group_by": ["tenant"]}]}
LONG = "x" * 300
TOO_LARGE = b'{"rules": [], "pad": "' + b"x" * 70_000 + b'"}'
BAD_RULE = {"rules": [{"name": "quota", "limit": -1, "window": "fortnight"}]}

# (method, path, key, body, status, code)
CASES = [
    ("GET", "/api/v1/usage?window=fortnight", ADMIN, None, 400, "bad_request"),
    ("GET", "/api/v1/usage?colour=red", ADMIN, None, 400, "bad_request"),
    ("GET", "/api/v1/events?limit=-1", ADMIN, None, 400, "bad_request"),
    ("GET", "/api/v1/meters?window=fortnight", ADMIN, None, 400, "bad_request"),
    ("GET", "/api/v1/tenants?sort=colour", ADMIN, None, 400, "bad_request"),
    ("GET", f"/api/v1/tenants/{LONG}/status", ADMIN, None, 400, "bad_request"),
    ("GET", f"/api/v1/tenants/{LONG}/decisions", ADMIN, None, 400, "bad_request"),
    ("POST", "/api/v1/check", ADMIN, b"not json", 400, "bad_request"),
    ("POST", "/api/v1/reconcile", ADMIN, b"{}", 400, "bad_request"),
    ("POST", "/api/v1/reconcile", ADMIN, b'{"reservation_id": "r-1"}', 404, "not_found"),
    ("PUT", "/api/v1/limits", ADMIN, BAD_RULE, 400, "invalid_limits"),
    ("PUT", "/api/v1/limits", ADMIN, TOO_LARGE, 413, "too_large"),
    ("POST", "/api/v1/export?timeout=0", ADMIN, None, 400, "bad_request"),
    ("GET", "/api/v1/usage", None, None, 401, "unauthorized"),
    ("GET", "/api/v1/usage", "not-a-key", None, 401, "unauthorized"),
    ("GET", "/api/v1/usage", INGEST, None, 403, "forbidden"),
    ("GET", "/metrics", None, None, 401, "unauthorized"),
    ("GET", "/api/v1/nowhere", ADMIN, None, 404, "not_found"),
    ("GET", "/nowhere", None, None, 404, "not_found"),
    ("DELETE", "/api/v1/usage", ADMIN, None, 405, "method_not_allowed"),
    ("GET", "/api/v1/boom", ADMIN, None, 500, "internal_error"),
]


async def boom(request: Request) -> Response:
    raise RuntimeError("secret detail from /var/lib/tollmeter/ledger.db")


@pytest.fixture(scope="module")
def running(module_collector_factory):
    running = module_collector_factory(
        limits=LIMITS,
        management={"admin_keys": [ADMIN], "ingest_keys": {INGEST: None}},
        metrics={"require_admin_key": True},
    )
    # A route that fails: the API's own handler answers for it.
    running.collector.add_management_routes([Route("/api/v1/boom", boom, methods=["GET"])])
    return running


def ask(running, method: str, path: str, key: str | None, body: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    request: dict[str, object] = {"headers": headers, "timeout": 30}
    if isinstance(body, bytes):
        request["content"] = body
    elif body is not None:
        request["json"] = body
    return httpx.request(method, f"{running.management_url}{path}", **request)


@pytest.mark.parametrize(
    ("method", "path", "key", "body", "status", "code"),
    CASES,
    ids=[f"{case[0]} {case[1][:40]} {case[4]}" for case in CASES],
)
def test_every_refusal_has_the_same_body(running, method, path, key, body, status, code):
    response = ask(running, method, path, key, body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert set(payload) <= {"error", "code", "problems"}
    assert payload["code"] == code
    assert isinstance(payload["error"], str)
    assert payload["error"]


def test_rejected_limits_list_every_problem_with_its_key(running):
    payload = ask(running, "PUT", "/api/v1/limits", ADMIN, BAD_RULE).json()
    keys = {problem["key"] for problem in payload["problems"]}
    assert {"limits.rules[0].limit", "limits.rules[0].window"} <= keys
    assert all(set(problem) == {"key", "reason"} for problem in payload["problems"])


def test_unhandled_errors_say_nothing_of_their_cause(running):
    payload = ask(running, "GET", "/api/v1/boom", ADMIN, None).json()
    assert "secret" not in payload["error"]
    assert "ledger.db" not in payload["error"]


def test_refusals_keep_their_headers(running):
    unauthenticated = ask(running, "GET", "/api/v1/usage", None, None)
    assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="tollmeter"'
    wrong_method = ask(running, "DELETE", "/api/v1/usage", ADMIN, None)
    assert set(wrong_method.headers["allow"].split(", ")) == {"GET", "HEAD"}
