"""The collector's own health as Prometheus metrics, read from each part at scrape time.

Parts keep plain counters (pipeline stats, limit counts, hook and forwarder
stats); :class:`HealthMetrics` turns them into metric families when Prometheus
scrapes, so that nothing on the ingest path touches Prometheus objects. The one
exception is the commit latency histogram, observed by :class:`TimedLedger`
around each ledger append.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tollmeter.collector._avoided import AvoidedCall
from tollmeter.collector._outcomes import Outcome
from tollmeter.collector._pipeline import PipelineStats
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.forward import DROP_REASONS, ExporterStats
from tollmeter.collector.forward._config import Signal
from tollmeter.collector.limits._hooks import HookStats
from tollmeter.collector.storage import AppendResult, Lease, Ledger, UsageQuery, UsageRow
from tollmeter.collector.storage._outcomes import OutcomeRow, OutcomeSummary

__all__ = ["HealthMetrics", "HealthSources", "TimedLedger"]


class TimedLedger(Ledger):
    """A ledger that times every ``append`` (one group commit) into ``histogram``."""

    def __init__(self, ledger: Ledger, histogram: Histogram) -> None:
        self._ledger = ledger
        self._histogram = histogram
        self.shared = ledger.shared

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        started = time.perf_counter()
        try:
            return self._ledger.append(events)
        finally:
            self._histogram.observe(time.perf_counter() - started)

    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        return self._ledger.read_events(after_sequence, limit)

    def last_sequence(self) -> int:
        return self._ledger.last_sequence()

    def query_usage(self, query: UsageQuery) -> list[UsageRow]:
        return self._ledger.query_usage(query)

    def get_state(self, key: str) -> str | None:
        return self._ledger.get_state(key)

    def set_state(self, key: str, value: str) -> None:
        self._ledger.set_state(key, value)

    def lease(self, name: str) -> Lease:
        return self._ledger.lease(name)

    def append_outcomes(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        return self._ledger.append_outcomes(outcomes)

    def read_outcome_rows(self, after_sequence: int, limit: int) -> list[OutcomeRow]:
        return self._ledger.read_outcome_rows(after_sequence, limit)

    def summarize_outcomes(
        self, *, tenant: str | None, start_ns: int, end_ns: int, name: str | None
    ) -> OutcomeSummary:
        return self._ledger.summarize_outcomes(
            tenant=tenant, start_ns=start_ns, end_ns=end_ns, name=name
        )

    def append_avoided(self, calls: Sequence[AvoidedCall]) -> list[AvoidedCall]:
        return self._ledger.append_avoided(calls)

    def summarize_avoided(
        self, *, start_ns: int, end_ns: int, tenant: str | None, group_by: Sequence[str]
    ) -> list[dict[str, object]]:
        return self._ledger.summarize_avoided(
            start_ns=start_ns, end_ns=end_ns, tenant=tenant, group_by=group_by
        )

    def close(self) -> None:
        self._ledger.close()


@dataclass
class HealthSources:
    """Where the health metrics come from; parts that are not running stay ``None``."""

    pipeline: Callable[[], PipelineStats] | None = None
    checks: Callable[[], Mapping[str, int]] | None = None
    hooks: Callable[[], Mapping[str, HookStats]] | None = None
    limits: Callable[[], Mapping[str, Sequence[tuple[str, Mapping[str, str], float]]]] | None = None
    forward: Callable[[], Mapping[str, ExporterStats]] | None = None


class HealthMetrics:
    """A Prometheus collector of the collector's health counters and gauges."""

    def __init__(self, sources: HealthSources) -> None:
        self.sources = sources
        self._lock = threading.Lock()
        self._otlp_requests: dict[Signal, int] = {}

    def count_request(self, signal: Signal, body: bytes) -> None:
        """A signal sink counting the OTLP requests accepted per signal."""
        with self._lock:
            self._otlp_requests[signal] = self._otlp_requests.get(signal, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "tollmeter_otlp_requests",
            "OTLP export requests accepted, per signal.",
            labels=("signal",),
        )
        with self._lock:
            for signal, count in sorted(self._otlp_requests.items()):
                requests.add_metric((signal,), count)
        yield requests
        sources = self.sources
        if sources.pipeline is not None:
            yield from _pipeline_metrics(sources.pipeline())
        if sources.checks is not None:
            counts = sources.checks()
            checks = CounterMetricFamily(
                "tollmeter_checks",
                "Check API decisions (dry runs excluded).",
                labels=("decision",),
            )
            checks.add_metric(("allowed",), counts.get("checks_allowed", 0))
            checks.add_metric(("denied",), counts.get("checks_denied", 0))
            yield checks
            yield GaugeMetricFamily(
                "tollmeter_reservations_open",
                "Reservations made by checks and not yet reconciled.",
                value=counts.get("reservations_open", 0),
            )
            yield CounterMetricFamily(
                "tollmeter_reservations_expired",
                "Reservations that expired unreconciled.",
                value=counts.get("reservations_expired", 0),
            )
        if sources.hooks is not None:
            yield from _hook_metrics(sources.hooks())
        if sources.limits is not None:
            yield from _limit_metrics(sources.limits())
        if sources.forward is not None:
            yield from _forward_metrics(sources.forward())


