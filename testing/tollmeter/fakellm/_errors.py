"""Error bodies in each provider's format, so that the SDKs raise their own exception classes."""

from __future__ import annotations

import math
from typing import Any, Literal

from tollmeter.semconv.errors import TollmeterError

__all__ = ["FakeLLMError", "Provider", "error_body", "retry_headers"]

Provider = Literal["openai", "anthropic"]


class FakeLLMError(TollmeterError, RuntimeError):
    """The fake LLM server could not start or stop in time."""


_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
}


def error_body(
    provider: Provider, status: int, message: str, *, param: str | None = None, request_id: str
) -> dict[str, Any]:
    if provider == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        }
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def retry_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` in whole seconds as the standard wants, plus OpenAI's millisecond form."""
    return {
        "retry-after": str(math.ceil(seconds)),
        "retry-after-ms": str(round(seconds * 1000)),
    }
