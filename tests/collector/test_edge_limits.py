"""Slow, idle and too many clients on every listening port, with real sockets.

Short timeouts make the collector drop what never arrives; a normal client is
served all along. No test measures time: a socket that is not closed makes its
``recv`` time out, which fails the test.
"""

from __future__ import annotations

import socket
import threading
import time

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

PROTOBUF = {"content-type": "application/x-protobuf"}
SHORT = {"header_timeout": "300ms", "body_timeout": "300ms", "idle_timeout": "300ms"}


def connect(url_or_endpoint: str) -> socket.socket:
    host, port = url_or_endpoint.split("://")[-1].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (``socket.timeout`` if it never does)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def serves_spans(running, make_spans, prefix: str) -> None:
    body = encode_spans(make_spans(2, id_prefix=prefix)).SerializeToString()
    response = httpx.post(
        f"{running.http_endpoint}/v1/traces", content=body, headers=PROTOBUF, timeout=10
    )
    assert response.status_code == 200
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        assert (
            exporter.export(make_spans(2, id_prefix=f"{prefix}-grpc")) is SpanExportResult.SUCCESS
        )
    finally:
        exporter.shutdown()


@pytest.fixture
def short(collector_factory):
    return collector_factory(server=SHORT)


@pytest.mark.parametrize("port", ["http", "management"])
def test_a_client_that_sends_nothing_is_closed(short, port):
    url = short.http_endpoint if port == "http" else short.management_url
    with connect(url) as sock:
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_headers_that_never_finish_are_cut_off_while_others_are_served(short, make_spans):
    with connect(short.http_endpoint) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: collector\r\nContent-Ty")
        serves_spans(short, make_spans, "meanwhile")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_body_that_never_finishes_is_dropped_and_nothing_is_metered(short, make_spans):
    body = encode_spans(make_spans(3, id_prefix="partial")).SerializeToString()
    with connect(short.http_endpoint) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: collector\r\n"
            b"Content-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        serves_spans(short, make_spans, "meanwhile")
        assert read_until_closed(sock) == b""
    assert {event.response_id for event in short.events()} == {
        "meanwhile-0",
        "meanwhile-1",
        "meanwhile-grpc-0",
        "meanwhile-grpc-1",
    }


def test_an_idle_keep_alive_connection_is_closed(short):
    with connect(short.management_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"408" not in answer


def test_a_grpc_connection_without_a_handshake_is_closed(collector_factory, make_spans):
    running = collector_factory(server={"header_timeout": "300ms", "idle_timeout": "30s"})
    with connect(running.grpc_endpoint) as sock:
        serves_spans(running, make_spans, "meanwhile")
        assert b"handshake timeout" in read_until_closed(sock)


def test_an_idle_grpc_connection_is_closed(collector_factory, make_spans):
    running = collector_factory(server={"header_timeout": "30s", "idle_timeout": "300ms"})
    with grpc.insecure_channel(running.grpc_endpoint) as channel:
        ready = grpc.channel_ready_future(channel)
        ready.result(timeout=10)
        states: list[grpc.ChannelConnectivity] = []
        went_idle = threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            states.append(state)
            if state is grpc.ChannelConnectivity.IDLE:
                went_idle.set()

        channel.subscribe(watch)
        assert went_idle.wait(10), states


@pytest.fixture
def capped(collector_factory):
    return collector_factory(server={"max_connections": 2, "header_timeout": "30s"})


@pytest.mark.parametrize("port", ["http", "management"])
def test_connections_beyond_the_cap_are_refused_with_503(capped, port):
    url = capped.http_endpoint if port == "http" else capped.management_url
    with connect(url) as first, connect(url) as second:
        # The refusal is sent as soon as the connection is accepted: a request sent
        # meanwhile would be unread at close, and the reset could swallow the answer.
        with connect(url) as third:
            assert read_until_closed(third).startswith(b"HTTP/1.1 503 ")
        first.close()
        second.sendall(b"GET /healthz HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n")
        assert read_until_closed(second).split(b" ")[1] in (b"404", b"405", b"200")


def test_grpc_connections_beyond_the_cap_are_refused(capped, make_spans):
    payload = encode_spans(make_spans(1, id_prefix="capped")).SerializeToString()
    method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    with (
        connect(capped.grpc_endpoint),
        connect(capped.grpc_endpoint),
        grpc.insecure_channel(capped.grpc_endpoint) as channel,
    ):
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(method)(payload, timeout=5)
        assert refused.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    # The server frees the closed connections' slots once it notices them: retry until then.
    deadline = time.monotonic() + 20
    while True:
        with grpc.insecure_channel(capped.grpc_endpoint) as channel:
            try:
                channel.unary_unary(method)(payload, timeout=10)
                break
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
        time.sleep(0.1)
    assert [event.response_id for event in capped.events()] == ["capped-0"]
