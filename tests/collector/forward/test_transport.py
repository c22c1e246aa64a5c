"""Transports against real servers: what arrives, and how failures are classified."""

from __future__ import annotations

import email.utils
import gzip
import socket
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tollmeter.collector.forward import ExporterConfig, GrpcTransport, HttpTransport

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def config(protocol: str, endpoint: str, **options) -> ExporterConfig:
    return ExporterConfig.from_mapping(
        {
            "name": "test",
            "protocol": protocol,
            "endpoint": endpoint,
            "tls": {"insecure": True},
            **options,
        },
        "forward[0]",
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_posts_protobuf_to_the_signal_path_with_headers_and_gzip(otlp_http):
    transport = HttpTransport(
        config(
            "http/protobuf",
            otlp_http.url + "/",
            compression="gzip",
            headers={"Authorization": "Bearer abc"},
        )
    )
    try:
        assert transport.send("logs", b"\x0a\x00", timeout_s=5).ok
    finally:
        transport.close()
    ((path, headers, body),) = otlp_http.requests
    assert path == "/v1/logs"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["content-encoding"] == "gzip"
    assert headers["authorization"] == "Bearer abc"
    assert gzip.decompress(body) == b"\x0a\x00"


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (503, {"Retry-After": "7"}, True, 7.0),
        (429, {}, True, None),
        (502, {"Retry-After": "soon"}, True, None),
        (400, {}, False, None),
        (401, {"Retry-After": "3"}, False, 3.0),
    ],
)
def test_http_failures_are_classified_with_their_retry_after(
    otlp_http, status, headers, retryable, retry_after
):
    otlp_http.script = [(status, headers)]
    transport = HttpTransport(config("http/protobuf", otlp_http.url))
    try:
        result = transport.send("traces", b"", timeout_s=5)
    finally:
        transport.close()
    assert not result.ok
    assert result.retryable is retryable
    assert result.retry_after_s == retry_after
    assert str(status) in result.error


def test_http_retry_after_may_be_a_date(otlp_http):
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    otlp_http.script = [(503, {"Retry-After": later})]
    transport = HttpTransport(config("http/protobuf", otlp_http.url))
    try:
        result = transport.send("traces", b"", timeout_s=5)
    finally:
        transport.close()
    assert result.retry_after_s is not None
    assert 0 < result.retry_after_s <= 120


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_unreachable_downstream_is_retryable(protocol):
    port = closed_port()
    endpoint = f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"
    transport = (GrpcTransport if protocol == "grpc" else HttpTransport)(config(protocol, endpoint))
    try:
        result = transport.send("traces", b"", timeout_s=2)
    finally:
        transport.close()
    assert not result.ok
    assert result.retryable


class _Refusing(grpc.GenericRpcHandler):
    """Answers every call with ``code``, plus a RetryInfo of ``delay_s`` when given."""

    def __init__(self, code: grpc.StatusCode, delay_s: float | None) -> None:
        self.code = code
        self.delay_s = delay_s
        self.metadata: list[tuple[str, str]] = []

    def service(self, handler_call_details):
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.metadata = list(context.invocation_metadata())
            if self.delay_s is not None:
                info = error_details_pb2.RetryInfo(
                    retry_delay=Duration(
                        seconds=int(self.delay_s), nanos=int(self.delay_s % 1 * 1e9)
                    )
                )
                status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down")
                status.details.add().Pack(info)
                context.set_trailing_metadata(
                    [("grpc-status-details-bin", status.SerializeToString())]
                )
            context.abort(self.code, "refused")
            return b""

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.mark.parametrize(
    ("code", "delay_s", "retryable"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 3.5, True),
        (grpc.StatusCode.UNAVAILABLE, None, True),
        (grpc.StatusCode.INVALID_ARGUMENT, None, False),
        (grpc.StatusCode.UNAUTHENTICATED, None, False),
    ],
)
def test_grpc_failures_are_classified_with_their_retry_info(code, delay_s, retryable):
    handler = _Refusing(code, delay_s)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    transport = GrpcTransport(
        config("grpc", f"127.0.0.1:{port}", headers={"X-Scope-OrgID": "tenant-1"})
    )
    try:
        result = transport.send("traces", b"", timeout_s=5)
    finally:
        transport.close()
        server.stop(None)
    assert not result.ok
    assert result.retryable is retryable
    assert result.retry_after_s == delay_s
    assert code.name in result.error
    assert ("x-scope-orgid", "tenant-1") in handler.metadata
