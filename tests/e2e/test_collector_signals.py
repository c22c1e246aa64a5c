"""Signals on the real collector process: the first asks for a graceful shutdown, which
waits for requests in flight; a second one exits at once."""

from __future__ import annotations

import signal
import socket
import time

import httpx


def stalled_upload(collector) -> socket.socket:
    """An OTLP/HTTP request whose body never finishes: graceful shutdown waits for it."""
    host, port = collector.http_endpoint.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /v1/traces HTTP/1.1\r\nHost: collector\r\n"
        b"Content-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n\x0a"
    )
    # Connections are accepted in order: once a later request is answered, the stalled
    # one is being served and its handler waits for the rest of the body.
    assert httpx.get(f"{collector.http_endpoint}/v1/traces", timeout=10).status_code == 405
    return sock


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_second_signal_forces_exit(collector_process):
    collector = collector_process(args=["--log-level", "info"])
    with stalled_upload(collector):
        collector.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "shutting down gracefully" in collector.stderr)
        assert collector.process.poll() is None  # still waiting for the upload
        assert collector.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting without finishing shutdown" in collector.stderr


def test_first_signal_finishes_after_requests_in_flight(collector_process):
    collector = collector_process()
    upload = stalled_upload(collector)
    try:
        collector.process.send_signal(signal.SIGINT)
        wait_for(lambda: "shutting down gracefully" in collector.stderr)
        assert collector.process.poll() is None
    finally:
        upload.close()  # the client gives up; nothing was acknowledged
    assert collector.process.wait(60) == 0
