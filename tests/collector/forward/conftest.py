"""Forwarding fixtures: a downstream collector that records what reaches it."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}


class Received:
    """Every request body a downstream collector accepted, per signal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bodies: list[tuple[str, bytes]] = []

    def __call__(self, signal: str, body: bytes) -> None:
        with self._lock:
            self.bodies.append((signal, body))

    def merged(self, signal: str) -> Any:
        """All bodies of ``signal`` parsed as one request (protobuf merges repeated fields)."""
        with self._lock:
            joined = b"".join(body for s, body in self.bodies if s == signal)
        request = REQUEST_TYPES[signal]()
        request.ParseFromString(joined)
        return request

    def span_count(self) -> int:
        request = self.merged("traces")
        return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


def poll(condition: Callable[[], bool], *, timeout: float = 20.0, what: str = "condition") -> None:
    """Return once ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """``wait_for(condition, timeout=20, what=...)``: poll until true, fail at the deadline."""
    return poll


@pytest.fixture
def request_types() -> dict[str, type[Message]]:
    """The OTLP request message of each signal."""
    return REQUEST_TYPES


@pytest.fixture
def downstream(collector_factory, tmp_path):
    """``downstream()`` -> (a collector on free ports, its :class:`Received`)."""

    def factory(**sections: Any):
        received = Received()
        running = collector_factory(
            signal_sink=received, data_dir=str(tmp_path / f"downstream-{id(received)}"), **sections
        )
        return running, received

    return factory


class ScriptedOtlpHttp:
    """A real OTLP/HTTP server on a free port answering from a script of (status, headers);
    once the script is used up it answers 200. Keeps every request it got."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with owner._lock:
                    owner.requests.append(
                        (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status, headers = owner.script.pop(0) if owner.script else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [
                gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
                for _, headers, body in self.requests
            ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def otlp_http():
    """A scripted OTLP/HTTP server; set ``.script`` to fail the first requests."""
    server = ScriptedOtlpHttp()
    yield server
    server.close()
