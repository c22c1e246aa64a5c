"""The console's routes: one small endpoint per page, behind the console's sessions.

Every answer carries a Content Security Policy that allows scripts from this origin
only (no inline script, no ``eval``), forbids framing and sends forms nowhere else.
Pages are read-only; the only POSTs log in and out, and refuse other origins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tollmeter.collector._tenants_api import MAX_TENANTS_PAGE, read_tenants
from tollmeter.collector.console._data import (
    PERIODS,
    PeriodName,
    period,
    read_recent_calls,
    read_series,
    read_usage,
)
from tollmeter.collector.console._health import health_body, read_health
from tollmeter.collector.console._html import layout
from tollmeter.collector.console._render import (
    login_body,
    overview_body,
    tenant_body,
    tenants_body,
)
from tollmeter.collector.console._session import Sessions
from tollmeter.collector.console._static import STATIC_FILES, static_file
from tollmeter.collector.export import ExportService
from tollmeter.collector.limits import LimitsService
from tollmeter.collector.observability import CollectorMetrics
from tollmeter.collector.storage import Ledger

__all__ = ["Console", "ConsoleHost"]

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_MAX_FORM_BYTES = 8 * 1024
_MAX_TENANT_ID = 4096
_RECENT_CALLS = 25
_TENANTS_PER_PAGE = 50
_SORTS = ("tenant", "total_tokens", "cost", "requests")

Handler = Callable[[Request], Awaitable[Response]]


class ConsoleHost(Protocol):
    """The parts of ``Collector`` the console reads."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def limits(self) -> LimitsService | None: ...

    @property
    def export(self) -> ExportService | None: ...

    @property
    def metrics(self) -> CollectorMetrics: ...


