"""Signs of life in the collector's log: a summary per interval while usage arrives,
a line for each new tenant or service (bounded per interval), detail per commit at debug."""

from __future__ import annotations

import logging
import re
import time

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tollmeter.collector._pipeline import PipelineStats
from tollmeter.collector.observability._activity import ActivityLog

LOGGER = "tollmeter.collector.activity"
SUMMARY = re.compile(
    r"last \d+s: (\d+) spans received, (\d+) model calls metered, (\d+) tenants; refused: (.*)"
)


def export(running, spans) -> None:
    exporter = OTLPSpanExporter(endpoint=running.grpc_endpoint, insecure=True)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def summaries(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    return [m for line in messages(caplog) if (m := SUMMARY.match(line))]


def wait_for_calls(caplog: pytest.LogCaptureFixture, calls: int) -> None:
    deadline = time.monotonic() + 30
    while sum(int(m.group(2)) for m in summaries(caplog)) < calls:
        assert time.monotonic() < deadline, messages(caplog)
        time.sleep(0.05)


def test_summaries_and_bounded_first_seen_lines(collector_factory, make_spans, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    running = collector_factory(
        metrics={"activity_log_interval": "200ms", "activity_log_max_new": 2}
    )
    spans = [
        span
        for index in range(5)
        for span in make_spans(1, tenant=f"t{index}", id_prefix=f"r{index}")
    ]
    export(running, spans)
    wait_for_calls(caplog, 5)

    found = summaries(caplog)
    assert sum(int(m.group(1)) for m in found) == 5  # spans received
    assert max(int(m.group(3)) for m in found) == 5  # tenants in the interval of the commit
    assert all(m.group(4).startswith("none") for m in found)
    first_seen = [line for line in messages(caplog) if line.startswith("first usage from")]
    # One service and five tenants are new, but only two lines per interval are allowed.
    assert len(first_seen) == 2
    assert any("4 more new tenants or services not listed" in line for line in messages(caplog))

    # Known names are not announced again, and quiet intervals write nothing.
    export(running, make_spans(1, tenant="t0", id_prefix="again"))
    wait_for_calls(caplog, 6)
    before = len(messages(caplog))
    time.sleep(0.6)
    assert len(messages(caplog)) == before
    assert len([x for x in messages(caplog) if x.startswith("first usage from")]) == 2


def test_each_commit_at_debug(collector_factory, make_spans, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    running = collector_factory()  # the default interval: no summary during the test
    export(running, make_spans(3, tenant="acme", input_tokens=10, output_tokens=5))
    deadline = time.monotonic() + 30
    while not messages(caplog, logging.DEBUG):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert messages(caplog, logging.DEBUG) == ["committed 3 model calls (45 tokens) for 1 tenants"]
    assert "first usage from tenant 'acme'" in messages(caplog)
    assert "first usage from service 'test-app'" in messages(caplog)
    assert not summaries(caplog)


def test_refusals_are_named_by_kind(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    stats = PipelineStats()
    checks = {"checks_denied": 0}
    activity = ActivityLog(pipeline_stats=lambda: stats, check_counts=lambda: checks)
    activity.summarize()
    assert not messages(caplog)  # nothing arrived: nothing said
    stats.spans_accepted, stats.spans_rejected, stats.refused_full = 7, 2, 1
    checks["checks_denied"] = 4
    activity.summarize()
    [line] = messages(caplog)
    assert line.endswith(
        "9 spans received, 0 model calls metered, 0 tenants; "
        "refused: 2 invalid spans, 1 requests refused while full, 4 checks denied"
    )
