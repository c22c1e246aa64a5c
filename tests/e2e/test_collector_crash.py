"""SIGKILL the real collector process at random moments under load, restart it, and
check that every span was metered exactly once: acknowledged ones are never lost, and
batches retried after a crash (committed or not) are never counted twice."""

from __future__ import annotations

import random
import threading
import time

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BATCHES = 60
SPANS_PER_BATCH = 20
KILLS = 3


def attribute(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def batch(number: int) -> bytes:
    spans = []
    for index in range(SPANS_PER_BATCH):
        serial = number * SPANS_PER_BATCH + index + 1
        spans.append(
            Span(
                trace_id=serial.to_bytes(16, "big"),
                span_id=serial.to_bytes(8, "big"),
                name="chat gpt-4o-mini",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=1_700_000_000_000_000_000 + serial,
                end_time_unix_nano=1_700_000_000_100_000_000 + serial,
                attributes=[
                    attribute("gen_ai.operation.name", "chat"),
                    attribute("gen_ai.provider.name", "openai"),
                    attribute("gen_ai.request.model", "gpt-4o-mini"),
                    attribute("gen_ai.response.id", f"chatcmpl-{serial}"),
                    attribute("gen_ai.usage.input_tokens", 10),
                    attribute("gen_ai.usage.output_tokens", 1),
                    attribute("tollmeter.tenant.id", f"tenant-{number % 3}"),
                ],
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    return request.SerializeToString()


def test_sigkill_under_load_loses_nothing_acknowledged_and_counts_nothing_twice(
    collector_process,
):
    collector = collector_process()
    rng = random.Random(5)
    done = threading.Event()
    attempts = {"failed": 0, "acknowledged": 0}

    def send_all() -> None:
        channel = grpc.insecure_channel(collector.grpc_endpoint)
        try:
            for number in range(BATCHES):
                payload = batch(number)
                # Like an exporter: retry a batch until it is acknowledged.
                while True:
                    stub = channel.unary_unary(
                        TRACES, response_deserializer=ExportTraceServiceResponse.FromString
                    )
                    try:
                        response = stub(payload, timeout=10)
                    except grpc.RpcError:
                        attempts["failed"] += 1
                        time.sleep(0.05)
                        continue
                    assert not response.HasField("partial_success")
                    attempts["acknowledged"] += 1
                    break
        finally:
            channel.close()
            done.set()

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # Kill while batches are flowing: after a random number of acknowledged batches,
    # at a random instant of the next request (before, during or after its commit).
    for threshold in sorted(rng.sample(range(5, BATCHES - 5), KILLS)):
        while attempts["acknowledged"] < threshold and not done.is_set():
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        collector.kill()  # SIGKILL: no shutdown, no drain
        collector.start()
    sender.join(300)
    assert done.is_set()
    assert attempts["acknowledged"] == BATCHES
    assert attempts["failed"] > 0

    usage = httpx.get(f"{collector.management_url}/api/v1/usage?group_by=tenant", timeout=30)
    rows = usage.json()["rows"]
    assert sum(row["requests"] for row in rows) == BATCHES * SPANS_PER_BATCH
    assert sum(row["input_tokens"] for row in rows) == BATCHES * SPANS_PER_BATCH * 10
    assert collector.runs == KILLS + 1
