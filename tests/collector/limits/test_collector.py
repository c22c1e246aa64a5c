"""Limits inside a real collector: OTLP spans reconcile reservations, expiry, admin keys,
calls in flight and forecasts in the status, the metrics and the hooks."""

from __future__ import annotations

import importlib
import threading
import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client.parser import text_string_to_metric_families

from tollmeter.collector._records import UsageEvent

LIMITS = {
    "reservation_ttl": "1s",
    "rules": [{"name": "quota", "limit": 10_000, "window": "day", "alert_at": [0.5]}],
}


def _send(running, spans) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{running.http_endpoint}/v1/traces", timeout=10)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _check(client, **body):
    answer = client.post("/api/v1/check", json={"tenant": "tenant-a", **body})
    answer.raise_for_status()
    return answer.json()


def _wait(predicate, timeout=10.0):
    pause = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        pause.wait(0.02)
    return predicate()


@pytest.fixture
def running(collector_factory):
    return collector_factory(limits=LIMITS)


@pytest.fixture
def client(running):
    with httpx.Client(base_url=running.management_url, timeout=10) as made:
        yield made


def test_spans_with_a_reservation_id_replace_the_reservation(running, client, make_spans):
    reserved = _check(client, estimated_input_tokens=3000, max_output_tokens=1000)
    rid = reserved["reservation_id"]
    _send(
        running,
        make_spans(1, input_tokens=100, output_tokens=20, extra={"tollmeter.reservation.id": rid}),
    )
    assert _wait(lambda: running.collector.limits.engine.reservation(rid) is None)
    status = client.get("/api/v1/tenants/tenant-a/status").json()
    assert status["limits"][0]["remaining"] == 10_000 - 120
    [event] = running.events()
    assert event.reservation_id == rid


def test_usage_from_apps_that_never_check_counts(running, client, make_spans):
    _send(running, make_spans(5, input_tokens=1900, output_tokens=100, id_prefix="bulk"))
    assert _wait(lambda: client.get("/api/v1/tenants/tenant-a/status").json()["blocked"])
    denied = _check(client, estimated_input_tokens=10)
    assert (denied["allowed"], denied["denied_by"]) == (False, "quota")
    # Another tenant has its own counter.
    assert _check(client, tenant="tenant-b", estimated_input_tokens=10)["allowed"]


def test_unreported_reservation_expires_into_the_ledger_once(running, client):
    rid = _check(client, estimated_input_tokens=700, model="gpt-4o-mini")["reservation_id"]
    assert _wait(lambda: any(e.reservation_id == rid for e in running.events()))
    [event] = [e for e in running.events() if e.reservation_id == rid]
    assert (event.usage_source, event.input_tokens, event.collector_id) == (
        "reservation",
        700,
        "test-collector",
    )
    assert running.collector.limits.engine.reservation(rid) is None
    status = client.get("/api/v1/tenants/tenant-a/status").json()
    assert status["limits"][0]["remaining"] == 10_000 - 700
    assert len([e for e in running.events() if e.reservation_id == rid]) == 1


def test_gateway_reconcile_goes_through_the_pipeline(running, client):
    rid = _check(client, estimated_input_tokens=500)["reservation_id"]
    answer = client.post(
        "/api/v1/reconcile",
        json={"reservation_id": rid, "input_tokens": 50, "output_tokens": 5, "provider": "openai"},
    )
    assert answer.status_code == 200, answer.text
    [event] = running.events()
    assert (event.total_tokens, event.sequence) == (55, answer.json()["sequence"])
    status = client.get("/api/v1/tenants/tenant-a/status").json()
    assert status["limits"][0]["remaining"] == 10_000 - 55


def test_limits_state_survives_a_restart(collector_factory, make_spans):
    first = collector_factory(limits=LIMITS | {"reservation_ttl": "1h"})
    with httpx.Client(base_url=first.management_url, timeout=10) as client:
        rid = _check(client, estimated_input_tokens=6000)["reservation_id"]
    first.stop()
    second = collector_factory(limits=LIMITS | {"reservation_ttl": "1h"})
    with httpx.Client(base_url=second.management_url, timeout=10) as client:
        assert not _check(client, estimated_input_tokens=5000)["allowed"]
        _send(
            second,
            make_spans(
                1, input_tokens=10, output_tokens=0, extra={"tollmeter.reservation.id": rid}
            ),
        )
        assert _wait(
            lambda: (
                client.get("/api/v1/tenants/tenant-a/status").json()["limits"][0]["remaining"]
                == 10_000 - 10
            )
        )


