"""Attribution middleware for web applications: one line per app.

``TollmeterMiddleware`` (ASGI: FastAPI, Starlette, Quart...) and
``TollmeterWSGIMiddleware`` (WSGI: Flask, Django, Bottle...) run each request
inside ``attribute(...)``, so every model call the request makes carries its
tenant, project and user, and the values travel on as W3C baggage.

Where the values come from, later sources overriding earlier ones per key:

1. with ``baggage=True``, the W3C ``baggage`` header sent by an upstream service
   (its ``tollmeter.*`` and ``user.id`` entries, as ``attribute()`` sets them);
   off by default, as any client can send one;
2. request headers: ``tenant_header`` (default ``x-tenant-id``),
   ``project_header`` and ``user_header`` (off by default);
3. the authenticated user as ``user`` (ASGI ``scope["user"]`` as set by
   Starlette's ``AuthenticationMiddleware``, which must run before this one;
   WSGI ``REMOTE_USER``), unless ``authenticated_user=False``;
4. ``resolve(scope_or_environ)``: a callable returning a mapping of
   ``attribute()`` keyword names (``tenant``, ``project``, ``feature``,
   ``workflow``, ``user``, ``api_key_id``, ``environment``, ``request_id``) to
   values, or ``None``.

Headers are whatever the client sends: trust them only behind a gateway that
sets or strips them, and prefer ``resolve`` for values derived from a verified
credential.

A bad value (over ``MAX_VALUE_LENGTH`` characters, empty, not UTF-8, with
control characters, or a header sent twice to an ASGI app) is ignored and logged once per
source, without its content; a failing ``resolve`` is logged once and the
request goes on. The middleware never turns a request into an error.

The attribution lasts as long as the application works on the request: for
ASGI the whole call, including a streamed body; for WSGI also while the server
consumes the returned iterable, and its ``close()``.

With ``quota_response=True`` a ``QuotaExceeded`` or ``BudgetExceeded`` the application
lets escape becomes ``429 Too Many Requests`` with ``Retry-After`` (the error's own
``retry_after``, else ``default_retry_after`` seconds) and a JSON body naming the error
``code``, the ``limit`` and the ``tenant``; a fail-closed ``GuardUnavailable`` becomes
``503``. Only before the response has started: once its status line went out, the error
goes on to the server, which ends the response without completing its body. Frameworks
that turn every exception into a 500 themselves (Flask, Django) must hand limit errors
on: Flask with ``app.register_error_handler(QuotaExceeded, middleware.limit_response)``
(and the same for ``BudgetExceeded``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Final, cast

from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

from tollmeter.instrumentation._attribution import (
    _KEYS,
    _problem,
    attribute,
    current_attribution,
)
from tollmeter.instrumentation._limit_response import (
    DEFAULT_RETRY_AFTER,
    LIMIT_ERRORS,
    LimitResponse,
    limit_response,
)
from tollmeter.instrumentation._safety import report_failure
from tollmeter.instrumentation.errors import BudgetExceeded, QuotaExceeded
from tollmeter.semconv import attributes as attrs

__all__ = ["Resolve", "TollmeterMiddleware", "TollmeterWSGIMiddleware"]

_logger = logging.getLogger("tollmeter.instrumentation")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

Resolve = Callable[[Mapping[str, Any]], Mapping[str, str] | None]
"""``resolve(scope_or_environ)``: attribution keyword -> value, or ``None``."""

_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_ASGI_SCOPES: Final = frozenset({"http", "websocket"})
_BAGGAGE_HEADER: Final = "baggage"
# baggage key (attribute name) -> attribute() keyword
_BAGGAGE_KEYWORDS: Final = {name: keyword for keyword, name in _KEYS.items()}
_BAGGAGE_PROPAGATOR: Final = W3CBaggagePropagator()


def _header_name(argument: str, name: str | None) -> str | None:
    if name is None:
        return None
    lowered = name.lower()
    if not lowered or not set(lowered) <= _TOKEN_CHARS:
        raise ValueError(f"{argument}={name!r} is not an HTTP header name")
    return lowered


class _Resolver:
    """Turns one request's headers, user and ``resolve`` result into an ``attribute``."""

    def __init__(
        self,
        *,
        tenant_header: str | None,
        project_header: str | None,
        user_header: str | None,
        resolve: Resolve | None,
        authenticated_user: bool,
        baggage: bool,
    ) -> None:
        headers = {
            "tenant": _header_name("tenant_header", tenant_header),
            "project": _header_name("project_header", project_header),
            "user": _header_name("user_header", user_header),
        }
        # attribute() keyword -> lower-case header name
        self.headers: Mapping[str, str] = {
            key: header for key, header in headers.items() if header is not None
        }
        if resolve is not None and not callable(resolve):
            raise ValueError(f"resolve must be callable, not {type(resolve).__name__}")
        self._resolve = resolve
        self.authenticated_user = authenticated_user
        self.baggage = baggage
        # Every header this middleware reads, lower case.
        self.wanted = frozenset(self.headers.values()) | (
            {_BAGGAGE_HEADER} if baggage else frozenset()
        )
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    def _ignore(self, source: str, reason: str) -> None:
        """Log once per source that a value was ignored; the value itself is never logged."""
        with self._warned_lock:
            if source in self._warned:
                return
            self._warned.add(source)
        _logger.warning(
            "tollmeter middleware ignored the attribution from %s: %s "
            "(further bad values from this source are not logged)",
            source,
            reason,
        )

    def _accept(self, values: dict[str, str], key: str, value: object, source: str) -> None:
        problem = _problem(value)
        if problem is not None:
            self._ignore(source, problem)
            return
        values[key] = cast(str, value)  # _problem() accepts only str

    def attribution(
        self,
        header_values: Mapping[str, list[bytes]],
        user: str | None,
        request: Mapping[str, Any],
    ) -> attribute | None:
        """The attribution of one request; ``header_values`` maps wanted header names to the
        raw values received (possibly several)."""
        values: dict[str, str] = {}
        if self.baggage and header_values.get(_BAGGAGE_HEADER):
            self._apply_baggage(values, header_values[_BAGGAGE_HEADER])
        for key, header in self.headers.items():
            received = header_values.get(header)
            if not received:
                continue
            source = f"header {header!r}"
            if len(received) > 1:
                self._ignore(source, f"sent {len(received)} times")
                continue
            try:
                text = received[0].decode("utf-8").strip(" \t")
            except UnicodeDecodeError:
                self._ignore(source, "not UTF-8")
                continue
            self._accept(values, key, text, source)
        if user is not None and self.authenticated_user:
            self._accept(values, "user", user, "the authenticated user")
        if self._resolve is not None:
            self._apply_resolved(self._resolve, values, request)
        return attribute(**values) if values else None

    def _apply_baggage(self, values: dict[str, str], received: list[bytes]) -> None:
        # Several baggage headers form one list (W3C Baggage); the propagator parses it
        # with its own size limits and percent-decoding.
        carrier = {_BAGGAGE_HEADER: ",".join(value.decode("latin-1") for value in received)}
        entries = otel_baggage.get_all(_BAGGAGE_PROPAGATOR.extract(carrier, Context()))
        for name, value in entries.items():
            keyword = _BAGGAGE_KEYWORDS.get(name)
            if keyword is not None:
                self._accept(values, keyword, value, f"baggage entry {name!r}")

    def _apply_resolved(
        self, resolve: Resolve, values: dict[str, str], request: Mapping[str, Any]
    ) -> None:
        try:
            resolved = resolve(request)
        except Exception as exc:
            report_failure("middleware.resolve", exc)
            return
        if resolved is None:
            return
        if not isinstance(resolved, Mapping):
            self._ignore("resolve()", f"returned {type(resolved).__name__}, not a mapping")
            return
        for key, value in resolved.items():
            if key not in _KEYS:
                self._ignore("resolve()", f"unknown key {key!r}")
            elif value is not None:
                self._accept(values, key, value, f"resolve()[{key!r}]")


