"""Internal usage: a real collector marks the operator's own calls, by span attribute or
environment, and only for spans sent without a tenant-bound ingest key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from tollmeter.collector._cli_focus import focus_export_command

OPERATOR_KEY = "operator-key-0123456789"
ACME_KEY = "acme-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _send(collector: Any, key: str, spans: Sequence[ReadableSpan]) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"{collector.http_endpoint}/v1/traces",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_internal_by_attribute_or_environment_but_never_from_a_tenant_key(
    collector_factory: Callable[..., Any], make_spans: Callable[..., list[ReadableSpan]]
) -> None:
    collector = collector_factory(
        ingest={"internal_environments": ["staging"]},
        management={"ingest_keys": {OPERATOR_KEY: None, ACME_KEY: "acme"}},
    )
    internal = {"tollmeter.internal": True}
    staging = {"tollmeter.environment": "staging"}
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="evals", extra=internal))
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="stage", extra=staging))
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="customer"))
    # The tenant's own key cannot turn its usage internal, by either means.
    _send(collector, ACME_KEY, make_spans(1, tenant="acme", id_prefix="sneaky", extra=internal))
    _send(collector, ACME_KEY, make_spans(1, tenant="acme", id_prefix="sneaky-env", extra=staging))

    marks = {event.response_id: event.internal for event in collector.events()}
    assert marks == {
        "evals-0": True,
        "stage-0": True,
        "customer-0": False,
        "sneaky-0": False,
        "sneaky-env-0": False,
    }


@pytest.fixture(params=["memory", "redis"])
def limits_storage(request: pytest.FixtureRequest) -> str:
    """Where the limits keep their counters: both engines settle internal usage alike."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return "memory"


def _used(collector: Any, tenant: str) -> dict[str, float]:
    with httpx.Client(base_url=collector.management_url, timeout=10) as api:
        answer = api.get(f"/api/v1/tenants/{tenant}/status", headers=ADMIN)
        answer.raise_for_status()
        return {e["name"]: e["limit"] - e["remaining"] for e in answer.json()["limits"]}


def test_limits_leave_internal_usage_out_unless_a_rule_includes_it(
    collector_factory: Callable[..., Any],
    make_spans: Callable[..., list[ReadableSpan]],
    limits_storage: str,
) -> None:
    rules = [
        {"name": "customer", "limit": 10_000, "window": "day"},
        {"name": "everything", "limit": 10_000, "window": "day", "include_internal": True},
    ]
    collector = collector_factory(
        limits={"rules": rules, "storage": limits_storage},
        management={
            "admin_keys": [ADMIN_KEY],
            "ingest_keys": {OPERATOR_KEY: None, ACME_KEY: "acme"},
        },
    )
    internal = {"tollmeter.internal": True}
    # 120 tokens a span: one internal call, one of the customer's own.
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="evals", extra=internal))
    _send(collector, ACME_KEY, make_spans(1, tenant="acme", id_prefix="customer"))
    assert _used(collector, "acme") == {"customer": 120, "everything": 240}
    with httpx.Client(base_url=collector.management_url, timeout=10) as api:
        shown = api.get("/api/v1/limits", headers=ADMIN).json()["limits"]["rules"]
    assert [r.get("include_internal", False) for r in shown] == [False, True]


