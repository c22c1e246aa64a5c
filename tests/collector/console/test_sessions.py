"""Who may read the console: the management API's rules, sessions that end with their key,
secure cookies over TLS, and no cross-site or open-redirect tricks."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

KEY = "session-admin-key"


def client(running: Any, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=running.management_url, timeout=10, **options)


def log_in(http: httpx.Client, key: str, next_path: str = "/") -> httpx.Response:
    return http.post("/console/login", data={"key": key, "next": next_path})


def test_without_any_key_the_console_is_open_like_the_api(collector_factory: Any) -> None:
    running = collector_factory()
    with client(running) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert "No admin key is configured" in page.text
        assert "Log out" not in page.text
        assert http.get("/console/health").status_code == 200
        assert http.get("/api/v1/tenants").status_code == 200


def test_ingest_keys_without_an_admin_key_close_the_console(collector_factory: Any) -> None:
    running = collector_factory(management={"ingest_keys": {"ingest-key": None}})
    with client(running) as http:
        page = http.get("/", follow_redirects=True)
        assert page.url.path == "/console/login"
        assert "management.admin_keys" in page.text
        assert "<form" not in page.text
        assert log_in(http, "ingest-key").status_code == 401
        assert http.get("/console/tenants").status_code == 303


def test_a_session_ends_when_its_key_is_removed(collector_factory: Any, make_config: Any) -> None:
    running = collector_factory(management={"admin_keys": [KEY, "other-key"]})
    with client(running) as http:
        answer = log_in(http, KEY, "/console/health")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/health"
        cookie = answer.headers["set-cookie"]
        assert KEY not in cookie
        assert "httponly" in cookie.lower()
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in cookie.lower()
        assert http.get("/console/health").status_code == 200
        running.collector.reload(make_config(management={"admin_keys": ["other-key"]}))
        assert http.get("/console/health").headers["location"].startswith("/console/login")
        assert log_in(http, KEY).status_code == 401


def test_logins_from_other_sites_and_redirects_elsewhere_are_refused(
    collector_factory: Any,
) -> None:
    running = collector_factory(management={"admin_keys": [KEY]})
    with client(running) as http:
        forged = http.post(
            "/console/login", data={"key": KEY}, headers={"Origin": "http://evil.example"}
        )
        assert forged.status_code == 403
        assert "set-cookie" not in forged.headers
        for target in ["//evil.example/", "https://evil.example/", "/\\evil.example"]:
            assert log_in(http, KEY, target).headers["location"] == "/"


def test_the_cookie_is_secure_over_tls(collector_factory: Any, tls_files: Any) -> None:
    running = collector_factory(
        management={"admin_keys": [KEY]}, server={"tls": tls_files.server_section()}
    )
    assert running.management_url.startswith("https://")
    with client(running, verify=ssl.create_default_context(cafile=str(tls_files.ca_file))) as http:
        answer = log_in(http, KEY)
        assert answer.status_code == 303
        assert "secure" in answer.headers["set-cookie"].lower().split("; ")
        assert http.get("/").status_code == 200


def test_the_tenant_page_lists_the_checks_it_was_denied(collector_factory: Any) -> None:
    rule = {"name": "tiny", "limit": 10, "window": "day", "action": "block"}
    running = collector_factory(limits={"rules": [rule]})
    with client(running) as http:
        for request_id in ("fits", "<b>too-big</b>"):
            http.post(
                "/api/v1/check",
                json={"tenant": "acme", "estimated_input_tokens": 8, "request_id": request_id},
            )
        page = http.get("/console/tenant", params={"id": "acme"}).text
        other = http.get("/console/tenant", params={"id": "globex"}).text
    assert "Recent checks denied" in page
    assert "&lt;b&gt;too-big&lt;/b&gt;" in page
    assert "Recent checks denied" not in other
