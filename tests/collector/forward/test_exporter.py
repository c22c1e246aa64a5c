"""One exporter's queue, drop policies, batching and retries, against a real HTTP server."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from tollmeter.collector.forward import ExporterConfig, ForwardExporter, HttpTransport


def request(name: str) -> bytes:
    """A one-resource trace request whose service is ``name``."""
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=name))]
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource)]
    ).SerializeToString()


def services(bodies: list[bytes]) -> list[str]:
    merged = ExportTraceServiceRequest()
    for body in bodies:
        merged.MergeFromString(body)
    return [rs.resource.attributes[0].value.string_value for rs in merged.resource_spans]


def make_exporter(url: str, **options) -> ForwardExporter:
    config = ExporterConfig.from_mapping(
        {
            "name": "test",
            "protocol": "http/protobuf",
            "endpoint": url,
            "batch": {"delay": "1ms"},
            "retry": {"initial_backoff": "1ms", "max_backoff": "5ms"},
            **options,
        },
        "forward[0]",
    )
    return ForwardExporter(config, HttpTransport(config))


@pytest.mark.parametrize(
    ("policy", "kept"), [("drop_oldest", ["r2", "r3", "r4"]), ("drop_newest", ["r0", "r1", "r2"])]
)
def test_a_full_queue_applies_its_drop_policy_and_counts(otlp_http, caplog, policy, kept):
    exporter = make_exporter(otlp_http.url, queue_size=3, drop_policy=policy)
    with caplog.at_level(logging.WARNING, logger="tollmeter.collector.forward"):
        for index in range(5):  # the worker is not started yet: the queue fills up
            exporter.offer("traces", request(f"r{index}"))
    stats = exporter.stats()
    assert stats.queue_depth == 3
    assert stats.dropped == {("traces", "queue_full"): 2}
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    exporter.start()
    exporter.shutdown(10)
    assert services(otlp_http.bodies()) == kept
    assert exporter.stats().sent == {"traces": 3}


def test_the_queue_is_bounded_in_bytes_too(otlp_http):
    body = request("x" * 100)
    exporter = make_exporter(otlp_http.url, queue_bytes=len(body) * 2)
    for _ in range(3):
        exporter.offer("traces", body)
    stats = exporter.stats()
    assert stats.queue_depth == 2
    assert stats.queue_bytes == len(body) * 2
    assert stats.dropped[("traces", "queue_full")] == 1
    exporter.shutdown(0)


def test_requests_of_one_signal_are_batched_in_order(otlp_http):
    exporter = make_exporter(otlp_http.url, batch={"max_requests": 2, "delay": "1ms"})
    for index in range(3):
        exporter.offer("traces", request(f"t{index}"))
    exporter.offer("logs", b"")
    exporter.offer("traces", request("t3"))
    exporter.start()
    exporter.shutdown(10)
    paths = [path for path, _, _ in otlp_http.requests]
    assert paths == ["/v1/traces", "/v1/traces", "/v1/logs", "/v1/traces"]
    assert services(otlp_http.bodies()) == ["t0", "t1", "t2", "t3"]
    stats = exporter.stats()
    assert stats.sent == {"traces": 4, "logs": 1}
    assert stats.batches == 4


def test_retryable_failures_are_retried_until_sent(otlp_http):
    otlp_http.script = [(503, {"Retry-After": "0"}), (429, {})]
    exporter = make_exporter(otlp_http.url)
    exporter.offer("traces", request("once"))
    exporter.start()
    exporter.shutdown(10)
    stats = exporter.stats()
    assert stats.retries == 2
    assert stats.sent == {"traces": 1}
    assert len(otlp_http.requests) == 3
    assert services(otlp_http.bodies()[-1:]) == ["once"]


def test_a_final_error_drops_the_batch_without_retrying(otlp_http):
    otlp_http.script = [(400, {})]
    exporter = make_exporter(otlp_http.url)
    exporter.offer("traces", request("bad"))
    exporter.offer("traces", request("good"))
    exporter.start()
    exporter.shutdown(10)
    stats = exporter.stats()
    assert stats.retries == 0
    assert stats.dropped[("traces", "rejected")] == 2  # one batch of two
    assert len(otlp_http.requests) == 1


def test_retries_stop_at_max_elapsed(otlp_http):
    otlp_http.script = [(503, {})] * 1000
    exporter = make_exporter(
        otlp_http.url, retry={"initial_backoff": "1ms", "max_backoff": "2ms", "max_elapsed": "50ms"}
    )
    exporter.offer("traces", request("doomed"))
    exporter.start()
    exporter.shutdown(10)
    stats = exporter.stats()
    assert stats.dropped[("traces", "retries_exhausted")] == 1
    assert stats.retries >= 1
    assert not stats.sent


def test_offers_after_shutdown_are_dropped_and_counted(otlp_http):
    exporter = make_exporter(otlp_http.url)
    exporter.start()
    exporter.shutdown(10)
    exporter.shutdown(10)  # idempotent
    exporter.offer("metrics", b"")
    assert exporter.stats().dropped == {("metrics", "shutdown"): 1}


def test_an_outage_is_logged_once_and_its_end_once(otlp_http, caplog):
    otlp_http.script = [(400, {}), (400, {}), (400, {})]
    exporter = make_exporter(otlp_http.url, batch={"max_requests": 1, "delay": "1ms"})
    for index in range(4):
        exporter.offer("traces", request(f"r{index}"))
    with caplog.at_level(logging.INFO, logger="tollmeter.collector.forward"):
        exporter.start()
        exporter.shutdown(10)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "dropping until it recovers" in m]) == 1
    assert len([m for m in messages if "accepts requests again" in m]) == 1
    assert exporter.stats().dropped[("traces", "rejected")] == 3
    assert exporter.stats().sent == {"traces": 1}