class TollmeterMiddleware:
    """ASGI middleware: attribute each HTTP and WebSocket request's model calls.

    ``app.add_middleware(TollmeterMiddleware)`` in FastAPI or Starlette, or
    ``TollmeterMiddleware(app, tenant_header=...)`` around any ASGI app.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tenant_header: str | None = "x-tenant-id",
        project_header: str | None = None,
        user_header: str | None = None,
        resolve: Resolve | None = None,
        authenticated_user: bool = True,
        baggage: bool = False,
        quota_response: bool = False,
        default_retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        self.app = app
        self._resolver = _Resolver(
            tenant_header=tenant_header,
            project_header=project_header,
            user_header=user_header,
            resolve=resolve,
            authenticated_user=authenticated_user,
            baggage=baggage,
        )
        self._wanted = {header.encode("latin-1") for header in self._resolver.wanted}
        self._quota_response = quota_response
        self._default_retry_after = _retry_after_seconds(default_retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        block = self._attribution(scope) if scope.get("type") in _ASGI_SCOPES else None
        if not (self._quota_response and scope.get("type") == "http"):
            if block is None:
                await self.app(scope, receive, send)
                return
            with block:
                await self.app(scope, receive, send)
            return
        with block if block is not None else contextlib.nullcontext():
            await self._answer_limits(scope, receive, send)

    async def _answer_limits(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except LIMIT_ERRORS as error:
            if started:
                raise  # the status is sent: only the server can end the response now
            answer = _answer(error, self._default_retry_after)
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [(k.encode(), v.encode()) for k, v in answer.headers],
                }
            )
            await send({"type": "http.response.body", "body": answer.body})

    def _attribution(self, scope: Scope) -> attribute | None:
        try:
            received: dict[str, list[bytes]] = {}
            for name, value in scope.get("headers") or ():
                lowered = bytes(name).lower()
                if lowered in self._wanted:
                    received.setdefault(lowered.decode("latin-1"), []).append(bytes(value))
            return self._resolver.attribution(received, _asgi_user(scope), scope)
        except Exception as exc:
            report_failure("middleware.asgi", exc)
            return None


def _retry_after_seconds(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"default_retry_after must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"default_retry_after={value!r} is not a number of seconds")
    return float(value)


def _status_line(answer: LimitResponse) -> str:
    return f"{answer.status} {answer.reason}"


def _answer(error: QuotaExceeded | BudgetExceeded, default_retry_after: float) -> LimitResponse:
    """The limit response for ``error``, for the tenant of the request being served."""
    tenant = current_attribution().get(attrs.TOLLMETER_TENANT_ID)
    return limit_response(error, tenant=tenant, default_retry_after=default_retry_after)


def _asgi_user(scope: Scope) -> str | None:
    """The authenticated user's identity, when an authentication middleware set one."""
    user = scope.get("user")
    if user is None or isinstance(user, str):
        return user
    if not getattr(user, "is_authenticated", False):
        return None
    for name in ("identity", "display_name"):
        try:
            value = getattr(user, name)
        except NotImplementedError:  # starlette's BaseUser leaves both abstract
            continue
        if isinstance(value, str) and value:
            return value
    return None


