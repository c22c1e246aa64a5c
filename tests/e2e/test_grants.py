"""Prepaid grants through a real ``tollmeter collector`` process: usage over OTLP burns a
grant, a repeated batch burns nothing more, and ``overage: block`` denies checks once the
grants are used up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def _spans(tenant: str, response_id: str, input_tokens: int, output_tokens: int) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "grants-e2e"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("e2e").start_as_current_span(
        "chat gpt-4o-mini",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.id": response_id,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "tollmeter.tenant.id": tenant,
        },
    ):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _send(endpoint: str, spans: list[ReadableSpan]) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _balance(api: str, tenant: str) -> dict[str, Any]:
    reply = httpx.get(f"{api}/api/v1/grants/balance", params={"tenant": tenant}, timeout=10)
    assert reply.status_code == 200, reply.text
    units: dict[str, Any] = reply.json()["units"]
    return units


def _check(api: str, tenant: str) -> dict[str, Any]:
    body = {"tenant": tenant, "estimated_input_tokens": 100, "max_output_tokens": 10}
    reply = httpx.post(f"{api}/api/v1/check", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def test_otlp_usage_burns_a_grant_once_and_block_denies_when_it_is_used_up(
    collector_process: Any, tmp_path: Path
) -> None:
    config = tmp_path / "tollmeter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "grants": {"overage": "block", "tenants": {"globex": "allow"}},
            }
        )
    )
    running = collector_process(args=["--config", str(config)])
    api = running.management_url
    for tenant in ("acme", "globex"):
        made = httpx.post(
            f"{api}/api/v1/grants",
            json={
                "grant_id": f"{tenant}-starter",
                "tenant": tenant,
                "amount": 2000,
                "unit": "tokens",
                "time_zone": "Europe/Paris",
                "expires_at": "2099-01-01T00:00:00",
            },
            timeout=10,
        )
        assert made.status_code == 201, made.text
    assert made.json()["expires_at"] == "2098-12-31T23:00:00Z"

    first = _spans("acme", "call-1", 1000, 50)
    _send(running.http_endpoint, first)
    running.wait_for_events(1)
    assert _balance(api, "acme") == {"tokens": {"balance": "950", "overage": "0"}}

    # The same batch again: refused as a duplicate, so it burns nothing.
    _send(running.http_endpoint, first)
    _send(running.http_endpoint, _spans("globex", "call-g", 10, 5))
    assert len(running.wait_for_events(2)) == 2
    assert _balance(api, "acme") == {"tokens": {"balance": "950", "overage": "0"}}
    assert _check(api, "acme")["allowed"]

    _send(running.http_endpoint, _spans("acme", "call-2", 1000, 50))
    running.wait_for_events(3)
    assert _balance(api, "acme") == {"tokens": {"balance": "0", "overage": "100"}}
    deadline = time.monotonic() + 10
    while _check(api, "acme")["allowed"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the gate reads the grants after the commit's subscribers ran
    denied = _check(api, "acme")
    assert (denied["allowed"], denied["denied_by"], denied["reason"]) == (
        False,
        "grants",
        "grants exhausted",
    )
    # Another tenant's grants and policy are its own.
    assert _check(api, "globex")["allowed"]

    history = httpx.get(
        f"{api}/api/v1/grants/history", params={"tenant": "acme"}, timeout=10
    ).json()
    kinds = [(m["kind"], m["amount"]) for m in history["movements"]]
    assert kinds == [
        ("granted", "2000"),
        ("consumed", "-1050"),
        ("consumed", "-950"),
        ("overage", "-100"),
    ]
