"""Retention in a running collector: spans from several days ago, exported, then pruned by
the schedule, with the monthly totals unchanged and ``verify`` resuming at the checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.collector.conftest import RunningCollector, collector_config
from tests.collector.test_verify import Tamper, verify
from tollmeter.collector._retention import ledger_options, prune_once
from tollmeter.collector.storage import Ledger
from tollmeter.collector.storage._query import UsageQuery
from tollmeter.semconv.errors import ConfigurationError

DAY_NS = 86_400 * 1_000_000_000
DAYS_AGO = (9, 8, 7, 6, 5, 4, 3, 1, 0)
PER_DAY = 3


def spans_of(days_ago: int, now_ns: int) -> list[ReadableSpan]:
    """``PER_DAY`` chat spans that ran ``days_ago`` days before ``now_ns``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    start = now_ns - days_ago * DAY_NS - 60 * 1_000_000_000
    for index in range(PER_DAY):
        span = tracer.start_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            start_time=start + index,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.id": f"day{days_ago}-{index}",
                "gen_ai.usage.input_tokens": 100 + days_ago,
                "gen_ai.usage.output_tokens": 20,
                "tollmeter.tenant.id": "acme",
            },
        )
        span.end(end_time=start + index + 1_000_000)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def totals(ledger: Ledger) -> list[tuple[int, int, int]]:
    return [
        (row.input_tokens, row.output_tokens, row.requests)
        for row in ledger.query_usage(UsageQuery(window="month"))
    ]


def wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, "retention did not prune in time"
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_exported_old_events_are_pruned_on_schedule(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    collector_factory: Callable[..., RunningCollector],
) -> None:
    storage: dict[str, Any] = {"retention": {"events": "2d", "interval": "0.1s", "batch": 4}}
    if backend == "postgresql":
        storage["url"] = request.getfixturevalue("postgres_url")
        url = storage["url"]
    else:
        url = f"sqlite:///{tmp_path}/data/ledger.db"
    running = collector_factory(storage=storage, export={"interval": "1h"})
    ledger = running.collector.ledger
    now_ns = time.time_ns()
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        for days_ago in DAYS_AGO:
            assert exporter.export(spans_of(days_ago, now_ns)) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    before = totals(ledger)
    config = running.config.storage.retention

    # Nothing is exported yet: however old, no event may go.
    lease = ledger.lease("retention-test")
    try:
        assert prune_once(ledger, lease, config, now_ns=now_ns) == 0
    finally:
        lease.release()
    assert len(running.events()) == len(DAYS_AGO) * PER_DAY

    exported = httpx.post(f"{running.management_url}/api/v1/export", timeout=60).json()
    assert exported["cursor"] == len(DAYS_AGO) * PER_DAY
    wait_for(lambda: len(running.events()) == 2 * PER_DAY)

    assert {event.input_tokens for event in running.events()} == {101, 100}
    assert totals(ledger) == before
    page = httpx.get(f"{running.management_url}/api/v1/events", timeout=10).json()
    assert page["events"][0]["sequence"] == 7 * PER_DAY + 1
    assert page["pruned"]["through_sequence"] == 7 * PER_DAY
    assert page["pruned"]["first_event_ns"] < page["pruned"]["last_event_ns"]
    running.stop()

    code, verdict = verify("--storage-url", url)
    assert code == 0, verdict
    assert verdict["pruned"]["commit"] == 7
    assert verdict["pruned"]["last_sequence"] == 7 * PER_DAY
    assert verdict["pruned"]["pruned_events"] == 7 * PER_DAY

    Tamper(url)("UPDATE usage_events SET output_tokens = 1 WHERE sequence = ?", 8 * PER_DAY)
    code, verdict = verify("--storage-url", url)
    assert code != 0
    assert verdict["problem"]["kind"] == "altered"
    assert verdict["problem"]["sequence"] == 8 * PER_DAY


def test_retention_without_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"storage\.retention\.events"):
        collector_config(
            tmp_path, storage={"retention": {"events": "30d"}}, export={"enabled": False}
        )


def test_rollup_ages_reach_the_ledger_only_when_set(tmp_path: Path) -> None:
    config = collector_config(
        tmp_path, storage={"retention": {"minute_rollups": "2d", "hour_rollups": "90d"}}
    )
    assert ledger_options(config.storage.retention) == {
        "minute_rollups_s": 2 * 86_400.0,
        "hour_rollups_s": 90 * 86_400.0,
    }
    assert ledger_options(collector_config(tmp_path).storage.retention) == {}
