"""The ingest pipeline: extract usage from OTLP spans, group-commit it, then acknowledge.

Many concurrent ``ingest_traces`` calls share one ledger transaction: callers extract
their spans on the event loop and queue the events; a single writer thread takes
whatever is queued (waiting up to ``commit_interval_s`` for more, at most
``max_batch_events``), appends it in one durable transaction, updates the meters and
subscribers, and only then completes each caller's future. A full queue is refused at
once with ``PipelineFull`` so that OTLP exporters back off and retry.

A failed commit marks the pipeline as unable to commit (:attr:`Pipeline.commit_error`,
which readiness reports) until a commit succeeds. While no request comes, the writer
retries the failed events every ``probe_interval_s``: they were never acknowledged,
so the sender retries them too, and committing them once is exactly what dedupe
makes of the two.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tollmeter.collector._extract import Extractor, ExtractResult
from tollmeter.collector._meters import Meters
from tollmeter.collector._records import UsageEvent
from tollmeter.collector._shared_ids import SharedResponseIds
from tollmeter.collector.errors import PipelineFull
from tollmeter.collector.storage import AppendResult, Ledger
from tollmeter.collector.storage._rollups import MinuteSums

__all__ = [
    "Annotator",
    "CommitSubscriber",
    "EventPricer",
    "IngestResult",
    "Pipeline",
    "PipelineFull",
    "PipelineStats",
    "SpanExtractor",
    "Subscriber",
]

logger = logging.getLogger(__name__)

Subscriber = Callable[[Sequence[UsageEvent]], None]
"""Called on the writer thread with each commit's new events; must be quick and not raise."""

Annotator = Callable[[list[UsageEvent]], list[UsageEvent]]
"""Completes a commit's events before they are stored; returns them, in the same order."""

CommitSubscriber = Callable[[Sequence[UsageEvent], MinuteSums], None]
"""Like ``Subscriber``, with the commit's per-minute sums beside its events (computed once,
by the ledger, for its rollups)."""


class SpanExtractor(Protocol):
    def extract(
        self,
        request: ExportTraceServiceRequest,
        *,
        bound_tenant: str | None = None,
        internal: bool = False,
    ) -> ExtractResult: ...


