"""The ingest pipeline on a real SQLite ledger: group commit, acks after commit, backpressure."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tollmeter.collector._extract import Extractor
from tollmeter.collector._meters import Meters
from tollmeter.collector._pipeline import IngestResult, Pipeline, PipelineFull
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.storage import Ledger, StorageError, UsageQuery, open_ledger

START_NS = 1_773_500_966_000_000_000

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def chat_request(
    first: int, count: int, *, tenant: str | None = "acme", **extra: Any
) -> ExportTraceServiceRequest:
    """``count`` chat spans with response ids ``resp-<first>``..., 10 input + 5 output tokens."""
    message = ExportTraceServiceRequest()
    scope = message.resource_spans.add().scope_spans.add()
    for number in range(first, first + count):
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.id": f"resp-{number}",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 5,
            **extra,
        }
        if tenant is not None:
            attributes["tollmeter.tenant.id"] = tenant
        scope.spans.append(
            Span(
                trace_id=number.to_bytes(16, "big"),
                span_id=number.to_bytes(8, "big"),
                name="chat gpt-4o",
                start_time_unix_nano=START_NS + number,
                end_time_unix_nano=START_NS + number + 10**9,
                attributes=[
                    KeyValue(
                        key=k,
                        value=AnyValue(int_value=v)
                        if isinstance(v, int)
                        else AnyValue(string_value=v),
                    )
                    for k, v in attributes.items()
                ],
            )
        )
    return message


@pytest.fixture
def ledger(tmp_path: Path):
    with open_ledger(f"sqlite:///{tmp_path}/ledger.db") as opened:
        yield opened


async def started(ledger: Ledger, **options: Any) -> Pipeline:
    pipeline = Pipeline(ledger=ledger, **options)
    await pipeline.start()
    return pipeline


async def test_ingest_returns_after_commit(ledger: Ledger) -> None:
    pipeline = await started(ledger)
    result = await pipeline.ingest_traces(chat_request(1, 3))
    try:
        assert result == IngestResult(
            accepted_spans=3, rejected_spans=0, error_message="", events=3, duplicates=0
        )
        assert ledger.last_sequence() == 3, "acknowledged means committed"
        assert pipeline.meters.totals("day", tenant="acme").total_tokens == 0, (
            "events from 2026-03 are outside the current day bucket"
        )
        assert pipeline.meters.totals("month", at=_event_time()).requests == 3
    finally:
        await pipeline.stop(timeout=10)


def _event_time() -> datetime:
    return datetime.fromtimestamp(START_NS / 1e9, tz=timezone.utc)


@pytest.mark.parametrize("thread_extract_spans", [None, 0, 1000])
async def test_extraction_on_the_loop_or_in_a_thread_gives_the_same_result(
    ledger: Ledger, thread_extract_spans: int | None
) -> None:
    pipeline = await started(ledger, thread_extract_spans=thread_extract_spans)
    try:
        request = chat_request(1, 4)
        request.MergeFrom(chat_request(10, 1, **{"gen_ai.usage.input_tokens": -1}))
        result = await pipeline.ingest_traces(request, bound_tenant="acme")
        assert (result.accepted_spans, result.rejected_spans, result.events) == (4, 1, 4)
    finally:
        await pipeline.stop(timeout=10)


async def test_many_concurrent_ingests_share_commits(ledger: Ledger) -> None:
    pipeline = await started(ledger, commit_interval_s=0.01)
    try:
        results = await asyncio.gather(
            *(pipeline.ingest_traces(chat_request(i * 10, 10)) for i in range(50))
        )
        assert sum(r.events for r in results) == 500
        stats = pipeline.stats()
        assert stats.commits < 50, "concurrent requests were grouped into fewer commits"
        assert stats.events_committed == 500
        assert stats.pending_spans == 0
        (row,) = ledger.query_usage(UsageQuery())
        assert (row.requests, row.total_tokens) == (500, 7500)
    finally:
        await pipeline.stop(timeout=10)


async def test_duplicates_within_and_across_requests(ledger: Ledger) -> None:
    pipeline = await started(ledger, commit_interval_s=0.01)
    try:
        first, again = await asyncio.gather(
            pipeline.ingest_traces(chat_request(1, 5)), pipeline.ingest_traces(chat_request(1, 5))
        )
        assert sorted([(first.events, first.duplicates), (again.events, again.duplicates)]) == [
            (0, 5),
            (5, 0),
        ]
        retried = await pipeline.ingest_traces(chat_request(3, 5))
        assert (retried.events, retried.duplicates) == (2, 3)
        assert ledger.last_sequence() == 7
    finally:
        await pipeline.stop(timeout=10)


async def test_rejected_spans_are_reported_and_the_rest_metered(ledger: Ledger) -> None:
    pipeline = await started(ledger)
    try:
        request = chat_request(1, 2)
        request.MergeFrom(chat_request(10, 1, **{"gen_ai.usage.input_tokens": "lots"}))
        result = await pipeline.ingest_traces(request)
        assert (result.accepted_spans, result.rejected_spans, result.events) == (2, 1, 2)
        assert "gen_ai.usage.input_tokens" in result.error_message
        assert pipeline.stats().spans_rejected == 1
    finally:
        await pipeline.stop(timeout=10)


async def test_bound_tenant(ledger: Ledger) -> None:
    pipeline = await started(ledger)
    try:
        own = await pipeline.ingest_traces(chat_request(1, 1, tenant=None), bound_tenant="a")
        other = await pipeline.ingest_traces(chat_request(2, 1, tenant="b"), bound_tenant="a")
        assert (own.events, other.events, other.rejected_spans) == (1, 0, 1)
        assert [e.tenant_id for e in ledger.read_events(0, 10)] == ["a"]
    finally:
        await pipeline.stop(timeout=10)


class _SlowLedger:
    """Wraps a ledger so appends wait for a gate: lets a test fill the queue."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def append(self, events: Sequence[UsageEvent]):
        self.gate.wait(timeout=30)
        return self.ledger.append(events)


