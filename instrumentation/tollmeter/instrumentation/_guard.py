"""The pre-flight guard: ask the collector before each model call, and stop denied calls.

Opt-in with ``tollmeter.configure(guard_url=...)``, the ``TOLLMETER_GUARD_URL``
environment variable (read when an instrumentor is enabled, as OpenTelemetry reads its own
variables at start-up), or ``Guard(url=...).install()``. Before each instrumented call
the instrumentation estimates the input tokens (tiktoken) plus the requested maximum
output and posts them to the collector's ``POST /api/v1/check``, which reserves them
atomically against every matching limit. A denied call raises ``QuotaExceeded``
before any request reaches the provider; an allowed one carries the reservation id
on its span (``tollmeter.reservation.id``) so the collector replaces the reservation
with the actual usage when the span arrives.

A streamed call is held to what was reserved for it: the output tokens the check reserved
plus what the matching blocking ``output``/``total`` limits had left after it. When the
stream's output reaches that, it is closed and ``QuotaExceeded`` raised at its next chunk
(``overrun="stop"``, the default), or a warning is logged once (``overrun="warn"``); see
``_stop``.

When the collector cannot be reached the guard lets calls through (``fail_open``,
the default) or raises ``GuardUnavailable`` (``fail_closed``); each outage is logged
once, and so is the recovery.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._attribution import current_attribution
from tollmeter.instrumentation._budget import (
    Overrun,
    budget,
    budget_ticket,
    budgets_active,
    release_budget_ticket,
    reserve_budgets,
)
from tollmeter.instrumentation._safety import report_failure
from tollmeter.instrumentation._stop import Cap, arm, disarm
from tollmeter.instrumentation.errors import BudgetExceeded, GuardUnavailable, QuotaExceeded
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.errors import ConfigurationError

__all__ = [
    "TOLLMETER_GUARD_FAIL_MODE",
    "TOLLMETER_GUARD_KEY",
    "TOLLMETER_GUARD_OVERRUN",
    "TOLLMETER_GUARD_TIMEOUT",
    "TOLLMETER_GUARD_URL",
    "Guard",
    "GuardDecision",
    "before_call",
    "environment_guard_url",
    "release_failed_call",
]

_log = logging.getLogger(__name__)

TOLLMETER_GUARD_URL = "TOLLMETER_GUARD_URL"
"""Collector management address (``http://127.0.0.1:4319``); unset = no guard."""
TOLLMETER_GUARD_TIMEOUT = "TOLLMETER_GUARD_TIMEOUT"
"""Seconds to wait for a check (default 0.5)."""
TOLLMETER_GUARD_FAIL_MODE = "TOLLMETER_GUARD_FAIL_MODE"
"""``open`` (default: let calls through when the collector is unreachable) or ``closed``."""
TOLLMETER_GUARD_KEY = "TOLLMETER_GUARD_KEY"
"""Bearer key for the collector's management API, when it requires one."""
TOLLMETER_GUARD_OVERRUN = "TOLLMETER_GUARD_OVERRUN"
"""``stop`` (default: close a stream whose output passes what the check allowed, and raise
``QuotaExceeded`` at its next chunk) or ``warn`` (log once and read on)."""

FailMode = Literal["open", "closed"]
_MAX_RESPONSE_BYTES = 1024 * 1024
_OUTPUT_LIMIT_KEYS = ("max_output_tokens", "max_completion_tokens", "max_tokens")
_MAX_IDLE_CONNECTIONS = 8
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    http.client.CannotSendRequest,
)


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """The collector's answer for one call (``reachable=False``: let through, fail open)."""

    allowed: bool
    reservation_id: str | None = None
    model: str | None = None
    reachable: bool = True
    output_room: int | None = None
    """The output tokens the call may produce: those reserved plus what the blocking
    output/total limits had left (``None``: no such limit)."""


