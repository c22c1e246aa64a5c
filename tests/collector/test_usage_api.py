"""The usage API over HTTP: a real uvicorn server on a free port, a real SQLite ledger."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from starlette.applications import Starlette

from tollmeter.collector._meters import Meters
from tollmeter.collector._records import UsageEvent
from tollmeter.collector._usage_api import usage_routes
from tollmeter.collector.storage import open_ledger

# 2026-03-14 15:09:26 UTC
BASE_S = 1_773_500_966


def event(number: int, offset_s: int, **fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "event_id": f"e{number}",
        "event_time_ns": (BASE_S + offset_s) * 10**9,
        "provider": "openai",
        "operation": "chat",
        "tenant_id": "acme",
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "response_model": "gpt-4o",
        "cost": Decimal("0.1"),
        "currency": "USD",
    }
    values.update(fields)
    return UsageEvent(**values)


EVENTS = [
    event(1, 0),
    event(2, 60, project_id="web", feature="search"),
    event(3, 3600, tenant_id="globex", response_model="claude", api_key_id="k1"),
    event(4, 86400, usage_source="estimate"),
    event(5, 86400 * 20, tenant_id="globex"),
]


@pytest.fixture(scope="module")
def meters() -> Meters:
    return Meters()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, meters: Meters) -> Iterator[httpx.Client]:
    path: Path = tmp_path_factory.mktemp("usage") / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}")
    meters.apply(ledger.append(EVENTS).committed)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=usage_routes(ledger, meters)),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(200):
                if server.started:
                    break
                threading.Event().wait(0.05)
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        ledger.close()


def rows(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def test_totals(api: httpx.Client) -> None:
    (total,) = rows(api)
    assert total["requests"] == 5
    assert total["total_tokens"] == 75
    assert (total["input_tokens"], total["uncached_input_tokens"]) == (50, 50)
    assert (total["output_tokens"], total["non_reasoning_output_tokens"]) == (25, 25)
    assert (total["cost"], total["currency"]) == ("0.5", "USD")


def test_group_by_tenant_and_model(api: httpx.Client) -> None:
    got = rows(api, group_by="tenant,model")
    assert [(r["tenant"], r["model"], r["requests"]) for r in got] == [
        ("acme", "gpt-4o", 3),
        ("globex", "claude", 1),
        ("globex", "gpt-4o", 1),
    ]


def test_filters(api: httpx.Client) -> None:
    assert rows(api, tenant="globex")[0]["requests"] == 2
    assert rows(api, project="web")[0]["requests"] == 1
    assert rows(api, feature="search")[0]["requests"] == 1
    assert rows(api, api_key="k1")[0]["requests"] == 1
    assert rows(api, model="claude")[0]["requests"] == 1
    assert rows(api, usage_source="estimate")[0]["requests"] == 1
    assert rows(api, tenant="nobody") == []


def test_windows_and_time_range(api: httpx.Client) -> None:
    days = rows(api, window="day", start="2026-03-14T00:00:00Z", end="2026-03-16T00:00:00Z")
    assert [(r["window_start"], r["requests"]) for r in days] == [
        ("2026-03-14T00:00:00+00:00", 3),
        ("2026-03-15T00:00:00+00:00", 1),
    ]
    hours = rows(api, window="hour", group_by="tenant", start="2026-03-14T15:00:00")
    assert [(r["window_start"][11:16], r["tenant"], r["requests"]) for r in hours] == [
        ("15:00", "acme", 2),
        ("16:00", "globex", 1),
        ("15:00", "acme", 1),
        ("15:00", "globex", 1),
    ]
    # Unaligned bounds are answered from raw events.
    partial = rows(api, start="2026-03-14T15:09:27Z", end="2026-03-14T16:09:27Z")
    assert partial[0]["requests"] == 2


def test_events_are_paged_by_sequence(api: httpx.Client) -> None:
    first = api.get("/api/v1/events", params={"limit": 2}).json()
    assert [e["event_id"] for e in first["events"]] == ["e1", "e2"]
    assert first["events"][0]["cost"] == "0.1"
    rest = api.get("/api/v1/events", params={"after": first["next"], "limit": 10}).json()
    assert [e["sequence"] for e in rest["events"]] == [3, 4, 5]
    end = api.get("/api/v1/events", params={"after": rest["next"]}).json()
    assert end == {"events": [], "next": 5}


def test_meters_endpoint_reads_the_current_window(api: httpx.Client, meters: Meters) -> None:
    now_ns = time.time_ns()
    meters.apply(
        [
            event(100, 0, event_time_ns=now_ns, event_id="live-1", tenant_id="initech"),
            event(101, 0, event_time_ns=now_ns, event_id="live-2", tenant_id="initech"),
        ]
    )
    body = api.get("/api/v1/meters", params={"window": "hour"}).json()
    assert body["group_by"] == "tenant"
    assert body["meters"]["initech"]["requests"] == 2
    assert body["meters"]["initech"]["cost"] == "0.2"
    by_model = api.get("/api/v1/meters", params={"group_by": "model"}).json()
    assert by_model["window"] == "day"
    assert by_model["meters"]["gpt-4o"]["requests"] >= 2


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/v1/usage", {"group_by": "colour"}, "cannot group by 'colour'"),
        ("/api/v1/usage", {"window": "fortnight"}, "window must be one of"),
        ("/api/v1/meters", {"window": "week"}, "window must be one of"),
        ("/api/v1/usage", {"start": "yesterday"}, "start must be an ISO 8601 time"),
        ("/api/v1/usage", {"start": "2026-03-02", "end": "2026-03-01"}, "before end"),
        ("/api/v1/usage", {"limit": "0"}, "limit must be between"),
        ("/api/v1/usage", {"tennant": "acme"}, "unknown parameter 'tennant'"),
        ("/api/v1/usage", {"end": "9999-12-31T23:59:59Z"}, "between 1970 and 2200"),
        ("/api/v1/events", {"after": "-1"}, "after must be between"),
        ("/api/v1/events", {"limit": "many"}, "limit must be an integer"),
        ("/api/v1/events", {"limit": "100000"}, "limit must be between"),
        ("/api/v1/meters", {"group_by": "colour"}, "group_by must be one of"),
    ],
)
def test_bad_parameters_get_a_clear_400(api: httpx.Client, path, params, message) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_long_bad_values_are_not_echoed_whole(api: httpx.Client) -> None:
    for params in ({"start": "9" * 5000}, {"group_by": "x" * 5000}, {"y" * 5000: "1"}):
        response = api.get("/api/v1/usage", params=params)
        assert response.status_code == 400
        assert len(response.json()["error"]) < 300


def test_routes_describe_themselves_for_openapi() -> None:
    with open_ledger("memory://") as ledger:
        routes = usage_routes(ledger, Meters())
    for route in routes:
        summary, _, spec = (route.endpoint.__doc__ or "").partition("---")
        assert summary.strip(), route.path
        assert yaml.safe_load(spec)["parameters"], route.path
    assert [route.name for route in routes] == ["usage", "events", "current_meters"]