class TollmeterWSGIMiddleware:
    """WSGI middleware: attribute each request's model calls.

    ``app.wsgi_app = TollmeterWSGIMiddleware(app.wsgi_app)`` in Flask, or around
    any WSGI application.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        tenant_header: str | None = "x-tenant-id",
        project_header: str | None = None,
        user_header: str | None = None,
        resolve: Resolve | None = None,
        authenticated_user: bool = True,
        baggage: bool = False,
        quota_response: bool = False,
        default_retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        self.app = app
        self._resolver = _Resolver(
            tenant_header=tenant_header,
            project_header=project_header,
            user_header=user_header,
            resolve=resolve,
            authenticated_user=authenticated_user,
            baggage=baggage,
        )
        self._quota_response = quota_response
        self._default_retry_after = _retry_after_seconds(default_retry_after)
        # environ key (``HTTP_X_TENANT_ID``) -> header name
        self._environ_keys = {
            "HTTP_" + header.upper().replace("-", "_"): header for header in self._resolver.wanted
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        block = self._attribution(environ)
        app = self.limit_answering_app if self._quota_response else self.app
        if block is None:
            return app(environ, start_response)
        with block:
            body = app(environ, start_response)
        if isinstance(body, (list, tuple)):
            return body  # already produced: nothing runs while the server reads it
        return _AttributedBody(body, block)

    def limit_answering_app(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """The wrapped application, its limit errors answered as the middleware answers them.

        Only an error raised while the application is called is answered: one raised while
        the server reads a streamed body comes after the status line went out.
        """
        started = False

        def watched(*arguments: Any) -> Any:
            nonlocal started
            started = True
            return start_response(*arguments)

        try:
            return self.app(environ, watched)
        except LIMIT_ERRORS as error:
            answer = _answer(error, self._default_retry_after)
            # exc_info lets the server replace the status the application gave (PEP 3333);
            # without one given there is nothing to replace.
            exc_info = sys.exc_info() if started else None
            start_response(_status_line(answer), list(answer.headers), exc_info)
            return [answer.body]

    def limit_response(self, error: QuotaExceeded | BudgetExceeded) -> WSGIApp:
        """A WSGI application answering ``error`` (429, or 503 for ``GuardUnavailable``).

        Frameworks accept it as a response: in Flask, ``app.register_error_handler(
        QuotaExceeded, middleware.limit_response)`` answers errors Flask would turn into a 500.
        """
        answer = _answer(error, self._default_retry_after)

        def respond(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            start_response(_status_line(answer), list(answer.headers))
            return [answer.body]

        return respond

    def _attribution(self, environ: dict[str, Any]) -> attribute | None:
        try:
            received: dict[str, list[bytes]] = {}
            for key, header in self._environ_keys.items():
                value = environ.get(key)
                if isinstance(value, str):
                    # PEP 3333 native strings carry the raw bytes as latin-1.
                    received[header] = [value.encode("latin-1")]
            user = environ.get("REMOTE_USER")
            return self._resolver.attribution(
                received, user if isinstance(user, str) else None, environ
            )
        except Exception as exc:
            report_failure("middleware.wsgi", exc)
            return None


class _AttributedBody:
    """The application's response iterable, producing each chunk (and closing) inside the
    request's attribution: a streamed body is generated after the application returned.

    The block is entered around each step rather than across the whole iteration, so the
    server's own code between chunks runs outside it.
    """

    __slots__ = ("_block", "_body")

    def __init__(self, body: Iterable[bytes], block: attribute) -> None:
        self._body = body
        self._block = block

    def __iter__(self) -> Iterator[bytes]:
        with self._block:
            iterator = iter(self._body)
        while True:
            with self._block:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            with self._block:
                close()
