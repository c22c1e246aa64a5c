"""The real ``tollmeter collector`` process: OTLP in over gRPC and HTTP, ``tollmeter usage``
out, graceful SIGTERM/SIGINT, and exactly-once usage across a restart."""

from __future__ import annotations

import json
import signal

import httpx
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def spans(count: int, tenant: str | None, prefix: str, input_tokens: int, output_tokens: int):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e")
    for index in range(count):
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.id": f"{prefix}-{index}",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
        }
        if tenant is not None:
            attributes["tollmeter.tenant.id"] = tenant
        with tracer.start_as_current_span(
            "chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=attributes
        ):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


ACME = spans(25, "acme", "acme", 1000, 50)
GLOBEX = spans(10, "globex", "globex", 300, 7)
EXPECTED = {"acme": (25, 25_000, 1_250), "globex": (10, 3_000, 70)}


def send(collector) -> None:
    grpc_exporter = OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True)
    http_exporter = HttpSpanExporter(
        endpoint=f"{collector.http_endpoint}/v1/traces", compression=Compression.Gzip
    )
    try:
        assert grpc_exporter.export(ACME) is SpanExportResult.SUCCESS
        assert http_exporter.export(GLOBEX) is SpanExportResult.SUCCESS
    finally:
        grpc_exporter.shutdown()
        http_exporter.shutdown()


def rows(document: dict) -> dict[str, tuple[int, int, int]]:
    return {
        row["tenant"]: (row["requests"], row["input_tokens"], row["output_tokens"])
        for row in document["rows"]
    }


def usage(collector) -> dict[str, tuple[int, int, int]]:
    """Per-tenant usage straight from the management API."""
    response = httpx.get(f"{collector.management_url}/api/v1/usage?group_by=tenant", timeout=10)
    assert response.status_code == 200, response.text
    return rows(response.json())


def test_collector_process_meters_and_survives_a_restart_exactly_once(collector_process):
    collector = collector_process()
    assert f"OTLP/gRPC listening on {collector.grpc_endpoint}" in collector.stdout
    assert f"management API listening on {collector.management_url}" in collector.stdout
    send(collector)
    as_json = collector.usage("--json", "--group-by", "tenant")
    assert as_json.returncode == 0, as_json.stderr
    assert rows(json.loads(as_json.stdout)) == EXPECTED

    table = collector.usage()
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].startswith("tenant")
    assert any(line.startswith("acme") and "25,000" in line for line in lines)

    assert collector.stop(signal.SIGTERM) == 0
    assert (collector.workdir / "tollmeter-data" / "ledger.db").exists()

    collector.start()
    assert usage(collector) == EXPECTED
    send(collector)  # the same calls reported again after the restart
    assert usage(collector) == EXPECTED
    assert collector.stop(signal.SIGINT) == 0
    assert "Traceback" not in collector.stderr


def test_configuration_from_file_and_environment(collector_process, tmp_path):
    config = tmp_path / "tollmeter.yaml"
    config.write_text(
        "ingest: {default_tenant: from-file}\nmanagement: {admin_keys: [file-admin]}\n"
    )
    collector = collector_process(
        args=["--config", str(config)],
        env={"TOLLMETER_ADMIN_KEYS": "env-admin", "TOLLMETER_DATA_DIR": "env-data"},
    )
    untenanted = spans(3, None, "anon", 10, 1)
    exporter = OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True)
    try:
        assert exporter.export(untenanted) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    denied = collector.usage("--admin-key", "file-admin")
    assert denied.returncode == 1  # the environment's admin keys replaced the file's
    allowed = collector.usage("--json", "--admin-key", "env-admin")
    assert allowed.returncode == 0, allowed.stderr
    [row] = json.loads(allowed.stdout)["rows"]
    assert (row["tenant"], row["requests"]) == ("from-file", 3)
    assert collector.stop() == 0
    assert (collector.workdir / "env-data" / "ledger.db").exists()