class Guard:
    """A client of the collector's check API.

    ``apply_downgrade=True`` lets a ``downgrade`` limit switch the call to the cheaper
    model it suggests; otherwise the suggestion is ignored. ``overrun`` is what a stream
    whose output passes what the check allowed does: ``"stop"`` (closed, ``QuotaExceeded``
    at its next chunk) or ``"warn"`` (logged once, read on).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.5,
        fail_mode: FailMode = "open",
        api_key: str | None = None,
        apply_downgrade: bool = False,
        default_tenant: str = "unknown",
        overrun: Overrun = "stop",
    ) -> None:
        if overrun not in ("stop", "warn"):
            raise ConfigurationError(f"guard overrun must be 'stop' or 'warn', got {overrun!r}")
        self.overrun: Overrun = overrun
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"guard url must be http(s)://host:port, got {url!r}")
        if fail_mode not in ("open", "closed"):
            raise ConfigurationError(
                f"guard fail_mode must be 'open' or 'closed', got {fail_mode!r}"
            )
        if timeout <= 0:
            raise ConfigurationError(f"guard timeout must be positive, got {timeout!r}")
        self.url = url.rstrip("/") + "/api/v1/check"
        self.reconcile_url = url.rstrip("/") + "/api/v1/reconcile"
        self.timeout = timeout
        self.fail_mode = fail_mode
        self.apply_downgrade = apply_downgrade
        self.default_tenant = default_tenant
        self._headers = {"Content-Type": "application/json", "User-Agent": "tollmeter-guard"}
        self._has_key = bool(api_key)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._pool_lock = threading.Lock()
        self._idle: list[tuple[str, http.client.HTTPConnection]] = []
        self._outage_lock = threading.Lock()
        self._in_outage = False

    def install(self) -> Guard:
        """Make this the guard of every instrumented call in the process."""
        global _INSTALLED
        _INSTALLED = self
        return self

    def uninstall(self) -> None:
        """Stop guarding calls with this guard (settings-based guards apply again)."""
        global _INSTALLED
        if _INSTALLED is self:
            _INSTALLED = None
        self.close()

    def check(
        self,
        *,
        model: str | None,
        input_tokens: int,
        max_output_tokens: int,
        attribution: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> GuardDecision:
        """Reserve the call's estimate; raises ``QuotaExceeded`` when it is denied."""
        values = current_attribution() if attribution is None else attribution
        body: dict[str, Any] = {
            "estimated_input_tokens": max(0, int(input_tokens)),
            "max_output_tokens": max(0, int(max_output_tokens)),
            # One id per call, not the app's request id: a request makes several calls.
            "request_id": request_id or uuid.uuid4().hex,
        }
        tenant = values.get(attrs.TOLLMETER_TENANT_ID)
        if tenant:
            body["tenant"] = tenant
        elif not self._has_key:
            body["tenant"] = self.default_tenant
        # With a key and no attribution the tenant is left out: the collector charges the
        # tenant a bound ingest key belongs to, and asks an unbound key to name one.
        for key, attribute in (
            ("project", attrs.TOLLMETER_PROJECT_ID),
            ("api_key_id", attrs.TOLLMETER_API_KEY_ID),
            ("feature", attrs.TOLLMETER_FEATURE),
        ):
            if values.get(attribute):
                body[key] = values[attribute]
        if model:
            body["model"] = model
        answer = self._post(body)
        if answer is None:
            if self.fail_mode == "closed":
                raise GuardUnavailable("the tollmeter collector cannot be reached (fail_closed)")
            return GuardDecision(allowed=True, reachable=False)
        if not answer.get("allowed"):
            raise _denial(answer)
        downgrade = answer.get("downgrade_model")
        return GuardDecision(
            allowed=True,
            reservation_id=answer.get("reservation_id"),
            model=downgrade if self.apply_downgrade and isinstance(downgrade, str) else None,
            output_room=_output_room(answer, max(0, int(max_output_tokens))),
        )

    def release(self, reservation_id: str) -> bool:
        """Give a reservation back: its call failed before the provider reported any usage.

        Returns whether the collector released it. An unreachable collector, or one that no
        longer holds the reservation (already reconciled or expired), leaves nothing to do:
        the reservation expires on its own, so this never reports an outage.
        """
        body = json.dumps({"reservation_id": reservation_id, "cancelled": True}).encode()
        connection = self._take(self.reconcile_url)
        try:
            with suppress_instrumentation():
                connection.request(
                    "POST",
                    urllib.parse.urlsplit(self.reconcile_url).path,
                    body=body,
                    headers=self._headers,
                )
                response = connection.getresponse()
                response.read(_MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            _log.debug("tollmeter guard could not release %s: %s", reservation_id, exc)
            return False
        finally:
            # Not kept alive: a release runs on its own thread, maybe after ``close``.
            connection.close()
        return response.status == 200

    def close(self) -> None:
        """Close the idle connections to the collector (calls made later open new ones)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()

    def _post(self, body: dict[str, Any]) -> dict[str, Any] | None:
        payload = json.dumps(body).encode()
        # A kept-alive connection may have been closed by the server meanwhile: one retry on
        # a fresh connection is safe, the request id makes the check idempotent.
        for attempt in range(2):
            url = self.url
            connection = self._take(url)
            try:
                # The guard's own HTTP call must not become a traced or metered call.
                with suppress_instrumentation():
                    connection.request(
                        "POST", urllib.parse.urlsplit(url).path, body=payload, headers=self._headers
                    )
                    response = connection.getresponse()
                    raw = response.read(_MAX_RESPONSE_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if attempt == 0 and isinstance(exc, _STALE_CONNECTION):
                    continue
                self._outage(exc)
                return None
            if response.isclosed():
                self._give_back(url, connection)
            else:
                connection.close()  # an oversized answer left unread bytes behind
            try:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                answer = json.loads(raw)
                if not isinstance(answer, dict):
                    raise ValueError("check answer is not a JSON object")
            except ValueError as exc:
                self._outage(exc)
                return None
            self._recovered()
            return answer
        return None

    def _take(self, url: str) -> http.client.HTTPConnection:
        """An idle kept-alive connection to ``url``, or a new one."""
        with self._pool_lock:
            while self._idle:
                idle_url, connection = self._idle.pop()
                if idle_url == url:
                    return connection
                connection.close()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.netloc, timeout=self.timeout)
        return http.client.HTTPConnection(parts.netloc, timeout=self.timeout)

    def _give_back(self, url: str, connection: http.client.HTTPConnection) -> None:
        with self._pool_lock:
            if len(self._idle) < _MAX_IDLE_CONNECTIONS:
                self._idle.append((url, connection))
                return
        connection.close()

    def _outage(self, exc: Exception) -> None:
        with self._outage_lock:
            first, self._in_outage = not self._in_outage, True
        if first:
            detail = str(exc) or type(exc).__name__
            _log.warning(
                "tollmeter guard cannot reach %s (%s); failing %s until it answers",
                self.url,
                detail,
                self.fail_mode,
            )

    def _recovered(self) -> None:
        with self._outage_lock:
            was, self._in_outage = self._in_outage, False
        if was:
            _log.warning("tollmeter guard reaches %s again", self.url)


_OUTPUT_MEASURES = frozenset({"output", "total"})
_HARD_ACTIONS = frozenset({"block", "throttle"})


def _output_room(answer: Mapping[str, Any], reserved: int) -> int | None:
    """What a check's blocking output/total limits let the call's output reach."""
    room: int | None = None
    for status in answer.get("limits") or ():
        if not isinstance(status, dict) or status.get("action") not in _HARD_ACTIONS:
            continue
        remaining = status.get("remaining")
        if status.get("measure") in _OUTPUT_MEASURES and isinstance(remaining, (int, float)):
            left = reserved + int(remaining)
            room = left if room is None else min(room, left)
    return room


def _quota_cap(guard: Guard, room: int) -> Cap:
    def error(consumed: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"quota exceeded: the stream reached {consumed} output tokens, "
            f"{room} were allowed when it was checked",
            remaining=0.0,
        )

    return Cap(room, guard.overrun, "quota", error)


def _budget_caps() -> list[Cap]:
    ticket = budget_ticket()
    if ticket is None:
        return []
    caps: list[Cap] = []
    for b in ticket.budgets:
        found = b._output_room(ticket)
        if found is None:
            continue

        def refresh(consumed: int, b: budget = b) -> int:
            again = b._output_room(ticket, consumed)
            return 1 << 62 if again is None else again[0]

        def error(
            consumed: int, b: budget = b, found: tuple[int, str, int, int] = found
        ) -> BudgetExceeded:
            again = b._output_room(ticket, consumed)
            _, kind, others, limit = found if again is None else again
            return BudgetExceeded(
                f"{b.name}: the stream reached {consumed} output tokens with {others} used "
                f"by other calls and this call's input ({kind} limit {limit})",
                kind=kind,
                used=others + consumed,
                limit=limit,
            )

        caps.append(Cap(found[0], b.overrun, "budget", error, refresh))
    return caps


def _denial(answer: Mapping[str, Any]) -> QuotaExceeded:
    limit = answer.get("denied_by")
    remaining = None
    for status in answer.get("limits") or ():
        if isinstance(status, dict) and status.get("name") == limit:
            remaining = status.get("remaining")
    retry = answer.get("retry_after_s")
    message = f"quota exceeded: limit {limit!r}"
    if isinstance(retry, (int, float)):
        message += f", retry after {retry:g}s"
    return QuotaExceeded(
        message,
        retry_after=float(retry) if isinstance(retry, (int, float)) else None,
        limit=limit if isinstance(limit, str) else None,
        remaining=float(remaining) if isinstance(remaining, (int, float)) else None,
    )


_INSTALLED: Guard | None = None
_BY_URL: dict[str, Guard | None] = {}
_BY_URL_LOCK = threading.Lock()


def release_failed_call(span: object, environment_url: str | None) -> None:
    """Give back the guard's reservation of a call that failed before any usage arrived.

    Without it the reservation, and a concurrency slot with it, would be held until it
    expires. The release runs on a thread of its own: the app's exception is not delayed.
    ``environment_url`` is the instrumentor's ``environment_guard_url()``.
    """
    attributes = getattr(span, "attributes", None)
    if not isinstance(attributes, Mapping):
        return
    reservation_id = attributes.get(attrs.TOLLMETER_RESERVATION_ID)
    guard = active_guard(environment_url)
    if guard is None or not isinstance(reservation_id, str):
        return
    threading.Thread(
        target=guard.release, args=(reservation_id,), name="tollmeter-guard-release", daemon=True
    ).start()


def environment_guard_url() -> str | None:
    """``TOLLMETER_GUARD_URL`` as it is now; an instrumentor reads it once, when enabled.

    Not per call: an unset variable is the common case, and ``os.environ`` answers it by
    raising and catching ``KeyError``, which cost more than the rest of the guard hook on a
    call that no guard checks.
    """
    return os.environ.get(TOLLMETER_GUARD_URL) or None


def active_guard(environment_url: str | None) -> Guard | None:
    """The installed guard, else the one for ``configure(guard_url=...)``, else the one for
    ``environment_url`` (the instrumentor's ``environment_guard_url()``)."""
    if _INSTALLED is not None:
        return _INSTALLED
    url = _configured_url() or environment_url
    if not url:
        return None
    try:
        return _BY_URL[url]
    except KeyError:
        with _BY_URL_LOCK:
            if url not in _BY_URL:
                _BY_URL[url] = _guard_from_settings(url)
            return _BY_URL[url]


def _configured_url() -> str | None:
    # Read per call: configure() may run after `opentelemetry-instrument` has enabled the
    # instrumentors. Read from its handle only when configure() has run: importing the module
    # here would pull in the OTLP exporters for apps that never call it.
    configure_module = sys.modules.get("tollmeter.instrumentation._configure")
    if configure_module is not None:
        url = getattr(getattr(configure_module, "_HANDLE", None), "guard_url", None)
        if isinstance(url, str) and url:
            return url
    return None


def _guard_from_settings(url: str) -> Guard | None:
    fail_mode = os.environ.get(TOLLMETER_GUARD_FAIL_MODE, "open")
    if fail_mode not in ("open", "closed"):
        _log.warning(
            "%s=%r is not open or closed; using open", TOLLMETER_GUARD_FAIL_MODE, fail_mode
        )
        fail_mode = "open"
    overrun = os.environ.get(TOLLMETER_GUARD_OVERRUN, "stop")
    if overrun not in ("stop", "warn"):
        _log.warning("%s=%r is not stop or warn; using stop", TOLLMETER_GUARD_OVERRUN, overrun)
        overrun = "stop"
    timeout = 0.5
    raw_timeout = os.environ.get(TOLLMETER_GUARD_TIMEOUT)
    if raw_timeout:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            _log.warning("%s=%r is not a number; using 0.5", TOLLMETER_GUARD_TIMEOUT, raw_timeout)
    try:
        return Guard(
            url,
            timeout=timeout if timeout > 0 else 0.5,
            fail_mode="closed" if fail_mode == "closed" else "open",
            api_key=os.environ.get(TOLLMETER_GUARD_KEY),
            overrun="warn" if overrun == "warn" else "stop",
        )
    except ConfigurationError as exc:
        _log.warning("tollmeter guard disabled: %s", exc)
        return None


def _max_output(kwargs: Mapping[str, Any]) -> int:
    for key in _OUTPUT_LIMIT_KEYS:
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def before_call(
    model: str | None,
    estimate_input: Callable[[], int],
    kwargs: MutableMapping[str, Any],
    attributes: MutableMapping[str, AttributeValue],
    environment_url: str | None,
) -> MutableMapping[str, Any]:
    """Run the budgets and the guard before a model call; the SDK wrappers' one hook.

    ``environment_url`` is the instrumentor's ``environment_guard_url()``.

    Raises ``BudgetExceeded`` or ``QuotaExceeded`` (before any provider request).
    Returns the keyword arguments to call the SDK with: ``kwargs`` itself, or a copy
    with the downgraded model. Adds the reservation id to the span ``attributes``.
    Any other failure of its own is reported once and lets the call through.
    """
    disarm()
    guard = active_guard(environment_url)
    if guard is None and not budgets_active():
        return kwargs
    max_output = _max_output(kwargs)
    try:
        estimate = estimate_input()
    except Exception as exc:  # an estimate must never break the app's call
        report_failure("guard.estimate", exc)
        estimate = 0
    budgeted = reserve_budgets(estimate + max_output, model or "", output=max_output)
    caps: list[Cap] = []
    if budgeted:
        try:
            caps = _budget_caps()
        except Exception as exc:
            report_failure("guard.budget_caps", exc)
    if guard is None:
        arm(caps, model)
        return kwargs
    try:
        decision = guard.check(model=model, input_tokens=estimate, max_output_tokens=max_output)
    except QuotaExceeded:
        if budgeted:
            release_budget_ticket()
        raise
    except Exception as exc:
        report_failure("guard.check", exc)
        arm(caps, model)
        return kwargs
    if decision.output_room is not None:
        caps.append(_quota_cap(guard, decision.output_room))
    arm(caps, model)
    if decision.reservation_id is not None:
        attributes[attrs.TOLLMETER_RESERVATION_ID] = decision.reservation_id
    if decision.model is not None and decision.model != model:
        _log.info("tollmeter guard: %s downgraded to %s", model, decision.model)
        kwargs = dict(kwargs)
        kwargs["model"] = decision.model
    return kwargs
