"""Cost per outcome, end to end: the real OpenAI SDK against the fake LLM server,
instrumented by tollmeter and exporting over OTLP/gRPC to a real collector that requires
keys; outcomes reported by ``tollmeter.outcome`` spans and by ``POST /api/v1/outcomes``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

import tollmeter
from tests.collector._instrumented_app import InstrumentedApp
from tests.collector.conftest import RunningCollector

ADMIN = "outcomes-admin"
ACME_KEY = "outcomes-ingest-acme"
GLOBEX_KEY = "outcomes-ingest-globex"


@pytest.fixture
def keyed(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory(
        management={
            "admin_keys": [ADMIN],
            "ingest_keys": {ACME_KEY: "acme", GLOBEX_KEY: "globex"},
        },
        pricing={
            "overrides": [
                {
                    "model": "gpt-4o-mini",
                    "input_per_mtok": "0.15",
                    "output_per_mtok": "0.6",
                }
            ]
        },
    )


class App(InstrumentedApp):
    def chat(self, text: str) -> None:
        self.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
        )


@pytest.fixture
def app(keyed: RunningCollector, fake_llm: Any) -> Iterator[App]:
    instrumented = App(keyed, fake_llm, ACME_KEY)
    yield instrumented
    instrumented.close()


def _post(collector: RunningCollector, body: Any, key: str = ACME_KEY) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        f"{collector.management_url}/api/v1/outcomes",
        content=content,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=10,
    )


def _summary(collector: RunningCollector, **params: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{collector.management_url}/api/v1/outcomes/summary",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def test_cost_per_outcome_counts_each_outcome_once(app: App, keyed: RunningCollector) -> None:
    with tollmeter.attribute(tenant="acme", workflow="wf-span"):
        app.chat("Where is my parcel?")
        app.chat("It was due on Monday.")
        assert tollmeter.outcome("ticket_resolved", tracer_provider=app.provider)
    with tollmeter.attribute(tenant="acme", workflow="wf-post"):
        app.chat("Please reset my password.")
    with tollmeter.attribute(tenant="acme", workflow="wf-none"):
        app.chat("Just browsing, thanks.")
        app.chat("Never mind.")

    # The back end reports the second workflow's outcome, twice, and the first one's again.
    posted = [
        {"name": "ticket_resolved", "workflow_id": "wf-post", "value": 1},
        {"name": "ticket_resolved", "workflow_id": "wf-post"},
        {"name": "ticket_resolved", "workflow_id": "wf-span"},
    ]
    answer = _post(keyed, posted)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"stored": 1, "duplicates": 2}
    # The outcome span sent again, as an exporter retrying over gRPC would.
    (outcome_span,) = [s for s in app.seen.get_finished_spans() if s.name == "tollmeter.outcome"]
    assert app.exporter.export([outcome_span]) is SpanExportResult.SUCCESS

    events = keyed.events()
    assert len(events) == 5
    cost: dict[str, Decimal] = {}
    tokens: dict[str, int] = {}
    for event in events:
        assert event.cost is not None
        assert event.workflow_id is not None
        cost[event.workflow_id] = cost.get(event.workflow_id, Decimal(0)) + event.cost
        tokens[event.workflow_id] = tokens.get(event.workflow_id, 0) + event.total_tokens
    resolved_cost = cost["wf-span"] + cost["wf-post"]
    resolved_tokens = tokens["wf-span"] + tokens["wf-post"]

    summary = _summary(keyed, tenant="acme")
    (resolved,) = summary["outcomes"]
    assert resolved["name"] == "ticket_resolved"
    assert resolved["count"] == 2
    assert Decimal(resolved["value"]) == 2
    assert resolved["workflows"] == 2
    assert resolved["calls"] == 3
    assert resolved["total_tokens"] == resolved_tokens
    assert Decimal(resolved["cost"]) == resolved_cost
    assert Decimal(resolved["cost_per_outcome"]) == resolved_cost / 2
    assert resolved["currency"] == "USD"
    without = summary["without_outcome"]
    assert without["workflows"] == 1
    assert without["calls"] == 2
    assert without["total_tokens"] == tokens["wf-none"]
    assert Decimal(without["cost"]) == cost["wf-none"]
    # Filtered by another name, nothing is resolved and the lone workflow stays apart.
    assert _summary(keyed, name="refund_issued")["outcomes"] == []
    assert _summary(keyed, **{"from": "2000-01-01", "to": "2000-01-02"})["outcomes"] == []


def test_a_tenant_key_reports_for_its_tenant_only(keyed: RunningCollector) -> None:
    foreign = [{"name": "ticket_resolved", "workflow_id": "wf-1", "tenant": "globex"}]
    refused = _post(keyed, foreign)
    assert refused.status_code == 403
    assert "bound to tenant 'acme'" in refused.json()["error"]
    assert _post(keyed, foreign, key=GLOBEX_KEY).json() == {"stored": 1, "duplicates": 0}
    # The admin names any tenant; without one there is no tenant to report for.
    own = [{"name": "ticket_resolved", "workflow_id": "wf-1", "tenant": "acme"}]
    assert _post(keyed, own, key=ADMIN).json() == {"stored": 1, "duplicates": 0}
    anonymous = _post(keyed, [{"name": "ticket_resolved", "workflow_id": "wf-2"}], key=ADMIN)
    assert anonymous.status_code == 400
    assert "tenant: required" in anonymous.json()["error"]
    assert _summary(keyed, tenant="globex")["outcomes"][0]["count"] == 1
    assert _summary(keyed, tenant="acme")["outcomes"][0]["count"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[{"name": "x", "workflow_id": "w", "value": NaN}]', "finite number, not NaN"),
        ('[{"name": "x", "workflow_id": "w", "value": Infinity}]', "finite number"),
        ('[{"name": "x", "workflow_id": "w", "value": 1e400}]', "outcomes[0].value: magnitude"),
        ('[{"name": "x", "workflow_id": "w", "value": "1e400"}]', "outcomes[0].value: magnitude"),
        ('[{"name": "x", "workflow_id": "w", "value": "NaN"}]', "outcomes[0].value: must be"),
        ('[{"name": "x", "workflow_id": "w", "value": true}]', "expected a number, not bool"),
        ('[{"name": "x", "workflow_id": "w", "value": 1e-20}]', "digits after the point"),
        (json.dumps([{"name": "n" * 10_000, "workflow_id": "w"}]), "outcomes[0].name: longer"),
        (json.dumps([{"name": "x", "workflow_id": "w\x00"}]), "control characters"),
        (json.dumps([{"name": "ok", "workflow_id": "w"}, {"name": ""}]), "outcomes[1].name"),
        (json.dumps([{"name": "x", "workflow_id": "w", "cost": 1}]), "unknown field 'cost'"),
        ('{"name": "x"}', "JSON list"),
        ("[", "not JSON"),
    ],
)
def test_hostile_reports_are_refused_whole(
    keyed: RunningCollector, body: str, message: str
) -> None:
    answer = _post(keyed, body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert keyed.collector.ledger.read_outcome_rows(0, 10) == []


def test_oversized_reports_are_refused(keyed: RunningCollector) -> None:
    many = [{"name": "x", "workflow_id": f"w{i}"} for i in range(1001)]
    assert _post(keyed, many).status_code == 413
    huge = json.dumps([{"name": "x", "workflow_id": "w", "pad": "p" * 2_000_000}])
    assert _post(keyed, huge).status_code == 413
    assert keyed.collector.ledger.read_outcome_rows(0, 10) == []


def test_outcome_never_raises_and_refuses_what_cannot_be_sent(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    with tollmeter.attribute(tenant="acme"):
        assert not tollmeter.outcome("x", tracer_provider=app.provider)  # no workflow
        for value in (float("nan"), float("inf"), 1e400, 10**16, True, "3"):
            assert not tollmeter.outcome(
                "x", workflow_id="w", value=value, tracer_provider=app.provider
            )
        assert not tollmeter.outcome("n" * 129, workflow_id="w", tracer_provider=app.provider)
        assert not tollmeter.outcome("", workflow_id="w", tracer_provider=app.provider)
    assert app.seen.get_finished_spans() == ()
    assert "not recorded" in caplog.text


def test_a_hostile_outcome_span_is_refused_alone(app: App, keyed: RunningCollector) -> None:
    tracer = app.provider.get_tracer("hand-made")
    for value in (float("nan"), "1e400", 2.5):
        span = tracer.start_span(
            "tollmeter.outcome",
            attributes={
                "tollmeter.outcome.name": "ticket_resolved",
                "tollmeter.outcome.value": value,
                "tollmeter.workflow.id": f"wf-{value}",
            },
        )
        span.end()
    (row,) = keyed.collector.ledger.read_outcome_rows(0, 10)
    assert row[2:5] == ("wf-2.5", "ticket_resolved", "2.5")
    assert row[1] == "acme"  # the ingest key's tenant


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "yesterday"}, "from: 'yesterday' is not an ISO 8601 time"),
        ({"to": "2300-01-01"}, "to: '2300-01-01' is out of range"),
        ({"name": "n" * 129}, "name: longer than 128"),
        ({"group_by": "workflow"}, "unknown parameter 'group_by'"),
    ],
)
def test_bad_summary_parameters_are_refused(
    keyed: RunningCollector, params: dict[str, str], message: str
) -> None:
    answer = httpx.get(
        f"{keyed.management_url}/api/v1/outcomes/summary",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert message in answer.json()["error"]