def test_an_internal_check_is_counted_only_where_included_and_never_from_a_tenant_key(
    collector_factory: Callable[..., Any], limits_storage: str
) -> None:
    rules = [
        {"name": "customer", "limit": 10_000, "window": "day"},
        {"name": "everything", "limit": 10_000, "window": "day", "include_internal": True},
    ]
    collector = collector_factory(
        limits={"rules": rules, "reservation_ttl": "1h", "storage": limits_storage},
        management={
            "admin_keys": [ADMIN_KEY],
            "ingest_keys": {OPERATOR_KEY: None, ACME_KEY: "acme"},
        },
    )
    body = {"tenant": "acme", "estimated_input_tokens": 300, "max_output_tokens": 100}
    with httpx.Client(base_url=collector.management_url, timeout=10) as api:
        refused = api.post(
            "/api/v1/check",
            json={**body, "internal": True},
            headers={"authorization": f"Bearer {ACME_KEY}"},
        )
        assert refused.status_code == 403
        # No counter at all: the refused check reserved nothing.
        assert _used(collector, "acme") == {}
        allowed = api.post(
            "/api/v1/check",
            json={**body, "internal": True},
            headers={"authorization": f"Bearer {OPERATOR_KEY}"},
        )
        assert allowed.status_code == 200
        assert allowed.json()["allowed"]
        assert _used(collector, "acme") == {"everything": 400}
        # The gateway reports the call: its usage event is internal, and settles the
        # reservation at the actual usage on the rule that includes internal usage only.
        rid = allowed.json()["reservation_id"]
        done = api.post(
            "/api/v1/reconcile",
            json={"reservation_id": rid, "input_tokens": 50, "output_tokens": 5},
            headers={"authorization": f"Bearer {OPERATOR_KEY}"},
        )
        assert done.status_code == 200
    assert _used(collector, "acme") == {"everything": 55}
    assert [e.internal for e in collector.events()] == [True]


def test_the_usage_api_separates_internal_usage(
    collector_factory: Callable[..., Any], make_spans: Callable[..., list[ReadableSpan]]
) -> None:
    collector = collector_factory(
        management={"admin_keys": [ADMIN_KEY], "ingest_keys": {OPERATOR_KEY: None}}
    )
    internal = {"tollmeter.internal": True}
    _send(collector, OPERATOR_KEY, make_spans(2, tenant="acme", id_prefix="evals", extra=internal))
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="customer"))
    now = datetime.now(timezone.utc)
    bounds = {"start": (now - timedelta(hours=1)).isoformat(), "end": now.isoformat()}

    def requests(**params: str) -> list[tuple[str, int]]:
        with httpx.Client(base_url=collector.management_url, timeout=10) as api:
            answer = api.get("/api/v1/usage", params=params, headers=ADMIN)
        answer.raise_for_status()
        return [(r["tenant"], r["requests"]) for r in answer.json()["rows"]]

    assert requests(group_by="tenant", **bounds) == [("acme", 3)]
    assert requests(group_by="tenant", internal="true", **bounds) == [("acme", 2)]
    assert requests(group_by="tenant", internal="false", **bounds) == [("acme", 1)]
    with httpx.Client(base_url=collector.management_url, timeout=10) as api:
        unbounded = api.get("/api/v1/usage", params={"internal": "true"}, headers=ADMIN)
        wrong = api.get("/api/v1/usage", params={"internal": "yes", **bounds}, headers=ADMIN)
    assert (unbounded.status_code, wrong.status_code) == (400, 400)


def test_the_focus_export_leaves_internal_usage_out_unless_asked(
    collector_factory: Callable[..., Any],
    make_spans: Callable[..., list[ReadableSpan]],
    tmp_path: Path,
) -> None:
    collector = collector_factory(management={"ingest_keys": {OPERATOR_KEY: None}})
    internal = {"tollmeter.internal": True}
    _send(collector, OPERATOR_KEY, make_spans(2, tenant="acme", id_prefix="evals", extra=internal))
    _send(collector, OPERATOR_KEY, make_spans(1, tenant="acme", id_prefix="customer"))
    today = datetime.now(timezone.utc).date()

    def exported(*flags: str) -> int:
        out = tmp_path / f"focus{len(flags)}.parquet"
        result = CliRunner().invoke(
            focus_export_command,
            ["--data-dir", str(collector.config.data_dir), "--out", str(out),
             "--from", (today - timedelta(days=1)).isoformat(),
             "--to", (today + timedelta(days=1)).isoformat(),
             *flags],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return sum(pq.read_table(out).column("x_Requests").to_pylist())

    assert exported() == 1
    assert exported("--include-internal") == 3
