"""One forwarding exporter: a bounded queue drained by its own worker thread.

``offer`` is what ingest calls: O(1), never blocks on the network, and when the
queue is full applies the drop policy and counts. The worker takes runs of
requests of the same signal as one batch, sends it, and retries retryable
failures with exponential backoff and jitter, honouring the server's
Retry-After/RetryInfo, until ``max_elapsed``. ``shutdown`` flushes what it can
within its timeout; whatever is left is dropped and counted.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Literal, get_args

from tollmeter.collector.forward._config import ExporterConfig, Signal
from tollmeter.collector.forward._transport import Transport

__all__ = ["DROP_REASONS", "DropReason", "ExporterStats", "ForwardExporter"]

logger = logging.getLogger(__name__)

_JOIN_MARGIN_S = 1.0

DropReason = Literal["queue_full", "rejected", "retries_exhausted", "shutdown"]
"""Why requests were not forwarded; ``rejected`` is a final (non-retryable) error."""
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)


@dataclass(slots=True)
class ExporterStats:
    """Counts since start, in OTLP requests as received (a batch holds several)."""

    signals: tuple[Signal, ...] = ()
    sent: dict[Signal, int] = field(default_factory=dict)
    dropped: dict[tuple[Signal, DropReason], int] = field(default_factory=dict)
    retries: int = 0
    batches: int = 0
    queue_depth: int = 0
    queue_bytes: int = 0

    def copy(self) -> ExporterStats:
        return ExporterStats(
            signals=self.signals,
            sent=dict(self.sent),
            dropped=dict(self.dropped),
            retries=self.retries,
            batches=self.batches,
            queue_depth=self.queue_depth,
            queue_bytes=self.queue_bytes,
        )


class ForwardExporter:
    """Forwards queued OTLP requests to one downstream receiver."""

    def __init__(self, config: ExporterConfig, transport: Transport) -> None:
        self.config = config
        self._transport = transport
        self._queue: collections.deque[tuple[Signal, bytes]] = collections.deque()
        self._bytes = 0
        self._stats = ExporterStats(signals=config.signals)
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._closed = False
        self._warned_full = False
        self._failing = False
        self._thread = threading.Thread(
            target=self._run, name=f"tollmeter-forward-{config.name}", daemon=True
        )

    @property
    def name(self) -> str:
        return self.config.name

    def start(self) -> None:
        self._thread.start()

    def offer(self, signal: Signal, body: bytes) -> None:
        """Queue one request; never blocks. Counts a drop when the queue is full."""
        with self._cond:
            if self._closed:
                self._count_drop(signal, "shutdown")
                return
            size = len(body)
            config = self.config
            while self._queue and (
                len(self._queue) >= config.queue_size or self._bytes + size > config.queue_bytes
            ):
                if config.drop_policy == "drop_newest":
                    self._count_drop(signal, "queue_full")
                    self._warn_full()
                    return
                old_signal, old_body = self._queue.popleft()
                self._bytes -= len(old_body)
                self._count_drop(old_signal, "queue_full")
                self._warn_full()
            self._queue.append((signal, body))
            self._bytes += size
            self._cond.notify()

    def stats(self) -> ExporterStats:
        with self._cond:
            snapshot = self._stats.copy()
            snapshot.queue_depth = len(self._queue)
            snapshot.queue_bytes = self._bytes
        return snapshot

    def close(self, deadline: float) -> None:
        """Stop taking requests; keep sending until ``deadline`` (``time.monotonic()``)."""
        with self._cond:
            if self._deadline is None:
                self._deadline = deadline
            self._closed = True
            self._cond.notify_all()

    def shutdown(self, timeout_s: float) -> None:
        """Send what is queued within ``timeout_s``, then drop and count the rest.
        Idempotent; later offers are dropped."""
        self.close(time.monotonic() + timeout_s)
        with self._cond:
            deadline = self._deadline if self._deadline is not None else time.monotonic()
        if self._thread.is_alive():
            # Sends are cut short at the deadline; the margin covers a send just ending.
            self._thread.join(max(0.0, deadline - time.monotonic()) + _JOIN_MARGIN_S)
        with self._cond:
            self._drop_queued()
        self._transport.close()

    # -- worker ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            signal, bodies = batch
            try:
                self._deliver(signal, bodies)
            except Exception:
                # A bug here must not end the worker: the queue would fill up for good.
                logger.exception("forward exporter %s: sending a batch failed", self.name)
                self._drop(signal, "rejected", len(bodies))

    def _next_batch(self) -> tuple[Signal, list[bytes]] | None:
        batch_config = self.config.batch
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            # Let a batch fill up for ``delay`` unless it is already full or we are closing.
            fill_until = time.monotonic() + batch_config.delay_s
            while (
                not self._closed
                and len(self._queue) < batch_config.max_requests
                and self._bytes < batch_config.max_bytes
            ):
                remaining = fill_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._past_deadline():
                self._drop_queued()
                return None
            signal = self._queue[0][0]
            bodies: list[bytes] = []
            size = 0
            while (
                self._queue
                and self._queue[0][0] == signal
                and len(bodies) < batch_config.max_requests
                and (not bodies or size + len(self._queue[0][1]) <= batch_config.max_bytes)
            ):
                _, body = self._queue.popleft()
                self._bytes -= len(body)
                size += len(body)
                bodies.append(body)
            return signal, bodies

    def _deliver(self, signal: Signal, bodies: list[bytes]) -> None:
        retry = self.config.retry
        payload = b"".join(bodies)
        started = time.monotonic()
        attempt = 0
        while True:
            result = self._transport.send(signal, payload, timeout_s=self._send_timeout())
            if result.ok:
                with self._cond:
                    self._stats.sent[signal] = self._stats.sent.get(signal, 0) + len(bodies)
                    self._stats.batches += 1
                if self._failing:
                    self._failing = False
                    logger.info("forward exporter %s: downstream accepts requests again", self.name)
                return
            if not result.retryable:
                self._report_failure(f"downstream refused {signal}: {result.error}")
                self._drop(signal, "rejected", len(bodies))
                return
            delay = result.retry_after_s
            if delay is None:
                backoff = min(retry.max_backoff_s, retry.initial_backoff_s * 2**attempt)
                delay = backoff * random.uniform(0.5, 1.0)
            attempt += 1
            now = time.monotonic()
            if now + delay - started > retry.max_elapsed_s:
                self._report_failure(
                    f"gave up on {signal} after {attempt} attempt(s): {result.error}"
                )
                self._drop(signal, "retries_exhausted", len(bodies))
                return
            if not self._sleep(delay):
                self._drop(signal, "shutdown", len(bodies))
                return
            with self._cond:
                self._stats.retries += 1

    def _send_timeout(self) -> float:
        with self._cond:
            deadline = self._deadline
        if deadline is None:
            return self.config.timeout_s
        return max(0.001, min(self.config.timeout_s, deadline - time.monotonic()))

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; ``False`` when the shutdown deadline comes first."""
        wake_at = time.monotonic() + delay
        with self._cond:
            while True:
                if self._deadline is not None and wake_at > self._deadline:
                    return False
                remaining = wake_at - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    # -- counting (callers hold the lock, except _drop) -------------------------

    def _drop(self, signal: Signal, reason: DropReason, count: int) -> None:
        with self._cond:
            key = (signal, reason)
            self._stats.dropped[key] = self._stats.dropped.get(key, 0) + count

    def _count_drop(self, signal: Signal, reason: DropReason) -> None:
        key = (signal, reason)
        self._stats.dropped[key] = self._stats.dropped.get(key, 0) + 1

    def _drop_queued(self) -> None:
        if self._queue:
            logger.warning(
                "forward exporter %s: dropping %d queued request(s) at shutdown",
                self.name,
                len(self._queue),
            )
        while self._queue:
            signal, _ = self._queue.popleft()
            self._count_drop(signal, "shutdown")
        self._bytes = 0

    def _report_failure(self, reason: str) -> None:
        """Warn once per outage (logged again after a success), not once per batch."""
        if not self._failing:
            self._failing = True
            logger.warning(
                "forward exporter %s: %s; dropping until it recovers (drops are counted)",
                self.name,
                reason,
            )

    def _warn_full(self) -> None:
        if not self._warned_full:
            self._warned_full = True
            logger.warning(
                "forward exporter %s: queue full (%d requests / %d bytes), applying %s; "
                "further drops are only counted",
                self.name,
                self.config.queue_size,
                self.config.queue_bytes,
                self.config.drop_policy,
            )
