"""Hooks: tell people and systems when a threshold is crossed or a request is denied.

Each hook owns a bounded queue and a worker thread, so a slow or dead webhook never
blocks a check, ingest, or the other hooks. When a queue is full the new notice is
dropped and counted; every outcome is counted in ``stats()``.

Webhook requests carry ``X-Tollmeter-Timestamp`` (Unix seconds) and
``X-Tollmeter-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>." + body``
under the hook's secret; ``verify_signature`` checks one on the receiving side.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import importlib
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tollmeter.collector.limits._config import HookConfig, HooksConfig
from tollmeter.collector.limits._model import Notice
from tollmeter.semconv.errors import TollmeterError

__all__ = ["HookDispatcher", "HookStats", "sign", "verify_signature"]

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is valid for the body and the timestamp is recent."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(slots=True)
class HookStats:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0


class _Undeliverable(TollmeterError):
    """A delivery failed; ``retry_after`` is the server's hint, when it gave one."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after


class _HookWorker:
    def __init__(self, config: HookConfig, stop: threading.Event) -> None:
        self.config = config
        self.stats = HookStats()
        self._failing = False
        self._stop = stop
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._target: Callable[[Mapping[str, Any]], object] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"tollmeter-hook-{config.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def put(self, payload: dict[str, Any]) -> None:
        with self._cond:
            if len(self._queue) >= self.config.queue_size:
                self.stats.dropped += 1
                return
            self._queue.append(payload)
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        self._thread.join(max(0.0, timeout))
        with self._cond:
            self.stats.dropped += len(self._queue)
            self._queue.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._stop.is_set():
                        return
                    self._cond.wait()
                payload = self._queue.popleft()
            self._deliver_with_retries(payload)

    def _deliver_with_retries(self, payload: dict[str, Any]) -> None:
        attempt = 0
        while True:
            try:
                self._deliver(payload)
            except _Undeliverable as exc:
                if not exc.retryable or attempt >= self.config.max_retries:
                    self.stats.failed += 1
                    if not self._failing:
                        # Once per outage: a dead endpoint must not flood the log.
                        logger.warning(
                            "hook %s failed: %s; further failures are only counted",
                            self.config.name,
                            exc,
                        )
                        self._failing = True
                    return
                delay = min(self.config.max_backoff_s, self.config.backoff_s * 2**attempt)
                # Jitter spreads retries of many collectors hitting one recovering receiver.
                delay = delay / 2 + random.uniform(0, delay / 2)
                if exc.retry_after is not None:
                    delay = min(self.config.max_backoff_s, max(delay, exc.retry_after))
                attempt += 1
                self.stats.retries += 1
                if self._stop.wait(delay):
                    self.stats.failed += 1
                    return
            else:
                self.stats.delivered += 1
                if self._failing:
                    logger.warning("hook %s delivers again", self.config.name)
                    self._failing = False
                return

    def _deliver(self, payload: dict[str, Any]) -> None:
        kind = self.config.type
        if kind == "log":
            logger.warning("limit event: %s", json.dumps(payload, sort_keys=True))
        elif kind == "python":
            target = self._target or self._load_target()
            try:
                target(payload)
            except Exception as exc:  # a user callable may raise anything
                raise _Undeliverable(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        else:
            self._post(payload)

    def _load_target(self) -> Callable[[Mapping[str, Any]], object]:
        module_name, _, attr = (self.config.target or "").partition(":")
        try:
            target: Callable[[Mapping[str, Any]], object] = getattr(
                importlib.import_module(module_name), attr
            )
        except (ImportError, AttributeError) as exc:
            raise _Undeliverable(
                f"cannot import {self.config.target!r}: {exc}", retryable=False
            ) from exc
        if not callable(target):
            raise _Undeliverable(f"{self.config.target!r} is not callable", retryable=False)
        self._target = target
        return target

    def _post(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tollmeter-hook",
            "X-Tollmeter-Timestamp": timestamp,
            "X-Tollmeter-Delivery": payload["delivery_id"],
        }
        if self.config.secret is not None:
            headers["X-Tollmeter-Signature"] = sign(self.config.secret, timestamp, body)
        request = urllib.request.Request(
            self.config.url or "", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            hint = exc.headers.get("Retry-After") if exc.headers else None
            raise _Undeliverable(
                f"HTTP {exc.code}",
                retryable=exc.code in _RETRYABLE_STATUS,
                retry_after=_seconds(hint),
            ) from exc
        except (OSError, ValueError) as exc:
            raise _Undeliverable(f"{type(exc).__name__}: {exc}", retryable=True) from exc


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class HookDispatcher:
    """Fans notices out to the configured hooks without ever blocking the caller."""

    def __init__(self, config: HooksConfig) -> None:
        self._stop = threading.Event()
        self._workers = [_HookWorker(h, self._stop) for h in config.hooks]
        self._started = False
        self._closed = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for w in self._workers:
            w.start()

    def emit(self, notice: Notice) -> None:
        if self._closed:
            return
        payload: dict[str, Any] | None = None
        for w in self._workers:
            if notice.kind in w.config.events:
                if payload is None:
                    payload = notice.to_json()
                w.put({**payload, "hook": w.config.name, "delivery_id": uuid.uuid4().hex})

    def stats(self) -> dict[str, HookStats]:
        return {w.config.name: w.stats for w in self._workers}

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` (no more retries), then stop.

        Notices still queued at the deadline are dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        deadline = time.monotonic() + timeout
        for w in self._workers:
            w.wake()
        for w in self._workers:
            w.join(deadline - time.monotonic())
