"""The management API's one JSON error body.

Every refusal and failure of the management API, whichever route or layer produces
it (a route's own checks, the key guard, the router's 404 and 405, an unhandled
exception), answers with::

    {"error": "<what went wrong, for people>", "code": "<for programs>"}

plus ``"problems": [{"key": ..., "reason": ...}, ...]`` when a submitted
configuration was rejected for several reasons at once. ``error`` stays a plain
string so that clients reading ``response.json()["error"]`` keep working; ``code`` is
one of the values in :data:`CODES` or a route's more specific one (``invalid_limits``).
The OTLP/HTTP receiver is not covered: it answers in the OTLP ``Status`` format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["CODES", "EXCEPTION_HANDLERS", "error_response"]

CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal_error",
    503: "unavailable",
}
"""The ``code`` each status gets when a route names none more specific."""

_INTERNAL_MESSAGE = "internal error; the collector's log has the details"


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    problems: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error body for ``status``; ``problems`` are ``(key path, reason)`` pairs."""
    body: dict[str, object] = {"error": message, "code": code or CODES.get(status, "error")}
    if problems:
        body["problems"] = [{"key": key, "reason": reason} for key, reason in problems]
    return JSONResponse(body, status_code=status, headers=headers)


async def _unhandled(request: Request, exc: Exception) -> Response:
    # The traceback may name files, keys or SQL, so the caller gets a generic message.
    # Starlette raises the exception again once this answer is sent, and the ASGI
    # server logs it with its traceback.
    return error_response(500, _INTERNAL_MESSAGE)


async def _http_exception(request: Request, exc: Exception) -> Response:
    # The router's own refusals (unknown path, wrong method) arrive here.
    if not isinstance(exc, HTTPException):
        return await _unhandled(request, exc)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


EXCEPTION_HANDLERS = {HTTPException: _http_exception, Exception: _unhandled}
"""For ``Starlette(exception_handlers=...)``."""