def _pipeline_metrics(stats: PipelineStats) -> Iterator[Metric]:
    received = CounterMetricFamily(
        "tollmeter_spans_received", "Spans received in accepted OTLP requests."
    )
    received.add_metric((), stats.spans_accepted + stats.spans_rejected)
    yield received
    yield CounterMetricFamily(
        "tollmeter_spans_accepted", "Spans accepted by extraction.", value=stats.spans_accepted
    )
    rejected = CounterMetricFamily(
        "tollmeter_spans_rejected",
        "Spans rejected (and reported as a partial success), by reason.",
        labels=("reason",),
    )
    rejected.add_metric(("invalid",), stats.spans_rejected)
    yield rejected
    refused = CounterMetricFamily(
        "tollmeter_otlp_requests_refused",
        "OTLP requests refused for retry, by reason.",
        labels=("reason",),
    )
    refused.add_metric(("pipeline_full",), stats.refused_full)
    yield refused
    yield CounterMetricFamily(
        "tollmeter_usage_events_committed",
        "Usage events committed to the ledger.",
        value=stats.events_committed,
    )
    yield CounterMetricFamily(
        "tollmeter_usage_events_duplicate",
        "Usage events dropped as already in the ledger.",
        value=stats.duplicates,
    )
    yield CounterMetricFamily(
        "tollmeter_usage_events_shared_response_id",
        "Usage events billed although another tenant reported the same provider response id.",
        value=stats.shared_response_ids,
    )
    yield CounterMetricFamily(
        "tollmeter_ledger_commits", "Ledger group commits.", value=stats.commits
    )
    yield CounterMetricFamily(
        "tollmeter_ledger_commit_failures",
        "Ledger commits that failed (their requests were not acknowledged).",
        value=stats.commit_failures,
    )
    yield GaugeMetricFamily(
        "tollmeter_pipeline_pending_spans",
        "Spans received and not yet committed (the ingest queue depth).",
        value=stats.pending_spans,
    )


_LIMIT_GAUGES = {
    "in_flight": (
        "tollmeter_limit_in_flight",
        "Calls in flight (open reservations) per concurrency limit and key.",
    ),
    "projected": (
        "tollmeter_limit_forecast",
        "Usage projected at the end of the current window, per calendar limit and key.",
    ),
}


def _limit_metrics(
    gauges: Mapping[str, Sequence[tuple[str, Mapping[str, str], float]]],
) -> Iterator[Metric]:
    for kind, (name, text) in _LIMIT_GAUGES.items():
        family = GaugeMetricFamily(name, text, labels=("limit", "key"))
        for limit, key, value in gauges.get(kind, ()):
            family.add_metric((limit, ",".join(f"{d}={v}" for d, v in key.items())), value)
        yield family


def _hook_metrics(stats: Mapping[str, HookStats]) -> Iterator[Metric]:
    deliveries = CounterMetricFamily(
        "tollmeter_hook_notices",
        "Hook notices by outcome (delivered, failed, dropped).",
        labels=("hook", "outcome"),
    )
    retries = CounterMetricFamily(
        "tollmeter_hook_retries", "Hook delivery retries.", labels=("hook",)
    )
    for name, hook in sorted(stats.items()):
        deliveries.add_metric((name, "delivered"), hook.delivered)
        deliveries.add_metric((name, "failed"), hook.failed)
        deliveries.add_metric((name, "dropped"), hook.dropped)
        retries.add_metric((name,), hook.retries)
    yield deliveries
    yield retries


def _forward_metrics(stats: Mapping[str, ExporterStats]) -> Iterator[Metric]:
    sent = CounterMetricFamily(
        "tollmeter_forward_sent_requests",
        "OTLP requests forwarded downstream.",
        labels=("exporter", "signal"),
    )
    dropped = CounterMetricFamily(
        "tollmeter_forward_dropped_requests",
        "OTLP requests not forwarded, by reason "
        "(queue_full, rejected, retries_exhausted, shutdown).",
        labels=("exporter", "signal", "reason"),
    )
    retries = CounterMetricFamily(
        "tollmeter_forward_retries", "Forwarding send retries.", labels=("exporter",)
    )
    batches = CounterMetricFamily(
        "tollmeter_forward_batches", "Batches forwarded downstream.", labels=("exporter",)
    )
    depth = GaugeMetricFamily(
        "tollmeter_forward_queue_depth",
        "OTLP requests waiting to be forwarded.",
        labels=("exporter",),
    )
    size = GaugeMetricFamily(
        "tollmeter_forward_queue_bytes",
        "Bytes of OTLP requests waiting to be forwarded.",
        labels=("exporter",),
    )
    for name, exporter in sorted(stats.items()):
        for signal in exporter.signals:
            sent.add_metric((name, signal), exporter.sent.get(signal, 0))
        # Zeros included: a series that exists before the first drop lets increase() see it.
        for signal in exporter.signals:
            for reason in DROP_REASONS:
                dropped.add_metric(
                    (name, signal, reason), exporter.dropped.get((signal, reason), 0)
                )
        retries.add_metric((name,), exporter.retries)
        batches.add_metric((name,), exporter.batches)
        depth.add_metric((name,), exporter.queue_depth)
        size.add_metric((name,), exporter.queue_bytes)
    yield from (sent, dropped, retries, batches, depth, size)
