"""SIGHUP on the real collector process: keys and TLS certificates are swapped in
without dropping connections; a bad configuration changes nothing."""

from __future__ import annotations

import signal
import socket
import ssl
import time

import grpc
import httpx
import pytest
import trustme
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def chat_span(response_id: str) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.id": response_id,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 2,
    }
    with provider.get_tracer("tests").start_as_current_span(
        "chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=attributes
    ):
        pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def write_config(path, tls_files, *, admin: str, ingest: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "management": {"admin_keys": [admin], "ingest_keys": {ingest: "acme"}},
                "server": {"tls": tls_files.server_section()},
            }
        )
    )


def trusting(*cas: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cadata="".join(ca.cert_pem.bytes().decode() for ca in cas))
    return context


def usage_status(running, key: str, context: ssl.SSLContext) -> int:
    response = httpx.get(
        f"{running.management_url}/api/v1/usage",
        headers={"Authorization": f"Bearer {key}"},
        verify=context,
        timeout=10,
    )
    return response.status_code


def grpc_export(running, ca: trustme.CA, key: str, spans) -> SpanExportResult:
    exporter = OTLPSpanExporter(
        endpoint=running.grpc_endpoint,
        credentials=grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes()),
        headers={"x-tollmeter-key": key},
        timeout=3,
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def exchange(connection: ssl.SSLSocket, key: str) -> bytes:
    """One keep-alive request on an open connection; returns the status line."""
    connection.sendall(
        b"GET /api/v1/usage HTTP/1.1\r\nHost: collector\r\n"
        + f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(4096)
    return head.split(b"\r\n")[0]


def wait_for_log(running, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while running.stderr.count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged:\n{running.stderr}")
        time.sleep(0.05)


def test_sighup_rotates_keys_and_certificates_keeping_open_connections(
    collector_process, tls_files, tmp_path
):
    config = tmp_path / "tollmeter.yaml"
    write_config(config, tls_files, admin="admin-old", ingest="ingest-old")
    old_ca = tls_files.ca
    running = collector_process(args=["--config", str(config)], tls=trusting(old_ca))
    host, port = running.management_url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        trusting(old_ca).wrap_socket(raw, server_hostname=host) as kept,
    ):
        assert exchange(kept, "admin-old") == b"HTTP/1.1 200 OK"
        assert grpc_export(running, old_ca, "ingest-old", chat_span("old")) is (
            SpanExportResult.SUCCESS
        )

        new_ca = trustme.CA()
        tls_files.rotate(ca=new_ca)
        write_config(config, tls_files, admin="admin-new", ingest="ingest-new")
        running.process.send_signal(signal.SIGHUP)
        wait_for_log(running, "admin and ingest keys reloaded")

        # The connection opened before the reload carries on, under the new keys.
        assert exchange(kept, "admin-new") == b"HTTP/1.1 200 OK"
        assert exchange(kept, "admin-old") == b"HTTP/1.1 401 Unauthorized"

    # New connections get the new certificate, on every port, and the new keys only.
    assert usage_status(running, "admin-new", trusting(new_ca)) == 200
    assert usage_status(running, "admin-old", trusting(new_ca)) == 401
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        usage_status(running, "admin-new", trusting(old_ca))
    spans = chat_span("new")
    assert grpc_export(running, old_ca, "ingest-new", spans) is SpanExportResult.FAILURE
    assert grpc_export(running, new_ca, "ingest-old", spans) is SpanExportResult.FAILURE
    assert grpc_export(running, new_ca, "ingest-new", spans) is SpanExportResult.SUCCESS

    # A broken key file is refused as a whole: neither it nor the keys beside it apply.
    tls_files.key_file.write_text("not a key")
    write_config(config, tls_files, admin="admin-newer", ingest="ingest-newer")
    running.process.send_signal(signal.SIGHUP)
    wait_for_log(running, "SIGHUP: configuration not reloaded")
    assert usage_status(running, "admin-new", trusting(new_ca)) == 200
    assert usage_status(running, "admin-newer", trusting(new_ca)) == 401
    assert running.stop() == 0


def plans_config(path, *, free_limit: int, pro_tenants: list[str]) -> None:
    monthly = {"name": "monthly-tokens", "window": "month"}
    path.write_text(
        yaml.safe_dump(
            {
                "management": {"admin_keys": ["admin"]},
                "limits": {"reservation_ttl": "1h"},
                "plans": {
                    "free": {"default": True, "limits": [{**monthly, "limit": free_limit}]},
                    "pro": {"tenants": pro_tenants, "limits": [{**monthly, "limit": 100_000}]},
                },
            }
        )
    )


def monthly(running, tenant: str) -> tuple[int, int]:
    """(limit, remaining) of the tenant's monthly-tokens, as its status reports them."""
    answer = httpx.get(
        f"{running.management_url}/api/v1/tenants/{tenant}/status",
        headers={"Authorization": "Bearer admin"},
        timeout=10,
    )
    answer.raise_for_status()
    (entry,) = [e for e in answer.json()["limits"] if e["name"] == "monthly-tokens"]
    return entry["limit"], entry["remaining"]


def reserve(running, tenant: str, tokens: int) -> bool:
    """Whether a check of ``tokens`` is admitted (the reservation is kept)."""
    body = {"tenant": tenant, "estimated_input_tokens": tokens, "max_output_tokens": 0}
    answer = httpx.post(
        f"{running.management_url}/api/v1/check",
        json=body,
        headers={"Authorization": "Bearer admin"},
        timeout=10,
    )
    answer.raise_for_status()
    allowed: bool = answer.json()["allowed"]
    return allowed


def test_sighup_reloads_plans_keeping_the_periods_usage_and_the_apis_assignments(
    collector_process, tmp_path
):
    config = tmp_path / "tollmeter.yaml"
    plans_config(config, free_limit=1_000, pro_tenants=[])
    running = collector_process(args=["--config", str(config)])
    for tenant in ("acme", "globex", "initech"):
        assert reserve(running, tenant, 900)
        assert not reserve(running, tenant, 200)
    # The API moves globex to pro: an assignment the file cannot take back.
    moved = httpx.put(
        f"{running.management_url}/api/v1/tenants/globex/plan",
        json={"plan": "pro"},
        headers={"Authorization": "Bearer admin"},
        timeout=10,
    )
    assert moved.status_code == 200, moved.text

    # The file raises free to 1,500, puts acme (and globex) on pro.
    plans_config(config, free_limit=1_500, pro_tenants=["acme", "globex"])
    running.process.send_signal(signal.SIGHUP)
    wait_for_log(running, "limits reloaded: 0 rules, 2 plans")
    # Each keeps the 900 tokens it used this month, under its new plan's value.
    assert monthly(running, "acme") == (100_000, 99_100)
    assert monthly(running, "initech") == (1_500, 600)
    assert reserve(running, "acme", 5_000)
    assert reserve(running, "initech", 500)
    assert not reserve(running, "initech", 200)

    # Back to free in the file: acme follows it, globex stays where the API put it.
    plans_config(config, free_limit=1_500, pro_tenants=[])
    running.process.send_signal(signal.SIGHUP)
    wait_for_log(running, "limits reloaded: 0 rules, 2 plans", count=2)
    assert monthly(running, "acme") == (1_500, 0)  # 5,900 used
    assert not reserve(running, "acme", 1)
    assert monthly(running, "globex") == (100_000, 99_100)
    assert reserve(running, "globex", 5_000)

    # A broken plans section changes nothing.
    config.write_text(config.read_text().replace("default: true", "default: maybe"))
    running.process.send_signal(signal.SIGHUP)
    wait_for_log(running, "SIGHUP: configuration not reloaded")
    assert monthly(running, "initech") == (1_500, 100)
    assert running.stop() == 0