def _secured(response: Response, *, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "private, max-age=3600" if cache else "no-store"
    return response


def _html(body: str, status: int = 200) -> Response:
    return _secured(HTMLResponse(body, status_code=status))


def _redirect(path: str) -> Response:
    return _secured(RedirectResponse(path, status_code=303))


def _secure_cookie(request: Request) -> bool:
    return request.url.scheme == "https"


def _local_path(candidate: str | None) -> str:
    """``candidate`` when it is a path on this server, else ``/`` (no open redirects)."""
    if not candidate or not candidate.startswith("/") or candidate.startswith("//"):
        return "/"
    if "\\" in candidate or any(ord(char) < 32 for char in candidate):
        return "/"
    return candidate


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Browsers send Origin on cross-site POSTs; a missing one is a same-site form.
        return origin is None
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _period(request: Request) -> PeriodName:
    chosen = request.query_params.get("period", "day")
    for name in PERIODS:
        if name == chosen:
            return name
    return "day"


class Console:
    """The console's pages over a running collector."""

    def __init__(
        self,
        host: ConsoleHost,
        sessions: Sessions,
        readiness: Callable[[], dict[str, str | None]],
    ) -> None:
        self._host = host
        self._sessions = sessions
        self._readiness = readiness

    def routes(self) -> list[Route]:
        pages: list[tuple[str, Handler]] = [
            ("/", self.overview),
            ("/console/tenants", self.tenants),
            ("/console/tenant", self.tenant),
            ("/console/health", self.health),
        ]
        return [
            *(
                Route(path, self._signed_in(handler), methods=["GET"], include_in_schema=False)
                for path, handler in pages
            ),
            Route("/console/login", self.login_form, methods=["GET"], include_in_schema=False),
            Route("/console/login", self.login, methods=["POST"], include_in_schema=False),
            Route("/console/logout", self.logout, methods=["POST"], include_in_schema=False),
            Route("/console/static/{name}", self.static, methods=["GET"], include_in_schema=False),
        ]

    def _signed_in(self, handler: Handler) -> Handler:
        async def page(request: Request) -> Response:
            if not self._sessions.access(request).allowed:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                return _redirect("/console/login?" + urlencode({"next": target}))
            return await handler(request)

        return page

    def _page(self, request: Request, title: str, body: str, *, active: str | None) -> Response:
        is_open = self._sessions.access(request).open
        return _html(layout(title, body, active=active, open_access=is_open))

    # -- pages -------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        span = period(_period(request))
        ledger = self._host.ledger
        usage = await run_in_threadpool(read_usage, ledger, span)
        series = await run_in_threadpool(read_series, ledger, span)
        return self._page(request, "Overview", overview_body(span, usage, series), active="/")

    async def tenants(self, request: Request) -> Response:
        params = request.query_params
        sort = params.get("sort", "tenant")
        sort = sort if sort in _SORTS else "tenant"
        contains = params.get("contains", "")[:256]
        offset_text = params.get("offset", "0")
        offset = int(offset_text) if offset_text.isdigit() and len(offset_text) < 10 else 0
        limit = min(_TENANTS_PER_PAGE, MAX_TENANTS_PAGE)
        page = await run_in_threadpool(
            lambda: read_tenants(
                self._host.ledger,
                self._host.limits,
                sort=sort,  # type: ignore[arg-type]  # one of _SORTS
                contains=contains or None,
                offset=offset,
                limit=limit,
            )
        )
        body = tenants_body(page, sort=sort, contains=contains, limit=limit)
        return self._page(request, "Tenants", body, active="/console/tenants")

    async def tenant(self, request: Request) -> Response:
        tenant = request.query_params.get("id", "")
        if not tenant or len(tenant) > _MAX_TENANT_ID:
            return _redirect("/console/tenants")
        span = period(_period(request))
        ledger, limits = self._host.ledger, self._host.limits

        def read() -> tuple[Any, ...]:
            return (
                read_usage(ledger, span, tenant=tenant, dimensions=("model",)),
                read_series(ledger, span, tenant=tenant),
                None if limits is None else limits.status(tenant),
                read_recent_calls(ledger, tenant, _RECENT_CALLS),
                None if limits is None else limits.engine.counts(),
                [] if limits is None else limits.decisions.of(tenant),
            )

        usage, series, status, calls, checks, denials = await run_in_threadpool(read)
        body = tenant_body(tenant, span, usage, series, status, calls, checks, denials)
        return self._page(request, f"Tenant {tenant}", body, active=None)

    async def health(self, request: Request) -> Response:
        host = self._host
        health = await run_in_threadpool(
            read_health,
            host.ledger,
            host.metrics.health,
            self._readiness(),
            host.export,
            period("hour"),
        )
        return self._page(request, "Health", health_body(health), active="/console/health")

    # -- signing in and out --------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        access = self._sessions.access(request)
        next_path = _local_path(request.query_params.get("next"))
        if access.allowed:
            return _redirect(next_path)
        body = login_body(error=None, next_path=next_path, unusable=access.unusable)
        return _html(layout("Log in", body, signed_in=False))

    async def login(self, request: Request) -> Response:
        if not _same_origin(request):
            return _html(layout("Log in", "<p>Cross-site request refused.</p>"), 403)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM_BYTES:
                return _html(layout("Log in", "<p>Request too large.</p>", signed_in=False), 413)
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        key = (form.get("key") or [""])[0]
        next_path = _local_path((form.get("next") or ["/"])[0])
        response = _redirect(next_path)
        if key and self._sessions.login(key, response, secure=_secure_cookie(request)):
            return response
        access = self._sessions.access(request)
        page = login_body(error="Wrong key.", next_path=next_path, unusable=access.unusable)
        return _html(layout("Log in", page, signed_in=False), 401)

    async def logout(self, request: Request) -> Response:
        if not _same_origin(request):
            return _html(layout("Log out", "<p>Cross-site request refused.</p>"), 403)
        response = _redirect("/console/login")
        self._sessions.logout(request, response, secure=_secure_cookie(request))
        return response

    async def static(self, request: Request) -> Response:
        file_name = request.path_params["name"]
        content = static_file(file_name)
        if content is None:
            return _secured(Response("not found", status_code=404, media_type="text/plain"))
        response = Response(content, headers={"Content-Type": STATIC_FILES[file_name]})
        return _secured(response, cache=True)
