"""Management API: health, readiness, OpenAPI, admin keys, usage routes, feature routes."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ADMIN = {"management": {"admin_keys": ["admin-one", "admin-two"]}}


def get(running, path: str, key: str | None = None, scheme: str = "Bearer") -> httpx.Response:
    headers = {"authorization": f"{scheme} {key}"} if key else {}
    return httpx.get(f"{running.management_url}{path}", headers=headers, timeout=10)


def export(running, spans) -> None:
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_health_and_readiness(collector):
    assert get(collector, "/healthz").json() == {"status": "ok"}
    ready = get(collector, "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {
            "started": True,
            "ledger": True,
            "receivers": True,
            "pipeline": True,
            "ledger_commits": True,
        },
    }


def test_not_ready_once_the_pipeline_stops(collector):
    collector.call(collector.collector.pipeline.stop(timeout=5))
    ready = get(collector, "/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["pipeline"] is False
    assert ready.json()["reasons"] == {"pipeline": "the pipeline is not running"}
    assert get(collector, "/healthz").status_code == 200


def test_usage_totals_are_exact(collector, make_spans):
    export(collector, make_spans(4, tenant="acme", input_tokens=1000, output_tokens=7))
    export(collector, make_spans(2, tenant="globex", id_prefix="g", model="gpt-4o"))
    body = get(collector, "/api/v1/usage?group_by=tenant").json()
    rows = {row["tenant"]: row for row in body["rows"]}
    assert set(rows) == {"acme", "globex"}
    assert (rows["acme"]["requests"], rows["acme"]["input_tokens"]) == (4, 4000)
    assert rows["acme"]["output_tokens"] == 28
    assert (rows["globex"]["requests"], rows["globex"]["input_tokens"]) == (2, 200)
    events = get(collector, "/api/v1/events?limit=10").json()["events"]
    assert len(events) == 6


def test_admin_keys_protect_the_api_only(collector_factory):
    running = collector_factory(**ADMIN)
    for key, scheme in [(None, "Bearer"), ("wrong", "Bearer"), ("admin-one", "Basic")]:
        response = get(running, "/api/v1/usage", key, scheme)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert get(running, "/api/v1/usage", "admin-one").status_code == 200
    assert get(running, "/api/v1/events", "admin-two", scheme="bearer").status_code == 200
    for path in ["/healthz", "/readyz", "/openapi.json"]:
        assert get(running, path).status_code == 200


def test_openapi_lists_every_route(collector_factory):
    running = collector_factory(**ADMIN)

    async def ping(request: Request) -> JSONResponse:
        """Answer pong.

        A feature route added after start.
        ---
        responses:
          "200": {description: pong}
        """
        return JSONResponse({"pong": True})

    running.collector.add_management_routes([Route("/api/v1/ping", ping, methods=["GET", "POST"])])
    document = get(running, "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    routes = running.collector._management.routes
    listed = {(path, method) for path, item in document["paths"].items() for method in item}
    expected = {
        (route.path, method.lower())
        for route in routes
        if route.include_in_schema  # the console's HTML pages are not API operations
        for method in route.methods
        if method != "HEAD"
    }
    assert listed == expected
    assert {
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/api/v1/usage",
        "/api/v1/events",
        "/api/v1/tenants",
        "/api/v1/ping",
    } <= set(document["paths"])
    assert not [path for path in document["paths"] if path == "/" or path.startswith("/console")]
    ping_doc = document["paths"]["/api/v1/ping"]["post"]
    assert ping_doc["summary"] == "Answer pong."
    assert ping_doc["responses"]["200"]["description"] == "pong"
    assert ping_doc["security"] == [{"adminKey": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]
    assert get(running, "/api/v1/ping").status_code == 401
    assert get(running, "/api/v1/ping", "admin-one").json() == {"pong": True}


@pytest.mark.parametrize("path", ["/api/v1/usage?group_by=planet", "/api/v1/usage?bogus=1"])
def test_bad_usage_parameters_are_400(collector, path):
    response = get(collector, path)
    assert response.status_code == 400
    assert response.json()["error"]


def test_a_malformed_docstring_does_not_break_the_document(collector):
    async def odd(request: Request) -> JSONResponse:
        """Odd route.
        ---
        responses: [unclosed
        """
        return JSONResponse({})

    collector.collector.add_management_routes([Route("/api/v1/odd", odd, methods=["GET"])])
    document = get(collector, "/openapi.json").json()
    assert document["paths"]["/api/v1/odd"]["get"]["summary"] == "Odd route."
