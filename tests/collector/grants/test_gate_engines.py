"""The grants gate in a real collector with either limits engine: in-process and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.collector.conftest import RunningCollector, genai_spans


@pytest.mark.parametrize("engine", ["memory", "redis"])
def test_block_denies_once_the_grants_are_burnt_on_both_engines(
    engine: str, request: pytest.FixtureRequest, collector_factory: Callable[..., Any]
) -> None:
    limits: dict[str, Any] = {"rules": [{"name": "roomy", "limit": 1_000_000, "window": "day"}]}
    if engine == "redis":
        limits["storage"] = request.getfixturevalue("redis_url")
    collector: RunningCollector = collector_factory(limits=limits, grants={"overage": "block"})
    api = collector.management_url
    grant = {"tenant": "tenant-a", "amount": 150, "grant_id": f"g-{engine}"}
    assert httpx.post(f"{api}/api/v1/grants", json=grant, timeout=10).status_code == 201
    check = {"tenant": "tenant-a", "estimated_input_tokens": 10, "max_output_tokens": 10}

    def allowed() -> bool:
        answer = httpx.post(f"{api}/api/v1/check", json={**check, "dry_run": True}, timeout=10)
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["allowed"])

    assert allowed()
    exporter = OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=10)
    try:
        spans = genai_spans(2, tenant="tenant-a", id_prefix=engine)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    deadline = time.monotonic() + 10
    while allowed() and time.monotonic() < deadline:
        time.sleep(0.05)
    denied = httpx.post(f"{api}/api/v1/check", json=check, timeout=10).json()
    assert (denied["allowed"], denied["reason"]) == (False, "grants exhausted")
    balance = httpx.get(
        f"{api}/api/v1/grants/balance", params={"tenant": "tenant-a"}, timeout=10
    ).json()
    assert balance["units"] == {"tokens": {"balance": "0", "overage": "90"}}