def test_the_limits_api_needs_an_admin_key_when_keys_are_configured(collector_factory):
    running = collector_factory(limits=LIMITS, management={"admin_keys": ["sekret"]})
    with httpx.Client(base_url=running.management_url, timeout=10) as client:
        body = {"tenant": "tenant-a", "estimated_input_tokens": 1}
        assert client.post("/api/v1/check", json=body).status_code == 401
        assert client.put("/api/v1/limits", json={"rules": []}).status_code == 401
        headers = {"Authorization": "Bearer sekret"}
        assert client.post("/api/v1/check", json=body, headers=headers).json()["allowed"]


def test_a_span_of_another_tenant_cannot_settle_a_reservation(running, client, make_spans):
    rid = _check(client, estimated_input_tokens=3000)["reservation_id"]
    # tenant-b's span names tenant-a's reservation (a leaked or guessed id).
    _send(
        running,
        make_spans(
            1,
            tenant="tenant-b",
            input_tokens=100,
            output_tokens=20,
            id_prefix="b",
            extra={"tollmeter.reservation.id": rid},
        ),
    )
    assert _wait(lambda: any(e.tenant_id == "tenant-b" for e in running.events()))
    assert running.collector.limits.engine.reservation(rid) is not None
    status_b = client.get("/api/v1/tenants/tenant-b/status").json()
    assert status_b["limits"][0]["remaining"] == 10_000 - 120
    status_a = client.get("/api/v1/tenants/tenant-a/status").json()
    assert status_a["limits"][0]["remaining"] == 10_000 - 3000
    # tenant-a's own reconcile still finds its reservation.
    answer = client.post("/api/v1/reconcile", json={"reservation_id": rid, "input_tokens": 50})
    assert answer.status_code == 200
    assert _wait(
        lambda: (
            client.get("/api/v1/tenants/tenant-a/status").json()["limits"][0]["remaining"]
            == 10_000 - 50
        )
    )


def test_in_flight_calls_and_forecasts_reach_status_metrics_and_hooks(
    collector_factory, tmp_path, monkeypatch
):
    (tmp_path / "forecast_target.py").write_text(
        "received = []\n\ndef hook(payload):\n    received.append(payload)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    running = collector_factory(
        limits={
            "forecast_interval": "50ms",
            "rules": [
                {"name": "in-flight", "measure": "concurrency", "limit": 2},
                {"name": "monthly", "limit": 1000, "window": "month"},
            ],
        },
        hooks=[{"type": "python", "target": "forecast_target:hook"}],
    )
    # Yesterday's usage in the ledger: 5000 tokens a day heads far past 1000 a month.
    yesterday = time.time() - 86400
    running.collector.ledger.append(
        [
            UsageEvent(
                event_id="history-1",
                event_time_ns=int(yesterday * 1e9),
                provider="openai",
                operation="chat",
                tenant_id="tenant-a",
                input_tokens=5000,
                output_tokens=0,
                total_tokens=5000,
                request_model="gpt-4o",
            )
        ]
    )
    with httpx.Client(base_url=running.management_url, timeout=10) as client:
        assert _check(client, estimated_input_tokens=1)["allowed"]
        forecast_target = importlib.import_module("forecast_target")
        assert _wait(lambda: forecast_target.received)
        status = client.get("/api/v1/tenants/tenant-a/status").json()
        limits = {entry["name"]: entry for entry in status["limits"]}
        assert (limits["in-flight"]["in_flight"], limits["in-flight"]["limit"]) == (1, 2)
        assert limits["in-flight"]["forecast"] is None
        assert limits["monthly"]["forecast"]["method"] == "recent_rate"
        assert limits["monthly"]["forecast"]["projected"] > 1000
        text = client.get("/metrics").text
    samples = {
        (family.name, sample.labels["limit"], sample.labels["key"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("tollmeter_limit_")
        for sample in family.samples
    }
    assert samples[("tollmeter_limit_in_flight", "in-flight", "tenant=tenant-a")] == 1
    assert samples[("tollmeter_limit_forecast", "monthly", "tenant=tenant-a")] > 1000
    [fired] = forecast_target.received
    assert (fired["event"], fired["limit"], fired["key"]) == (
        "forecast_exceeded",
        "monthly",
        {"tenant": "tenant-a"},
    )