class EventPricer(Protocol):
    def price_all(self, events: Iterable[UsageEvent]) -> list[UsageEvent]: ...


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The outcome of one OTLP request, returned once its events are committed.

    ``events`` counts the newly committed usage events; ``duplicates`` those already
    in the ledger (or repeated in the same commit); ``outcomes`` the newly stored outcomes,
    ``avoided`` the newly stored cache hits.
    """

    accepted_spans: int
    rejected_spans: int
    error_message: str
    events: int
    duplicates: int
    outcomes: int = 0
    avoided: int = 0


@dataclass(slots=True)
class PipelineStats:
    """Running totals since start, for metrics endpoints."""

    spans_accepted: int = 0
    spans_rejected: int = 0
    events_committed: int = 0
    duplicates: int = 0
    commits: int = 0
    refused_full: int = 0
    commit_failures: int = 0
    pending_spans: int = 0
    shared_response_ids: int = 0
    """Committed events whose provider response id another tenant reported before."""


@dataclass(slots=True)
class _Job:
    events: Sequence[UsageEvent]
    weight: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[AppendResult]


_MAX_REPORTED_ERRORS = 20


class Pipeline:
    """Group-committing ingest from OTLP requests (or ready events) into a ledger.

    Without an ``extractor``, an ``Extractor`` is built from ``tenant_attributes``,
    ``default_tenant`` and ``collector_id``. A ``pricer`` sets each event's cost before
    it is stored, so that rollups and meters carry costs too. Requests of more than
    ``thread_extract_spans`` spans are extracted in a worker thread: the CPU work is the
    same, but the event loop keeps serving other requests meanwhile (``None``: never).
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        extractor: SpanExtractor | None = None,
        meters: Meters | None = None,
        pricer: EventPricer | None = None,
        max_pending_spans: int = 100_000,
        commit_interval_s: float = 0.002,
        max_batch_events: int = 20_000,
        retry_after_s: float = 1.0,
        probe_interval_s: float = 1.0,
        thread_extract_spans: int | None = 256,
        tenant_attributes: Sequence[str] = (),
        default_tenant: str = "unknown",
        collector_id: str | None = None,
    ) -> None:
        if max_pending_spans < 1 or max_batch_events < 1:
            raise ValueError("max_pending_spans and max_batch_events must be positive")
        if commit_interval_s < 0:
            raise ValueError("commit_interval_s must not be negative")
        self._ledger = ledger
        self._extractor = extractor or Extractor(
            tenant_attributes=tenant_attributes,
            default_tenant=default_tenant,
            collector_id=collector_id,
        )
        self._pricer = pricer
        self._meters = Meters() if meters is None else meters
        self._max_pending = max_pending_spans
        self._interval_s = commit_interval_s
        self._max_batch = max_batch_events
        self._retry_after_s = retry_after_s
        self._probe_interval_s = probe_interval_s
        # Why the last commit failed and its events, until a commit succeeds.
        self._failure: tuple[str, Sequence[UsageEvent]] | None = None
        self._thread_extract_spans = thread_extract_spans
        # ``None`` asks the writer to stop once everything before it is committed.
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stats = PipelineStats()
        self._shared_ids = SharedResponseIds()
        self._subscribers: list[Subscriber] = [self._count_shared_ids]
        self._commit_subscribers: list[CommitSubscriber] = [self._apply_to_meters]
        self._annotate: Annotator | None = None
        self._writer: threading.Thread | None = None
        self._accepting = False
        self._stopped = False

    @property
    def meters(self) -> Meters:
        return self._meters

    @property
    def ready(self) -> bool:
        return self._accepting

    @property
    def commit_error(self) -> str | None:
        """Why the ledger refused the last commit; ``None`` once one succeeds."""
        failure = self._failure
        return None if failure is None else failure[0]

    def stats(self) -> PipelineStats:
        with self._lock:
            return PipelineStats(**{name: getattr(self._stats, name) for name in _STAT_FIELDS})

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback`` after every commit with the newly committed events."""
        self._subscribers.append(callback)

    def set_annotator(self, annotate: Annotator) -> None:
        """Have ``annotate`` complete each commit's events just before they are stored
        (the limits' plan and policy path); it runs on the writer thread and may fill the
        events in in place (``_records.fill_in``): they are the pipeline's until committed."""
        self._annotate = annotate

    def subscribe_commits(self, callback: CommitSubscriber) -> None:
        """Call ``callback`` after every commit with its new events and per-minute sums."""
        self._commit_subscribers.append(callback)

    async def start(self) -> None:
        """Rebuild the meters from the ledger, then start the writer thread."""
        if self._writer is not None:
            raise RuntimeError("pipeline already started")
        await asyncio.to_thread(self._meters.rebuild, self._ledger)
        self._writer = threading.Thread(
            target=self._run, name="tollmeter-ledger-writer", daemon=True
        )
        self._writer.start()
        self._accepting = True

    async def stop(self, timeout: float) -> None:
        """Refuse new work, commit everything queued within ``timeout`` seconds, stop."""
        with self._lock:
            self._accepting = False
            writer = self._writer
            if writer is None or self._stopped:
                return
            self._stopped = True
            self._queue.put(None)
        await asyncio.to_thread(writer.join, timeout)
        if writer.is_alive():
            logger.error("ledger writer still busy after %.1fs; pending requests may fail", timeout)

    async def ingest_traces(
        self,
        request: ExportTraceServiceRequest,
        *,
        bound_tenant: str | None = None,
        internal: bool = False,
    ) -> IngestResult:
        """Meter ``request``; returns once its usage events are committed. ``bound_tenant``
        and ``internal`` are what the request's ingest key says (see ``Extractor``).

        Raises ``PipelineFull`` at once when too many spans are pending, and the
        ledger's ``StorageError`` when the commit failed (nothing was acknowledged).
        """
        weight = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        self._reserve(weight)
        try:
            if self._thread_extract_spans is not None and weight > self._thread_extract_spans:
                extracted, events = await asyncio.to_thread(
                    self._extract, request, bound_tenant, internal
                )
            else:
                extracted, events = self._extract(request, bound_tenant, internal)
        except BaseException:
            self._release(weight)
            raise
        with self._lock:
            self._stats.spans_accepted += extracted.accepted_spans
            self._stats.spans_rejected += extracted.rejected_spans
        outcomes = 0
        if extracted.outcomes:
            # Rare next to model calls, so stored on their own, before the events: a failure
            # acknowledges nothing, and the retried request stores what is missing once.
            try:
                stored = await asyncio.to_thread(self._ledger.append_outcomes, extracted.outcomes)
            except BaseException:
                self._release(weight)
                raise
            outcomes = len(stored)
        avoided = 0
        if extracted.avoided:
            # Stored like outcomes, and never handed to meters or limits: avoided usage is
            # not usage.
            try:
                saved = await asyncio.to_thread(self._ledger.append_avoided, extracted.avoided)
            except BaseException:
                self._release(weight)
                raise
            avoided = len(saved)
        result = await self._submit(events, weight) if events else None
        if result is None:
            self._release(weight)
        return IngestResult(
            accepted_spans=extracted.accepted_spans,
            rejected_spans=extracted.rejected_spans,
            error_message=_summarize(extracted.errors),
            events=0 if result is None else len(result.committed),
            duplicates=0 if result is None else result.duplicates,
            outcomes=outcomes,
            avoided=avoided,
        )

    async def append_events(self, events: Sequence[UsageEvent]) -> AppendResult:
        """Commit ready-made events (reservations charged at expiry...) like ingested ones."""
        if not events:
            return AppendResult()
        self._reserve(len(events))
        return await self._submit(events, len(events))

    def _extract(
        self, request: ExportTraceServiceRequest, bound_tenant: str | None, internal: bool
    ) -> tuple[ExtractResult, list[UsageEvent]]:
        extracted = self._extractor.extract(request, bound_tenant=bound_tenant, internal=internal)
        return extracted, self._priced(extracted.events)

    def _priced(self, events: list[UsageEvent]) -> list[UsageEvent]:
        if not events or self._pricer is None:
            return events
        try:
            return self._pricer.price_all(events)
        except Exception:
            # A pricing bug must not lose usage: the events are stored without a cost.
            logger.exception("pricing %d usage events failed; storing them unpriced", len(events))
            return events

    def _reserve(self, weight: int) -> None:
        with self._lock:
            if not self._accepting:
                raise PipelineFull(
                    "collector is not accepting data", retry_after_s=self._retry_after_s
                )
            pending = self._stats.pending_spans
            if pending and pending + weight > self._max_pending:
                self._stats.refused_full += 1
                raise PipelineFull(
                    f"{pending} spans pending, limit {self._max_pending}",
                    retry_after_s=self._retry_after_s,
                )
            self._stats.pending_spans += weight

    def _release(self, weight: int) -> None:
        with self._lock:
            self._stats.pending_spans -= weight

    async def _submit(self, events: Sequence[UsageEvent], weight: int) -> AppendResult:
        loop = asyncio.get_running_loop()
        job = _Job(events, weight, loop, loop.create_future())
        with self._lock:
            if self._stopped:
                # Stopped while this request was being extracted: the writer is gone.
                self._stats.pending_spans -= weight
                raise PipelineFull("collector is stopping", retry_after_s=self._retry_after_s)
            self._queue.put(job)
        return await asyncio.shield(job.future)

    # -- writer thread -------------------------------------------------------

    def _apply_to_meters(self, events: Sequence[UsageEvent], minutes: MinuteSums) -> None:
        self._meters.apply_minutes(minutes)

    def _count_shared_ids(self, events: Sequence[UsageEvent]) -> None:
        shared = self._shared_ids.observe(events)
        if shared:
            with self._lock:
                self._stats.shared_response_ids += shared

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(
                    timeout=None if self._failure is None else self._probe_interval_s
                )
            except queue.Empty:
                self._probe()
                continue
            if first is None:
                break
            jobs, stopping = self._gather(first)
            try:
                outcomes = self._commit(jobs)
            except Exception as exc:
                # A bug here must not kill the writer: every later request would hang.
                logger.exception("ledger writer failed on %d requests", len(jobs))
                outcomes = [(job, exc) for job in jobs]
            self._release(sum(job.weight for job in jobs))
            for job, outcome in outcomes:
                _resolve(job, outcome)

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs = [first]
        size = len(first.events)
        deadline = time.monotonic() + self._interval_s
        while size < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                return jobs, True
            jobs.append(item)
            size += len(item.events)
        return jobs, False

    def _commit(self, jobs: list[_Job]) -> list[tuple[_Job, AppendResult | BaseException]]:
        events = self._annotated([event for job in jobs for event in job.events])
        try:
            result = self._ledger.append(events)
        except Exception as exc:
            if len(jobs) > 1:
                # One bad request must not fail the others it was grouped with.
                logger.warning(
                    "group commit of %d requests failed; committing each alone", len(jobs)
                )
                return [outcome for job in jobs for outcome in self._commit([job])]
            logger.exception("ledger commit of %d events failed", len(events))
            with self._lock:
                self._stats.commit_failures += 1
            self._failure = (str(exc), jobs[0].events)
            return [(jobs[0], exc)]
        self._publish(result)
        return list(zip(jobs, _split(jobs, result), strict=True))

    def _annotated(self, events: list[UsageEvent]) -> list[UsageEvent]:
        annotate = self._annotate
        if annotate is None:
            return events
        try:
            return annotate(events)
        except Exception:
            # Usage matters more than its annotations: stored without them.
            logger.exception(
                "annotating %d usage events failed; storing them as they are", len(events)
            )
            return events

    def _probe(self) -> None:
        """Retry the events of the failed commit, to notice when the ledger recovers."""
        failure = self._failure
        if failure is None:
            return
        try:
            result = self._ledger.append(failure[1])
        except Exception as exc:
            self._failure = (str(exc), failure[1])
            return
        logger.info("the ledger commits again")
        self._publish(result)

    def _publish(self, result: AppendResult) -> None:
        self._failure = None
        if result.committed:
            for commit_subscriber in self._commit_subscribers:
                try:
                    commit_subscriber(result.committed, result.minutes)
                except Exception:
                    logger.exception(
                        "usage subscriber %r failed; ingest continues", commit_subscriber
                    )
            for subscriber in self._subscribers:
                try:
                    subscriber(result.committed)
                except Exception:
                    logger.exception("usage subscriber %r failed; ingest continues", subscriber)
        with self._lock:
            self._stats.commits += 1
            self._stats.events_committed += len(result.committed)
            self._stats.duplicates += result.duplicates


_STAT_FIELDS = tuple(PipelineStats.__dataclass_fields__)


def _split(jobs: list[_Job], result: AppendResult) -> list[AppendResult]:
    """Each job's part of a shared commit: the first report of an event owns it."""
    unclaimed = {event.event_id: event for event in result.committed}
    shares = []
    for job in jobs:
        mine = [unclaimed.pop(e.event_id) for e in job.events if e.event_id in unclaimed]
        shares.append(AppendResult(committed=mine, duplicates=len(job.events) - len(mine)))
    return shares


def _resolve(job: _Job, outcome: AppendResult | BaseException) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        logger.warning("caller's event loop closed before its commit was acknowledged")


def _summarize(errors: list[str]) -> str:
    if len(errors) <= _MAX_REPORTED_ERRORS:
        return "; ".join(errors)
    shown = "; ".join(errors[:_MAX_REPORTED_ERRORS])
    return f"{shown}; and {len(errors) - _MAX_REPORTED_ERRORS} more"
