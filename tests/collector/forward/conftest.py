"""Forwarding fixtures: a downstream collector that records what reaches it."""

from __future__ import annotations

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
def downstream(collector_factory):
    """``downstream()`` -> (a collector on free ports, its :class:`Received`)."""

    def factory(**sections: Any):
        received = Received()
        running = collector_factory(
            signal_sink=received, data_dir=f"downstream-{id(received)}", **sections
        )
        return running, received

    return factory
