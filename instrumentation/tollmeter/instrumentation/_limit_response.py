"""The HTTP answer the middlewares give when the application raised a limit error.

A denied call becomes what a metered API endpoint answers: ``429 Too Many Requests`` with
``Retry-After`` and a small JSON body. A guard that could not reach the collector and fails
closed is not the client's fault: ``503 Service Unavailable``, same body shape.

The body is built from fixed words and the error's structured fields (the limit's name,
the budget's kind), never from its message or the request: it reaches whoever called the
service, so it carries nothing but what that caller may know about its own quota.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

from tollmeter.instrumentation.errors import BudgetExceeded, GuardUnavailable, QuotaExceeded

__all__ = ["DEFAULT_RETRY_AFTER", "LIMIT_ERRORS", "LimitResponse", "limit_response"]

DEFAULT_RETRY_AFTER: Final = 60.0
"""Seconds sent in ``Retry-After`` when the error does not say when to retry."""

LIMIT_ERRORS: Final = (QuotaExceeded, BudgetExceeded)


@dataclass(frozen=True)
class LimitResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _seconds(value: float) -> str:
    # Retry-After takes whole seconds; rounding up never invites a retry that is too early.
    return str(max(0, math.ceil(value)))


def limit_response(
    error: QuotaExceeded | BudgetExceeded, *, tenant: str | None, default_retry_after: float
) -> LimitResponse:
    """The response for ``error``, raised while serving ``tenant``'s request."""
    retry_after = default_retry_after
    if isinstance(error, GuardUnavailable):
        status, reason, code, limit = 503, "Service Unavailable", "guard_unavailable", None
    elif isinstance(error, QuotaExceeded):
        status, reason, code, limit = 429, "Too Many Requests", "quota_exceeded", error.limit
        if error.retry_after is not None and math.isfinite(error.retry_after):
            retry_after = error.retry_after
    else:
        status, reason, code = 429, "Too Many Requests", "budget_exceeded"
        limit = f"budget:{error.kind}"
    seconds = _seconds(retry_after)
    payload = {
        "error": "quota exceeded" if status == 429 else "usage limits unavailable",
        "code": code,
        "limit": limit,
        "tenant": tenant,
        "retry_after": int(seconds),
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = (
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("retry-after", seconds),
    )
    return LimitResponse(status, reason, headers, body)