async def test_full_queue_is_refused_at_once_and_stop_drains(ledger: Ledger) -> None:
    slow = _SlowLedger(ledger)
    pipeline = await started(slow, max_pending_spans=10)  # type: ignore[arg-type]
    first = asyncio.ensure_future(pipeline.ingest_traces(chat_request(1, 8)))
    await asyncio.sleep(0.05)
    with pytest.raises(PipelineFull, match="pending") as refused:
        await pipeline.ingest_traces(chat_request(100, 5))
    assert refused.value.retry_after_s > 0
    second = asyncio.ensure_future(pipeline.ingest_traces(chat_request(200, 2)))
    await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(pipeline.stop(timeout=30))
    await asyncio.sleep(0.01)
    with pytest.raises(PipelineFull, match="not accepting"):
        await pipeline.ingest_traces(chat_request(300, 1))
    slow.gate.set()
    await stopping
    assert ((await first).events, (await second).events) == (8, 2)
    assert ledger.last_sequence() == 10
    assert not pipeline.ready


async def test_storage_failure_fails_the_request_not_the_pipeline(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.db")
    pipeline = await started(ledger)
    ledger.close()
    with pytest.raises(StorageError):
        await pipeline.ingest_traces(chat_request(1, 1))
    assert pipeline.stats().commit_failures == 1
    assert pipeline.stats().pending_spans == 0
    await pipeline.stop(timeout=10)


async def test_a_bad_request_does_not_fail_the_requests_committed_with_it(ledger: Ledger) -> None:
    pipeline = await started(ledger, commit_interval_s=0.05)
    poisoned = UsageEvent(
        event_id="bad",
        event_time_ns=START_NS,
        provider="openai",
        operation="chat",
        tenant_id="acme",
        input_tokens=2**70,  # cannot be stored in SQLite
    )
    try:
        good, bad = await asyncio.gather(
            pipeline.ingest_traces(chat_request(1, 3)),
            pipeline.append_events([poisoned]),
            return_exceptions=True,
        )
        assert isinstance(good, IngestResult)
        assert good.events == 3
        assert isinstance(bad, OverflowError)
        assert ledger.last_sequence() == 3
        assert pipeline.stats().pending_spans == 0
    finally:
        await pipeline.stop(timeout=10)


class _BrokenLedger(_SlowLedger):
    def append(self, events: Sequence[UsageEvent]):
        return None  # breaks the AppendResult contract


async def test_a_writer_bug_fails_requests_instead_of_hanging_them(ledger: Ledger) -> None:
    pipeline = await started(_BrokenLedger(ledger))  # type: ignore[arg-type]
    try:
        for first in (1, 10):
            with pytest.raises(AttributeError):
                await asyncio.wait_for(pipeline.ingest_traces(chat_request(first, 1)), 30)
    finally:
        await pipeline.stop(timeout=10)


async def test_subscribers_see_new_events_and_cannot_break_ingest(ledger: Ledger) -> None:
    pipeline = await started(ledger)
    seen: list[str] = []

    def broken(events: Sequence[UsageEvent]) -> None:
        raise RuntimeError("subscriber bug")

    pipeline.subscribe(broken)
    pipeline.subscribe(lambda events: seen.extend(e.event_id for e in events))
    try:
        await pipeline.ingest_traces(chat_request(1, 2))
        await pipeline.ingest_traces(chat_request(1, 2))  # duplicates are not announced
        assert len(seen) == 2
    finally:
        await pipeline.stop(timeout=10)


async def test_append_events_and_pricing(ledger: Ledger) -> None:
    class Pricer:
        def price_all(self, events):
            return [
                UsageEvent(**{**_fields(e), "cost": Decimal("0.001"), "currency": "USD"})
                for e in events
            ]

    pipeline = await started(ledger, pricer=Pricer())
    try:
        await pipeline.ingest_traces(chat_request(1, 3))
        charged = UsageEvent(
            event_id="reservation-1",
            event_time_ns=START_NS,
            provider="openai",
            operation="chat",
            tenant_id="acme",
            total_tokens=100,
            input_tokens=100,
            usage_source="reservation",
        )
        result = await pipeline.append_events([charged])
        assert [e.sequence for e in result.committed] == [4]
        (row,) = ledger.query_usage(UsageQuery())
        assert (row.cost, row.requests, row.total_tokens) == (Decimal("0.003"), 4, 145)
    finally:
        await pipeline.stop(timeout=10)


def _fields(event: UsageEvent) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


async def test_a_failing_pricer_stores_usage_unpriced(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def price_all(self, events):
            raise RuntimeError("price table corrupt")

    pipeline = await started(ledger, pricer=Broken())
    try:
        result = await pipeline.ingest_traces(chat_request(1, 2))
        assert result.events == 2
        assert [e.cost for e in ledger.read_events(0, 10)] == [None, None]
        assert "storing them unpriced" in caplog.text
    finally:
        await pipeline.stop(timeout=10)


async def test_meters_are_rebuilt_at_start(ledger: Ledger) -> None:
    pipeline = await started(ledger)
    await pipeline.ingest_traces(chat_request(1, 4, **{"tollmeter.project.id": "web"}))
    before = pipeline.meters.totals("month", at=_event_time(), project="web")
    await pipeline.stop(timeout=10)

    fresh = Meters(retention_s={"minute": 10**9, "hour": 10**9, "day": 10**9, "month": 10**9})
    again = await started(ledger, meters=fresh)
    try:
        assert again.meters.totals("month", at=_event_time(), project="web") == before
        assert before.requests == 4
    finally:
        await again.stop(timeout=10)


def test_pipeline_refuses_bad_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pipeline(ledger=open_ledger("memory://"), extractor=Extractor(), max_pending_spans=0)
