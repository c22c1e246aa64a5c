"""Plans in a real collector with either limits engine (in-process and Redis): a free
tenant at its quota is moved to pro through the API and admitted at once, with the
month's usage still counted; every event records the plan it was metered under, which
the usage API and ``tollmeter usage`` group and filter by."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.collector.conftest import RunningCollector, genai_spans
from tollmeter.collector._cli_group import cli

ADMIN = "admin-key"
ACME_KEY = "acme-ingest-key"
PLANS = {
    "free": {
        "default": True,
        "limits": [
            {"name": "monthly-tokens", "limit": 1_000, "window": "month"},
            {"name": "rpm", "measure": "requests", "limit": 100, "window": "1m"},
        ],
    },
    "pro": {
        "limits": [
            {"name": "monthly-tokens", "limit": 100_000, "window": "month"},
            {"name": "rpm", "measure": "requests", "limit": 1_000, "window": "1m"},
        ],
    },
}
CHECK = {"tenant": "acme", "estimated_input_tokens": 80, "max_output_tokens": 20}


def _admin(method: str, url: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, url, headers=headers, timeout=10, **kwargs)


def _send(running: RunningCollector, count: int, prefix: str) -> None:
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint,
        insecure=True,
        headers={"x-tollmeter-key": ACME_KEY},
        timeout=10,
    )
    try:
        spans = genai_spans(count, tenant="acme", id_prefix=prefix)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _events(running: RunningCollector, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        answer = _admin("GET", f"{running.management_url}/api/v1/events")
        answer.raise_for_status()
        events: list[dict[str, Any]] = answer.json()["events"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def _monthly(answer: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [e for e in answer["limits"] if e["name"] == "monthly-tokens"]
    return entry


@pytest.mark.parametrize("engine", ["memory", "redis"])
def test_an_upgrade_admits_at_once_and_keeps_the_months_usage(
    engine: str, request: pytest.FixtureRequest, collector_factory: Callable[..., Any]
) -> None:
    limits: dict[str, Any] = {"reservation_ttl": "1h", "rules": []}
    if engine == "redis":
        limits["storage"] = request.getfixturevalue("redis_url")
    running: RunningCollector = collector_factory(
        plans=PLANS,
        limits=limits,
        management={"admin_keys": [ADMIN], "ingest_keys": {ACME_KEY: "acme"}},
    )
    api = running.management_url
    plan_url = f"{api}/api/v1/tenants/acme/plan"
    assert _admin("GET", plan_url).json() == {"tenant": "acme", "plan": "free"}

    # 8 calls of 120 tokens on the free plan: 960 of its 1,000 a month.
    _send(running, 8, f"free-{engine}")
    events = _events(running, 8)
    assert [e["plan"] for e in events] == ["free"] * 8
    deadline = time.monotonic() + 10
    while True:
        denied = _admin("POST", f"{api}/api/v1/check", json=CHECK).json()
        if not denied["allowed"] or time.monotonic() > deadline:
            break
        _admin(
            "POST",
            f"{api}/api/v1/reconcile",
            json={"reservation_id": denied["reservation_id"], "cancelled": True},
        )
        time.sleep(0.02)
    assert (denied["allowed"], denied["denied_by"]) == (False, "monthly-tokens")
    assert _monthly(denied)["limit"] == 1_000
    # The status reads the counter at the tenant's own plan's value, not the largest's.
    status_url = f"{api}/api/v1/tenants/acme/status"
    assert _monthly(_admin("GET", status_url).json())["limit"] == 1_000

    # The tenant's own key may not move it; an unknown plan is refused; neither changes it.
    own = httpx.put(
        plan_url, json={"plan": "pro"}, headers={"x-tollmeter-key": ACME_KEY}, timeout=10
    )
    assert own.status_code == 403
    unknown = _admin("PUT", plan_url, json={"plan": "platinum"})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "unknown_plan")
    assert _admin("GET", plan_url).json()["plan"] == "free"
    assert not _admin("POST", f"{api}/api/v1/check", json=CHECK).json()["allowed"]

    moved = _admin("PUT", plan_url, json={"plan": "pro"})
    assert moved.json() == {"tenant": "acme", "plan": "pro"}
    admitted = _admin("POST", f"{api}/api/v1/check", json=CHECK).json()
    assert admitted["allowed"], admitted
    # The free month's 960 tokens and this reservation's 100 count against pro's 100,000.
    assert (_monthly(admitted)["limit"], _monthly(admitted)["remaining"]) == (100_000, 98_940)
    assert _monthly(_admin("GET", status_url).json())["limit"] == 100_000

    _send(running, 2, f"pro-{engine}")
    events = _events(running, 10)
    assert [e["plan"] for e in events] == ["free"] * 8 + ["pro"] * 2

    # Handing the tenant back to the file: the tenant's own key may not, an admin may,
    # once; the free plan applies again to the next check.
    assert (
        httpx.delete(plan_url, headers={"x-tollmeter-key": ACME_KEY}, timeout=10).status_code == 403
    )
    assert _admin("DELETE", plan_url).json() == {"tenant": "acme", "plan": "free", "removed": True}
    assert _admin("DELETE", plan_url).json() == {"tenant": "acme", "plan": "free", "removed": False}
    assert not _admin("POST", f"{api}/api/v1/check", json=CHECK).json()["allowed"]
    assert _admin("PUT", plan_url, json={"plan": "pro"}).status_code == 200

    # The usage API and ``tollmeter usage`` split the month by the plan it was used under.
    now = datetime.now(timezone.utc)
    start, end = (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()
    usage_url = f"{api}/api/v1/usage"
    by_plan = _admin("GET", usage_url, params={"group_by": "plan", "start": start, "end": end})
    assert [(r["plan"], r["total_tokens"]) for r in by_plan.json()["rows"]] == [
        ("free", 960),
        ("pro", 240),
    ]
    pro = _admin("GET", usage_url, params={"plan": "pro", "start": start, "end": end})
    assert [r["requests"] for r in pro.json()["rows"]] == [2]
    unbounded = _admin("GET", usage_url, params={"group_by": "plan"})
    assert unbounded.status_code == 400
    printed = CliRunner().invoke(
        cli,
        ["usage", "--url", api, "--admin-key", ADMIN, "--group-by", "plan",
         "--since", "1h", "--until", end],
    )  # fmt: skip
    assert printed.exit_code == 0, printed.output
    lines = printed.output.splitlines()
    assert lines[0].split()[:2] == ["plan", "requests"]
    assert [line.split()[:2] for line in lines[2:]] == [["free", "8"], ["pro", "2"]]
