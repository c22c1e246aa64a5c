"""Exceptions raised by the instrumentation's enforcement features.

Hierarchy::

    TollmeterError
    ├── QuotaExceeded           the collector denied the call (pre-flight guard)
    │   └── GuardUnavailable    the collector could not be asked and the guard fails closed
    └── BudgetExceeded          an in-process ``tollmeter.budget`` would be passed

Both are raised before any request reaches the provider, or, for a stream whose output
reaches a hard limit while it is read, at the caller's next chunk once the stream is closed.
"""

from __future__ import annotations

from tollmeter.semconv.errors import TollmeterError

__all__ = ["BudgetExceeded", "GuardUnavailable", "QuotaExceeded"]


class QuotaExceeded(TollmeterError):
    """A limit of the collector denied the call.

    ``retry_after`` is the number of seconds after which the same call may pass
    (``None`` when it never will in this window); ``limit`` names the limit that
    denied it and ``remaining`` is what that limit still had.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        limit: str | None = None,
        remaining: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining


class GuardUnavailable(QuotaExceeded):
    """The collector's check API could not be reached and the guard is ``fail_closed``."""


class BudgetExceeded(TollmeterError):
    """A ``tollmeter.budget`` would be (or was) passed.

    ``kind`` is ``"tokens"``, ``"calls"`` or ``"failures"`` (the circuit breaker);
    ``used`` and ``limit`` are counted in that unit.
    """

    def __init__(self, message: str, *, kind: str, used: float, limit: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.used = used
        self.limit = limit
