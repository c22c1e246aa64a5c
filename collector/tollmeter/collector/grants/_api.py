"""Grant routes on the management port.

Admin keys create, list and void grants, and read any tenant's or organisation's balance
and history (``tenant=`` or ``org=``). An ingest key bound to a tenant reads its own
tenant's only (with what its organisation's grants have left).

``POST /api/v1/grants`` takes ``tenant`` or ``org``, ``amount`` (a number or decimal
string), ``unit`` (``tokens`` or a currency code), ``time_zone`` (IANA, default ``UTC``),
``effective_from`` and ``expires_at`` (ISO 8601, local to ``time_zone`` unless written with
an offset; ``effective_from`` defaults to now, no ``expires_at`` never expires),
``priority`` (integer, higher burns first among grants expiring together), ``rollover``
(``none``, ``all`` or a cap) and an optional ``grant_id`` (a new one is made when absent).
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollmeter.collector._http_errors import error_response
from tollmeter.collector._management import ingest_keys_allowed, principal_of
from tollmeter.collector.grants._model import Grant, GrantError, Movement, local_instant_ns
from tollmeter.collector.grants._service import GrantsService
from tollmeter.collector.limits._model import iso_time
from tollmeter.collector.storage import StorageError

__all__ = ["grant_routes"]

_MAX_BODY = 16_384
_FIELDS = frozenset(
    {
        "grant_id",
        "tenant",
        "org",
        "amount",
        "unit",
        "time_zone",
        "effective_from",
        "expires_at",
        "priority",
        "rollover",
    }
)
_HISTORY_LIMIT = 1000


def grant_routes(service: GrantsService) -> list[Route]:
    async def create(request: Request) -> Response:
        """Grant tokens or money to a tenant.
        ---
        responses:
          "201": {description: the grant}
          "400": {description: a field that cannot be used}
          "409": {description: a grant with this id exists}
        """
        body = await request.body()
        if len(body) > _MAX_BODY:
            return error_response(413, f"body larger than {_MAX_BODY} bytes")
        try:
            grant = _grant(json.loads(body, parse_float=str), service)
        except (ValueError, GrantError) as exc:
            return error_response(400, str(exc))
        try:
            created = await run_in_threadpool(service.create, grant)
        except StorageError as exc:
            return error_response(503, f"cannot store the grant: {exc}")
        if not created:
            return error_response(409, f"grant {grant.grant_id!r} exists")
        return JSONResponse(_grant_json(grant, grant.amount), status_code=201)

    async def listing(request: Request) -> Response:
        """Grants with their balances (``tenant`` to keep one tenant's).
        ---
        responses:
          "200": {description: "grants, oldest first"}
        """
        params = request.query_params
        try:
            grants = await run_in_threadpool(
                lambda: service.ledger.list_grants(params.get("tenant"), org=params.get("org"))
            )
        except StorageError as exc:
            return error_response(503, f"cannot read grants: {exc}")
        return JSONResponse({"grants": [_grant_json(g, b) for g, b in grants]})

    async def void(request: Request) -> Response:
        """Void a grant: what is left of it is taken off.
        ---
        responses:
          "200": {description: the voided grant}
          "404": {description: no such grant}
        """
        try:
            grant = await run_in_threadpool(service.void, request.path_params["grant_id"])
        except StorageError as exc:
            return error_response(503, f"cannot void the grant: {exc}")
        if grant is None:
            return error_response(404, "no such grant")
        return JSONResponse(_grant_json(grant, Decimal(0)))

    @ingest_keys_allowed
    async def balance(request: Request) -> Response:
        """A tenant's balance and overage per unit, and its grants.
        ---
        responses:
          "200": {description: balances per unit}
          "403": {description: the key is bound to another tenant}
        """
        holder = _holder(request)
        if isinstance(holder, Response):
            return holder
        tenant, org = holder
        if tenant is not None:
            org = service.org_of_tenant.get(tenant)
        try:
            own = await run_in_threadpool(_balance, service, tenant, None)
            shared = None if org is None else await run_in_threadpool(_balance, service, None, org)
        except StorageError as exc:
            return error_response(503, f"cannot read grants: {exc}")
        if tenant is None:
            return JSONResponse({"org": org, **(shared or {})})
        body: dict[str, Any] = {"tenant": tenant, "overage_policy": service.config.policy(tenant)}
        return JSONResponse(
            {**body, **own, "org": None if org is None else {"org": org, **(shared or {})}}
        )

    @ingest_keys_allowed
    async def history(request: Request) -> Response:
        """A tenant's movements, oldest first, paged by ``after`` (a movement sequence).
        ---
        responses:
          "200": {description: "movements and the ``next`` page's ``after``"}
          "403": {description: the key is bound to another tenant}
        """
        holder = _holder(request)
        if isinstance(holder, Response):
            return holder
        tenant, org = holder
        try:
            after = int(request.query_params.get("after", "0"))
            limit = min(int(request.query_params.get("limit", "100")), _HISTORY_LIMIT)
            if after < 0 or limit < 1:
                raise ValueError
        except ValueError:
            return error_response(
                400, f"after and limit must be whole numbers, limit 1-{_HISTORY_LIMIT}"
            )
        try:
            rows = await run_in_threadpool(
                lambda: service.ledger.grant_movements(tenant, after, limit, org=org)
            )
        except StorageError as exc:
            return error_response(503, f"cannot read grant movements: {exc}")
        return JSONResponse(
            {
                "tenant": tenant,
                "org": org,
                "movements": [_movement_json(seq, m) for seq, m in rows],
                "next": rows[-1][0] if len(rows) == limit else None,
            }
        )

    return [
        Route("/api/v1/grants", create, methods=["POST"]),
        Route("/api/v1/grants", listing, methods=["GET"]),
        Route("/api/v1/grants/balance", balance, methods=["GET"]),
        Route("/api/v1/grants/history", history, methods=["GET"]),
        Route("/api/v1/grants/{grant_id}/void", void, methods=["POST"]),
    ]


def _holder(request: Request) -> tuple[str | None, str | None] | Response:
    """(tenant, organisation) whose grants the request may read: exactly one is set."""
    principal = principal_of(request)
    asked = request.query_params.get("tenant")
    org = request.query_params.get("org")
    if principal.role == "ingest":
        if principal.tenant is None:
            return error_response(403, "balances need an admin key or a key bound to a tenant")
        if org is not None or (asked is not None and asked != principal.tenant):
            return error_response(
                403, f"this key is bound to tenant {principal.tenant!r} and sees only its grants"
            )
        return principal.tenant, None
    if bool(asked) == bool(org):
        return error_response(400, "give one tenant or one org")
    return asked, org


def _balance(service: GrantsService, tenant: str | None, org: str | None) -> dict[str, Any]:
    units = service.ledger.grant_balances(tenant, org=org)
    grants = service.ledger.list_grants(tenant, org=org)
    return {
        "units": {
            unit: {"balance": str(v["balance"]), "overage": str(v["overage"])}
            for unit, v in sorted(units.items())
        },
        "grants": [_grant_json(g, b) for g, b in grants],
    }


def _grant(data: Any, service: GrantsService) -> Grant:
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    zone = data.get("time_zone", "UTC")
    tenant = data.get("tenant", "")
    org = data.get("org")
    if not isinstance(zone, str) or not isinstance(tenant, str):
        raise ValueError("tenant and time_zone must be strings")
    if org is not None and (not isinstance(org, str) or not org):
        raise ValueError("org must be a non-empty string")
    now_ns = int(service.clock() * 1e9)
    try:
        amount = Decimal(str(data.get("amount")))
    except InvalidOperation:
        raise ValueError("amount must be a number") from None
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError("priority must be an integer")
    effective = data.get("effective_from")
    expires = data.get("expires_at")
    return Grant(
        grant_id=str(data.get("grant_id") or uuid.uuid4().hex),
        tenant_id=tenant,
        amount=amount,
        unit=str(data.get("unit", "tokens")),
        effective_ns=now_ns if effective is None else local_instant_ns(str(effective), zone),
        expires_ns=None if expires is None else local_instant_ns(str(expires), zone),
        time_zone=zone,
        priority=priority,
        rollover=str(data.get("rollover", "none")),
        created_ns=time.time_ns(),
        org_id=org,
    ).check()


def _grant_json(grant: Grant, balance: Decimal) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "tenant": grant.tenant_id or None,
        "org": grant.org_id,
        "amount": str(grant.amount),
        "unit": grant.unit,
        "balance": str(balance),
        "effective_from": iso_time(grant.effective_ns / 1e9),
        "expires_at": None if grant.expires_ns is None else iso_time(grant.expires_ns / 1e9),
        "time_zone": grant.time_zone,
        "priority": grant.priority,
        "rollover": grant.rollover,
        "voided_at": None if grant.voided_ns is None else iso_time(grant.voided_ns / 1e9),
    }


def _movement_json(sequence: int, movement: Movement) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "grant_id": movement.grant_id or None,
        "kind": movement.kind,
        "amount": str(movement.amount),
        "unit": movement.unit,
        "source_id": movement.source_id,
        "time": iso_time(movement.time_ns / 1e9),
    }
