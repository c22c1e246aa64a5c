"""Error bodies in each provider's format, so that the SDKs raise their own exception classes."""

from __future__ import annotations

import math
from typing import Any, Literal

from tollmeter.semconv.errors import TollmeterError

__all__ = ["FakeLLMError", "Provider", "error_body", "error_headers", "retry_headers"]

Provider = Literal["openai", "anthropic", "bedrock", "gemini"]


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
_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
}

# Bedrock names the error in a header; botocore raises the client exception of that name.
_BEDROCK_TYPES = {
    400: "ValidationException",
    404: "ResourceNotFoundException",
    413: "ValidationException",
    429: "ThrottlingException",
    500: "InternalServerException",
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
    if provider == "bedrock":
        return {"message": message}
    if provider == "gemini":
        status_name = _GEMINI_STATUSES.get(status, "INTERNAL")
        return {"error": {"code": status, "message": message, "status": status_name}}
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_headers(provider: Provider, status: int) -> dict[str, str]:
    """Headers that name the error, for the providers that use them."""
    if provider == "bedrock":
        return {"x-amzn-errortype": _BEDROCK_TYPES.get(status, "InternalServerException")}
    return {}


def retry_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` in whole seconds as the standard wants, plus OpenAI's millisecond form."""
    return {
        "retry-after": str(math.ceil(seconds)),
        "retry-after-ms": str(round(seconds * 1000)),
    }
