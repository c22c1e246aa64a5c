"""TLS on the OTLP receivers and the management API, with and without client
certificates, spoken to by the real OTLP exporters and a real HTTPS client; the
certificates come from private CAs made in the test."""

from __future__ import annotations

import socket
import ssl

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace.export import SpanExportResult


def grpc_export(running, tls, spans, *, client_cert: bool) -> SpanExportResult:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes(),
        private_key=tls.client_key_file.read_bytes() if client_cert else None,
        certificate_chain=tls.client_cert_file.read_bytes() if client_cert else None,
    )
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, credentials=credentials, timeout=3)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


@pytest.fixture(autouse=True)
def _exporter_trusts_its_certificate_file(monkeypatch):
    # requests lets these variables override a session's own CA file (requests
    # issue 3829), which is what the HTTP exporter's certificate_file sets.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def http_export(running, tls, spans, *, client_cert: bool) -> SpanExportResult:
    exporter = HttpSpanExporter(
        endpoint=f"{running.http_endpoint}/v1/traces",
        certificate_file=str(tls.ca_file),
        client_certificate_file=str(tls.client_cert_file) if client_cert else None,
        client_key_file=str(tls.client_key_file) if client_cert else None,
        timeout=3,
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def https_client(tls, *, client_cert: bool) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    if client_cert:
        context.load_cert_chain(str(tls.client_cert_file), str(tls.client_key_file))
    return httpx.Client(verify=context, timeout=10)


EXPORTS = {"grpc": grpc_export, "http": http_export}


def test_every_port_speaks_tls(collector_factory, tls_files, make_spans):
    running = collector_factory(server={"tls": tls_files.server_section()})
    assert running.http_endpoint.startswith("https://")
    assert running.management_url.startswith("https://")
    for name, export in EXPORTS.items():
        spans = make_spans(2, id_prefix=name)
        assert export(running, tls_files, spans, client_cert=False) is SpanExportResult.SUCCESS
    with https_client(tls_files, client_cert=False) as client:
        ready = client.get(f"{running.management_url}/readyz")
        assert ready.status_code == 200
        usage = client.get(f"{running.management_url}/api/v1/usage").json()
    assert usage["rows"][0]["requests"] == 4
    # Plain HTTP on a TLS port gets no answer, let alone usage.
    with pytest.raises(httpx.HTTPError):
        httpx.get(running.management_url.replace("https", "http") + "/readyz", timeout=5)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_mutual_tls_refuses_exporters_without_a_client_certificate(
    collector_factory, tls_files, make_spans, transport
):
    running = collector_factory(server={"tls": tls_files.server_section(mutual=True)})
    export = EXPORTS[transport]
    refused = export(running, tls_files, make_spans(1, id_prefix="no-cert"), client_cert=False)
    assert refused is SpanExportResult.FAILURE
    accepted = export(running, tls_files, make_spans(1, id_prefix="cert"), client_cert=True)
    assert accepted is SpanExportResult.SUCCESS
    assert [event.response_id for event in running.events()] == ["cert-0"]


def test_mutual_tls_on_the_management_api(collector_factory, tls_files):
    running = collector_factory(server={"tls": tls_files.server_section(mutual=True)})
    with https_client(tls_files, client_cert=True) as client:
        assert client.get(f"{running.management_url}/readyz").status_code == 200
    with https_client(tls_files, client_cert=False) as client, pytest.raises(httpx.HTTPError):
        client.get(f"{running.management_url}/readyz")


def test_a_tls_handshake_that_never_starts_is_closed(collector_factory, tls_files):
    running = collector_factory(
        server={"tls": tls_files.server_section(), "header_timeout": "300ms"}
    )
    host, port = running.management_url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert sock.recv(100) == b""


def test_unusable_tls_files_stop_the_start(collector_factory, tls_files):
    tls_files.key_file.write_text("not a key")
    with pytest.raises(Exception, match="unusable TLS files"):
        collector_factory(server={"tls": tls_files.server_section()})
