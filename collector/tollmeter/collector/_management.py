"""The management HTTP API (Starlette): health, readiness, OpenAPI, and the
``/api/v1/*`` routes that features add.

Admin keys, when configured, protect everything under ``/api/``; health,
readiness and the OpenAPI document stay open for probes and tooling. A route whose
endpoint is marked with :func:`ingest_keys_allowed` also accepts ingest keys, so
that applications can call it without holding an admin key; the endpoint reads who
is calling (and the tenant an ingest key is bound to) with :func:`principal_of`. The
OpenAPI document is generated from the mounted routes at request time, so a
route added by a feature is listed without further work: its summary is the
first line of its endpoint's docstring, and YAML after a ``---`` line in the
docstring is merged into the operation.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tollmeter.collector._auth import ANONYMOUS, Access, KeyRing, Principal, key_from_headers
from tollmeter.collector._http_errors import EXCEPTION_HANDLERS, error_response
from tollmeter.collector.errors import Forbidden, Unauthenticated
from tollmeter.semconv.version import __version__

__all__ = ["ManagementApi", "Readiness", "ingest_keys_allowed", "principal_of"]

_logger = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, str | None]]
"""Returns named checks, each ``None`` when it passes or the reason it fails;
the collector is ready when all pass."""


_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])
_ACCESS_ATTRIBUTE = "_tollmeter_access"
_PRINCIPAL = "tollmeter.principal"


def ingest_keys_allowed(endpoint: _Endpoint) -> _Endpoint:
    """Let ingest keys (not only admin keys) call the route served by ``endpoint``."""
    setattr(endpoint, _ACCESS_ATTRIBUTE, "ingest")
    return endpoint


def _access(route: BaseRoute) -> Access:
    endpoint = getattr(route, "endpoint", None)
    return "ingest" if getattr(endpoint, _ACCESS_ATTRIBUTE, None) == "ingest" else "admin"


def principal_of(request: Request) -> Principal:
    """Who ``request`` acts as; anonymous when no key was needed."""
    principal = request.scope.get("state", {}).get(_PRINCIPAL)
    return principal if isinstance(principal, Principal) else ANONYMOUS


class _KeyGuard:
    """Authenticates ``/api/`` requests (``Authorization: Bearer`` or ``x-tollmeter-key``)
    against the access their route allows, and hands the principal to the endpoint."""

    def __init__(
        self, app: ASGIApp, keys: KeyRing, routes: Callable[[], Sequence[BaseRoute]]
    ) -> None:
        self._app = app
        self._keys = keys
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Without any key configured every request is anonymous: skip the route lookup.
        keyed = self._keys.admin_required or self._keys.ingest_required
        if keyed and scope["type"] == "http" and scope["path"].startswith("/api/"):
            request = Request(scope)
            try:
                principal = self._keys.authorize(
                    key_from_headers(request.headers.get), self._route_access(scope)
                )
            except (Unauthenticated, Forbidden) as exc:
                await _refusal(exc)(scope, receive, send)
                return
            # A copy: the server's per-request state must not see another request's principal.
            scope = {**scope, "state": {**scope.get("state", {}), _PRINCIPAL: principal}}
        await self._app(scope, receive, send)

    def _route_access(self, scope: Scope) -> Access:
        # Unknown paths and wrong methods need admin access, so a 404 or 405 tells an
        # unauthenticated caller nothing about which routes exist.
        for route in self._routes():
            if route.matches(scope)[0] is Match.FULL:
                return _access(route)
        return "admin"


def _refusal(exc: Unauthenticated | Forbidden) -> Response:
    if isinstance(exc, Forbidden):
        return error_response(403, str(exc))
    return error_response(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="tollmeter"'})


def _operation(route: Route, method: str) -> dict[str, Any]:
    doc = inspect.getdoc(route.endpoint) or ""
    text, _, spec = doc.partition("\n---\n")
    lines = text.strip().splitlines()
    operation: dict[str, Any] = {
        "summary": lines[0] if lines else route.path,
        "operationId": f"{method.lower()}_{route.name}",
        "responses": {"200": {"description": "OK"}},
    }
    description = "\n".join(lines[1:]).strip()
    if description:
        operation["description"] = description
    if route.path.startswith("/api/"):
        operation["security"] = [{"adminKey": []}]
        if _access(route) == "ingest":
            operation["security"].append({"ingestKey": []})
    try:
        extra = yaml.safe_load(spec) if spec.strip() else None
    except yaml.YAMLError:
        # A route's docstring must never break the whole document.
        _logger.warning("ignoring malformed OpenAPI YAML in the docstring of %s", route.path)
        extra = None
    if isinstance(extra, dict):
        operation.update(extra)
    return operation


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """An OpenAPI 3.1 document listing every ``Route`` in ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                paths.setdefault(route.path, {})[method.lower()] = _operation(route, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": "tollmeter collector management API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer"},
                "ingestKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An ingest key; one bound to a tenant acts for it only.",
                },
            },
        },
    }


class ManagementApi:
    """Builds the management ASGI app; features add routes with :meth:`add_routes`."""

    def __init__(self, *, keys: KeyRing, readiness: Readiness) -> None:
        self._readiness = readiness
        self._starlette = Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"], name="healthz"),
                Route("/readyz", self._readyz, methods=["GET"], name="readyz"),
                Route("/openapi.json", self._openapi, methods=["GET"], name="openapi"),
            ],
            exception_handlers=EXCEPTION_HANDLERS,
        )
        self.app: ASGIApp = _KeyGuard(self._starlette, keys, lambda: self._starlette.router.routes)

    @property
    def routes(self) -> list[BaseRoute]:
        return list(self._starlette.router.routes)

    def add_routes(self, routes: Sequence[BaseRoute]) -> None:
        """Mount more routes; those under ``/api/`` are protected by the admin keys
        (and the ingest keys, for endpoints marked with :func:`ingest_keys_allowed`)."""
        self._starlette.router.routes.extend(routes)

    async def _healthz(self, request: Request) -> Response:
        """Liveness: the process is up and serving."""
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        """Readiness: the ledger is open and commits, the receivers are bound and the
        pipeline accepts.
        ---
        responses:
          "200": {description: ready}
          "503": {description: not ready; the body lists the failing checks and why}
        """
        results = self._readiness()
        failing = {name: reason for name, reason in results.items() if reason is not None}
        body: dict[str, object] = {
            "status": "not ready" if failing else "ready",
            "checks": {name: reason is None for name, reason in results.items()},
        }
        if failing:
            body["reasons"] = failing
        return JSONResponse(body, status_code=503 if failing else 200)

    async def _openapi(self, request: Request) -> Response:
        """This OpenAPI document."""
        return JSONResponse(openapi_document(self._starlette.router.routes))
