"""Forwarding over TLS: the downstream is verified with the configured CA."""

from __future__ import annotations

import http.server
import ssl
import threading
from concurrent import futures

import grpc
import pytest
import trustme

from tollmeter.collector.forward import ExporterConfig, GrpcTransport, HttpTransport


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def config(protocol: str, endpoint: str, tls: dict) -> ExporterConfig:
    return ExporterConfig.from_mapping(
        {"name": "tls", "protocol": protocol, "endpoint": endpoint, "tls": tls}, "forward[0]"
    )


class _Recorder(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def service(self, handler_call_details):
        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.bodies.append(request)
            return b""

        return grpc.unary_unary_rpc_method_handler(export)


@pytest.fixture
def grpc_tls_server(ca):
    cert = ca.issue_cert("127.0.0.1")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), b"".join(blob.bytes() for blob in cert.cert_chain_pems))]
    )
    recorder = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[recorder])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}", recorder
    server.stop(None)


@pytest.fixture
def https_server(ca):
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def test_grpc_over_tls_verified_with_the_ca_file(grpc_tls_server, ca_file):
    endpoint, recorder = grpc_tls_server
    transport = GrpcTransport(config("grpc", endpoint, {"ca_file": ca_file}))
    try:
        assert transport.send("traces", b"\x0a\x00", timeout_s=10).ok
    finally:
        transport.close()
    assert recorder.bodies == [b"\x0a\x00"]


def test_grpc_refuses_a_server_it_cannot_verify(grpc_tls_server):
    endpoint, recorder = grpc_tls_server
    transport = GrpcTransport(config("grpc", endpoint, {}))  # system roots only
    try:
        result = transport.send("traces", b"", timeout_s=5)
    finally:
        transport.close()
    assert not result.ok
    assert not recorder.bodies


def test_https_verified_with_the_ca_file(https_server, ca_file):
    url, bodies = https_server
    transport = HttpTransport(config("http/protobuf", url, {"ca_file": ca_file}))
    try:
        assert transport.send("metrics", b"\x0a\x00", timeout_s=10).ok
    finally:
        transport.close()
    assert bodies == [b"\x0a\x00"]


def test_https_refuses_a_server_it_cannot_verify(https_server):
    url, bodies = https_server
    transport = HttpTransport(config("http/protobuf", url, {}))
    try:
        result = transport.send("metrics", b"", timeout_s=5)
    finally:
        transport.close()
    assert not result.ok
    assert not bodies
