"""``GET /api/v1/tenants`` on a real collector: the usage API's totals per tenant, paged
and sorted, with each tenant's limit state, behind the admin key."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tollmeter.collector._records import UsageEvent

KEY = "tenants-admin-key"
LIMITS = {
    "rules": [
        {
            "name": "per-tenant",
            "group_by": ["tenant"],
            "measure": "total",
            "window": {"type": "calendar", "period": "month"},
            "limit": 100,
            "action": "block",
        }
    ]
}


def get(running: Any, path: str, key: str | None = KEY, **params: str) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{running.management_url}{path}", params=params, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def running(module_collector_factory: Any) -> Any:
    collector = module_collector_factory(
        management={"admin_keys": [KEY], "ingest_keys": {"ingest-key": None}}, limits=LIMITS
    )
    now = time.time_ns()
    events = [
        UsageEvent(
            event_id=f"t{tenant}-{call}",
            event_time_ns=now,
            provider="openai",
            operation="chat",
            tenant_id=f"tenant-{tenant:02d}",
            input_tokens=10 * (tenant + 1),
            output_tokens=5,
            total_tokens=10 * (tenant + 1) + 5,
            request_model="gpt-4o-mini",
        )
        for tenant in range(12)
        for call in range(tenant % 3 + 1)
    ]
    collector.call(collector.collector.pipeline.append_events(events))
    return collector


def test_every_tenant_once_with_the_usage_apis_totals(running: Any) -> None:
    usage = get(running, "/api/v1/usage", group_by="tenant").json()["rows"]
    pages: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        answer = get(running, "/api/v1/tenants", limit="5", offset=str(offset)).json()
        assert answer["total"] == 12
        pages.extend(answer["tenants"])
        offset = answer["next_offset"]
    assert [entry["tenant"] for entry in pages] == [f"tenant-{n:02d}" for n in range(12)]
    assert [entry["usage"] for entry in pages] == usage


def test_sorted_filtered_and_with_limit_state(running: Any) -> None:
    answer = get(running, "/api/v1/tenants", sort="total_tokens", limit="3").json()
    tokens = [entry["usage"]["total_tokens"] for entry in answer["tenants"]]
    assert tokens == sorted(tokens, reverse=True)
    assert answer["next_offset"] == 3
    top = answer["tenants"][0]
    assert top["tenant"] == "tenant-11"
    status = get(running, "/api/v1/tenants/tenant-11/status").json()
    assert status.pop("tenant") == "tenant-11"
    assert top["limits"] == status
    assert top["limits"]["blocked"] is True
    quiet = get(running, "/api/v1/tenants", contains="NT-00").json()
    assert [entry["tenant"] for entry in quiet["tenants"]] == ["tenant-00"]
    assert quiet["tenants"][0]["limits"]["blocked"] is False
    assert quiet["next_offset"] is None


@pytest.mark.parametrize(
    "params",
    [{"sort": "planet"}, {"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"start": "soon"}],
)
def test_bad_parameters_are_400(running: Any, params: dict[str, str]) -> None:
    response = get(running, "/api/v1/tenants", **params)
    assert response.status_code == 400
    assert response.json()["error"]


def test_needs_the_admin_key(running: Any) -> None:
    assert get(running, "/api/v1/tenants", key=None).status_code == 401
    assert get(running, "/api/v1/tenants", key="ingest-key").status_code == 403
    document = get(running, "/openapi.json", key=None).json()
    operation = document["paths"]["/api/v1/tenants"]["get"]
    assert operation["security"] == [{"adminKey": []}]
    assert {p["name"] for p in operation["parameters"]} >= {"sort", "offset", "limit"}
