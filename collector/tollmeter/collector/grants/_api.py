"""Grant routes on the management port.

Admin keys create, list and void grants. Balance and history are open to ingest keys
bound to a tenant too, for their own tenant only.

``POST /api/v1/grants`` takes ``tenant``, ``amount`` (a number or decimal string), ``unit``
(``tokens`` or a currency code), ``time_zone`` (IANA, default ``UTC``), ``effective_from``
and ``expires_at`` (ISO 8601, local to ``time_zone`` unless written with an offset;
``effective_from`` defaults to now, no ``expires_at`` never expires), ``priority``
(integer, higher burns first among grants expiring together), ``rollover`` (``none``,
``all`` or a cap) and an optional ``grant_id`` (a new one is made when absent).
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
        tenant = request.query_params.get("tenant")
        try:
            grants = await run_in_threadpool(service.ledger.list_grants, tenant)
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
        tenant = _tenant(request)
        if isinstance(tenant, Response):
            return tenant
        try:
            units = await run_in_threadpool(service.ledger.grant_balances, tenant)
            grants = await run_in_threadpool(service.ledger.list_grants, tenant)
        except StorageError as exc:
            return error_response(503, f"cannot read grants: {exc}")
        return JSONResponse(
            {
                "tenant": tenant,
                "overage_policy": service.config.policy(tenant),
                "units": {
                    unit: {"balance": str(v["balance"]), "overage": str(v["overage"])}
                    for unit, v in sorted(units.items())
                },
                "grants": [_grant_json(g, b) for g, b in grants],
            }
        )

    @ingest_keys_allowed
    async def history(request: Request) -> Response:
        """A tenant's movements, oldest first, paged by ``after`` (a movement sequence).
        ---
        responses:
          "200": {description: "movements and the ``next`` page's ``after``"}
          "403": {description: the key is bound to another tenant}
        """
        tenant = _tenant(request)
        if isinstance(tenant, Response):
            return tenant
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
            rows = await run_in_threadpool(service.ledger.grant_movements, tenant, after, limit)
        except StorageError as exc:
            return error_response(503, f"cannot read grant movements: {exc}")
        return JSONResponse(
            {
                "tenant": tenant,
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


def _tenant(request: Request) -> str | Response:
    principal = principal_of(request)
    asked = request.query_params.get("tenant")
    if principal.role == "ingest":
        if principal.tenant is None:
            return error_response(403, "balances need an admin key or a key bound to a tenant")
        if asked is not None and asked != principal.tenant:
            return error_response(
                403, f"this key is bound to tenant {principal.tenant!r} and sees only its grants"
            )
        return principal.tenant
    if not asked:
        return error_response(400, "tenant is required")
    return asked


def _grant(data: Any, service: GrantsService) -> Grant:
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    zone = data.get("time_zone", "UTC")
    tenant = data.get("tenant")
    if not isinstance(zone, str) or not isinstance(tenant, str):
        raise ValueError("tenant and time_zone must be strings")
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
    ).check()


def _grant_json(grant: Grant, balance: Decimal) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "tenant": grant.tenant_id,
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
