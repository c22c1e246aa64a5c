"""Avoided usage, end to end: the real OpenAI SDK against the fake LLM server,
instrumented by tollmeter, in an app with a tiny response cache that reports its hits
with ``tollmeter.cache_hit``; spans go over OTLP/gRPC to a real collector with a daily
limit, whose usage API answers billed and avoided usage apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

import tollmeter
from tests.collector._instrumented_app import InstrumentedApp
from tests.collector.conftest import RunningCollector

ADMIN = "avoided-admin"
ACME_KEY = "avoided-ingest-acme"
DAILY = 100_000


@pytest.fixture
def keyed(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory(
        management={"admin_keys": [ADMIN], "ingest_keys": {ACME_KEY: "acme"}},
        pricing={
            "overrides": [
                {"model": "gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}
            ]
        },
        limits={"rules": [{"name": "daily", "limit": DAILY, "window": "day"}]},
    )


class CachingApp(InstrumentedApp):
    """An application answering repeated questions from its own cache."""

    def __init__(self, collector: RunningCollector, fake_llm: Any) -> None:
        super().__init__(collector, fake_llm, ACME_KEY)
        self.cache: dict[str, tuple[str, int, int]] = {}

    def ask(self, question: str) -> str:
        cached = self.cache.get(question)
        if cached is not None:
            answer, input_tokens, output_tokens = cached
            assert tollmeter.cache_hit(
                model="gpt-4o-mini",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                provider="openai",
                tracer_provider=self.provider,
            )
            return answer
        reply = self.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
        assert reply.usage is not None
        answer = reply.choices[0].message.content or ""
        self.cache[question] = (answer, reply.usage.prompt_tokens, reply.usage.completion_tokens)
        return answer


@pytest.fixture
def app(keyed: RunningCollector, fake_llm: Any) -> Iterator[CachingApp]:
    made = CachingApp(keyed, fake_llm)
    yield made
    made.close()


def _get(collector: RunningCollector, path: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{collector.management_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )


def _avoided(collector: RunningCollector, **params: str) -> list[dict[str, Any]]:
    answer = _get(collector, "/api/v1/usage/avoided", **params)
    assert answer.status_code == 200, answer.text
    groups: list[dict[str, Any]] = answer.json()["avoided"]
    return groups


def _remaining(collector: RunningCollector) -> int:
    status = _get(collector, "/api/v1/tenants/acme/status").json()
    return int({s["name"]: s["remaining"] for s in status["limits"]}["daily"])


def test_a_cached_answer_is_avoided_usage_not_billed(
    app: CachingApp, keyed: RunningCollector
) -> None:
    with tollmeter.attribute(tenant="acme", feature="faq"):
        first = app.ask("What are your opening hours?")
        assert app.ask("What are your opening hours?") == first
    # The cache-hit span sent again, as an exporter retrying over gRPC would.
    (hit,) = [s for s in app.seen.get_finished_spans() if s.name == "tollmeter.cache_hit"]
    assert app.exporter.export([hit]) is SpanExportResult.SUCCESS

    (billed,) = keyed.events()
    assert billed.feature == "faq"
    assert billed.cost is not None
    (group,) = _avoided(keyed, group_by="tenant,feature,model")
    assert group == {
        "tenant": "acme",
        "feature": "faq",
        "model": "gpt-4o-mini",
        "calls": 1,
        "avoided_input_tokens": billed.input_tokens,
        "avoided_output_tokens": billed.output_tokens,
        "avoided_total_tokens": billed.total_tokens,
        # The same tokens of the same model, priced by the same pricer.
        "saved_cost": group["saved_cost"],
        "currency": "USD",
        "unpriced_calls": 0,
    }
    assert Decimal(group["saved_cost"]) == billed.cost
    # Billed usage is the first call alone.
    usage = _get(keyed, "/api/v1/usage", tenant="acme").json()
    assert sum(row["total_tokens"] for row in usage["rows"]) == billed.total_tokens
    # The limit counts the billed call only.
    pause = threading.Event()
    for _ in range(500):
        if _remaining(keyed) == DAILY - billed.total_tokens:
            break
        pause.wait(0.02)
    assert _remaining(keyed) == DAILY - billed.total_tokens
    assert _avoided(keyed, **{"from": "2000-01-01", "to": "2000-01-02"}) == []


def test_hostile_cache_hit_spans_are_refused_alone(
    app: CachingApp, keyed: RunningCollector
) -> None:
    tracer = app.provider.get_tracer("hand-made")
    good = {"tollmeter.avoided.model": "gpt-4o-mini", "tollmeter.avoided.input_tokens": 5}
    hostile: list[dict[str, Any]] = [
        {**good, "tollmeter.avoided.input_tokens": -1},
        {**good, "tollmeter.avoided.input_tokens": 2**31},
        {**good, "tollmeter.avoided.input_tokens": "5"},
        {**good, "tollmeter.avoided.input_tokens": 1.5},
        {**good, "tollmeter.avoided.output_tokens": True},
        {**good, "tollmeter.avoided.model": "m" * 257},
        {**good, "tollmeter.avoided.model": "gpt\x00"},
        {**good, "tollmeter.avoided.id": ""},
        {**good, "tollmeter.tenant.id": "globex"},  # not the ingest key's tenant
        {"tollmeter.avoided.model": "gpt-4o-mini"},
    ]
    for attributes in [*hostile, good]:
        tracer.start_span("tollmeter.cache_hit", attributes=attributes).end()
    (group,) = _avoided(keyed, group_by="tenant")
    assert (group["tenant"], group["calls"], group["avoided_input_tokens"]) == ("acme", 1, 5)
    assert keyed.events() == []


def test_cache_hit_never_raises_and_refuses_what_cannot_be_sent(
    app: CachingApp, caplog: pytest.LogCaptureFixture
) -> None:
    provider = app.provider
    with tollmeter.attribute(tenant="acme"):
        for tokens in (-1, 2**31, 1.5, True, "3", None):
            assert not tollmeter.cache_hit(
                model="gpt-4o-mini",
                input_tokens=tokens,  # type: ignore[arg-type]
                tracer_provider=provider,
            )
        assert not tollmeter.cache_hit(model="", input_tokens=1, tracer_provider=provider)
        assert not tollmeter.cache_hit(
            model="gpt-4o-mini", input_tokens=1, provider="x\n", tracer_provider=provider
        )
    assert app.seen.get_finished_spans() == ()
    assert "not recorded" in caplog.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "project"}, "group_by: 'project' is not a list"),
        ({"group_by": "model,model"}, "distinct"),
        ({"from": "yesterday"}, "from: 'yesterday' is not an ISO 8601 time"),
        ({"start": "2026-01-01"}, "unknown parameter 'start'"),
    ],
)
def test_bad_parameters_are_refused(
    keyed: RunningCollector, params: dict[str, str], message: str
) -> None:
    answer = _get(keyed, "/api/v1/usage/avoided", **params)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
