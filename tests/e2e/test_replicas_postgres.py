"""Collector replicas sharing one PostgreSQL ledger: every span billed exactly once.

Real ``tollmeter collector`` processes, a real PostgreSQL server and real OTLP exporters.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
import pyarrow.parquet as pq
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests._postgres import PostgresServer
from tests.e2e.conftest import CollectorProcess

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def chat_spans(
    count: int, *, tenant: str, prefix: str, trace_ids: bool = False
) -> list[ReadableSpan]:
    """``count`` finished chat spans; response ids ``{prefix}-{i}`` unless ``trace_ids``
    (then the span's own trace and span ids are the dedupe key)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "replica-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    for index in range(count):
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 100 + index,
            "gen_ai.usage.output_tokens": 10,
            "tollmeter.tenant.id": tenant,
        }
        if not trace_ids:
            attributes["gen_ai.response.id"] = f"{prefix}-{index}"
        with tracer.start_as_current_span(
            "chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=attributes
        ):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def replicas(
    collector_process: Callable[..., CollectorProcess], url: str, count: int
) -> list[CollectorProcess]:
    return [
        collector_process(args=["--storage-url", url], env={"TOLLMETER_COLLECTOR_ID": f"r{i}"})
        for i in range(count)
    ]


def events_of(replica: CollectorProcess) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        reply = httpx.get(
            f"{replica.management_url}/api/v1/events",
            params={"after": after, "limit": 1000},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        page = reply.json()["events"]
        if not page:
            return events
        events.extend(page)
        after = page[-1]["sequence"]


def totals_of(replica: CollectorProcess) -> dict[str, Any]:
    reply = httpx.get(
        f"{replica.management_url}/api/v1/usage", params={"group_by": "tenant"}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    return {row["tenant"]: (row["requests"], row["input_tokens"]) for row in reply.json()["rows"]}


def post(replica: CollectorProcess, body: bytes) -> int:
    reply = httpx.post(
        f"{replica.http_endpoint}/v1/traces", content=body, headers=PROTOBUF, timeout=30
    )
    return reply.status_code


def post_together(group: Sequence[CollectorProcess], body: bytes) -> list[int]:
    """Post ``body`` to every replica of ``group`` at the same moment; their status codes."""
    start = threading.Barrier(len(group))
    codes: list[int] = []

    def send(replica: CollectorProcess) -> None:
        start.wait(10)
        codes.append(post(replica, body))

    senders = [threading.Thread(target=send, args=(replica,)) for replica in group]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    return codes


def test_the_same_batch_at_two_replicas_at_once_is_billed_once(
    collector_process: Callable[..., CollectorProcess], postgres_url: str
) -> None:
    first, second = replicas(collector_process, postgres_url, 2)
    for round_number in range(5):
        body = encode_spans(
            chat_spans(50, tenant="acme", prefix=f"round{round_number}")
        ).SerializeToString()
        assert post_together([first, second], body) == [200, 200]

    ids = [event["event_id"] for event in events_of(first)]
    assert len(ids) == 250
    assert len(set(ids)) == 250
    # Both replicas answer from the shared tables.
    assert events_of(second) == events_of(first)
    expected = {"acme": (250, sum(100 + i for i in range(50)) * 5)}
    assert totals_of(first) == totals_of(second) == expected


def test_the_same_span_ids_from_two_tenants_are_two_events(
    collector_process: Callable[..., CollectorProcess], postgres_url: str
) -> None:
    first, second = replicas(collector_process, postgres_url, 2)
    for tenant, replica in (("acme", first), ("globex", second)):
        # Both tenants claim the same provider response ids, at different replicas.
        body = encode_spans(chat_spans(10, tenant=tenant, prefix="shared")).SerializeToString()
        assert post(replica, body) == 200
    assert totals_of(second) == {"acme": (10, 1045), "globex": (10, 1045)}


def test_a_replica_killed_mid_load_loses_and_doubles_nothing(
    collector_process: Callable[..., CollectorProcess], postgres_url: str
) -> None:
    victim, survivor = replicas(collector_process, postgres_url, 2)
    exporters = {
        replica.http_endpoint: OTLPSpanExporter(
            endpoint=f"{replica.http_endpoint}/v1/traces", timeout=3
        )
        for replica in (victim, survivor)
    }
    batches = [chat_spans(20, tenant=f"t{b % 3}", prefix=f"b{b}") for b in range(40)]
    acked_by_victim = threading.Event()
    failures: list[str] = []

    def sender(lane: int) -> None:
        # Like an exporter behind a load balancer: batches alternate between the replicas,
        # and a batch that is not acknowledged is sent again to the other one.
        for number in range(lane, len(batches), 2):
            order = [victim, survivor] if number % 4 < 2 else [survivor, victim]
            for replica in order:
                result = exporters[replica.http_endpoint].export(batches[number])
                if result is SpanExportResult.SUCCESS:
                    if replica is victim:
                        acked_by_victim.set()
                    break
            else:
                failures.append(f"batch {number} acknowledged by no replica")

    lanes = [threading.Thread(target=sender, args=(lane,)) for lane in (0, 1)]
    for lane in lanes:
        lane.start()
    assert acked_by_victim.wait(60)
    victim.stop(signal.SIGKILL)
    for lane in lanes:
        lane.join(120)
    for exporter in exporters.values():
        exporter.shutdown()

    assert failures == []
    events = events_of(survivor)
    keys = [(event["tenant_id"], event["response_id"]) for event in events]
    assert len(keys) == len(set(keys)), "a span was billed twice"
    expected = {(f"t{b % 3}", f"b{b}-{i}") for b in range(40) for i in range(20)}
    assert set(keys) == expected, "a span was lost"
    assert sum(requests for requests, _ in totals_of(survivor).values()) == 800


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def _ready(replica: CollectorProcess) -> int:
    return httpx.get(f"{replica.management_url}/readyz", timeout=10).status_code


def test_losing_postgresql_answers_503_and_not_ready_then_recovers_with_nothing_lost(
    collector_process: Callable[..., CollectorProcess],
    postgres_server: PostgresServer,
    postgres_url: str,
) -> None:
    (replica,) = replicas(collector_process, postgres_url, 1)
    before = encode_spans(chat_spans(10, tenant="acme", prefix="before")).SerializeToString()
    assert post(replica, before) == 200

    postgres_server.stop()
    try:
        during = encode_spans(chat_spans(10, tenant="acme", prefix="during")).SerializeToString()
        # Unavailable, not an error: the sender keeps the batch and retries.
        assert post(replica, during) == 503
        with grpc.insecure_channel(replica.grpc_endpoint) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Export(ExportTraceServiceRequest.FromString(during), timeout=30)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        _wait(lambda: _ready(replica) == 503, "the replica reports not ready")
    finally:
        postgres_server.start()

    codes: list[int] = []

    def delivered() -> bool:
        codes.append(post(replica, during))
        return codes[-1] == 200

    _wait(delivered, "the retried batch is acknowledged")
    _wait(lambda: _ready(replica) == 200, "the replica is ready again")
    assert set(codes) <= {200, 503}
    assert totals_of(replica) == {"acme": (20, 2 * sum(100 + i for i in range(10)))}


def test_replicas_report_the_same_usage_and_meters(
    collector_process: Callable[..., CollectorProcess], postgres_url: str
) -> None:
    group: Sequence[CollectorProcess] = replicas(collector_process, postgres_url, 2)
    body = encode_spans(chat_spans(5, tenant="acme", prefix="x", trace_ids=True))
    assert post(group[0], body.SerializeToString()) == 200
    assert totals_of(group[0]) == totals_of(group[1]) == {"acme": (5, 510)}
    meters = [
        httpx.get(f"{replica.management_url}/api/v1/meters", timeout=10).json() for replica in group
    ]
    assert meters[0] == meters[1]
    assert meters[1]["meters"]["acme"]["requests"] == 5


def _exported(directory: Path) -> dict[str, list[str]]:
    """Event ids in the export's final Parquet files, per writing collector."""
    ids: dict[str, list[str]] = {}
    for path in sorted(directory.glob("date=*/*.parquet")):
        writer = path.name.split("-")[0]
        ids.setdefault(writer, []).extend(pq.read_table(path).column("event_id").to_pylist())
    return ids


def test_one_replica_exports_and_a_standby_takes_over_when_it_dies(
    collector_process: Callable[..., CollectorProcess], postgres_url: str, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    config = tmp_path / "replica.yaml"
    config.write_text(
        f"storage: {{url: '{postgres_url}'}}\nexport: {{directory: '{export}', interval: 100ms}}\n"
    )
    group = [
        collector_process(args=["--config", str(config)], env={"TOLLMETER_COLLECTOR_ID": name})
        for name in ("first", "second")
    ]

    def send(batches: range) -> None:
        for number in batches:
            body = encode_spans(chat_spans(20, tenant="acme", prefix=f"b{number}"))
            assert post(group[number % 2], body.SerializeToString()) == 200

    def exported_count() -> int:
        return sum(len(ids) for ids in _exported(export).values())

    send(range(6))
    _wait(lambda: exported_count() >= 120, "the first events are exported")
    time.sleep(0.5)  # several more intervals, in which a second exporter would show
    (holder,) = _exported(export)
    victim = group[0] if holder == "first" else group[1]
    standby = group[1] if victim is group[0] else group[0]
    victim.stop(signal.SIGKILL)
    group = [standby, standby]
    send(range(6, 12))
    _wait(lambda: exported_count() >= 240, "the standby exports the rest")
    by_writer = _exported(export)
    assert set(by_writer) == {"first", "second"}
    every = [event_id for ids in by_writer.values() for event_id in ids]
    assert len(every) == 240
    assert len(set(every)) == 240
