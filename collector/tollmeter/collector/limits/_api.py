"""HTTP routes of the limits service, mounted on the management API.

``POST /api/v1/check`` reserves, ``POST /api/v1/reconcile`` reports actual usage (or
cancels) for gateways that emit no spans, ``GET /api/v1/tenants/{id}/status`` says
what is blocked and until when, ``GET/PUT /api/v1/limits`` read and replace the rules
at run time (a PUT lasts until the next restart or SIGHUP, which reload the file).

Check and reconcile also accept ingest keys, so applications need no admin key; an
ingest key bound to a tenant checks that tenant when the request names none, and is
refused (403) for any other tenant's checks and reservations. ``internal: true`` on a
check (the operator's own call, counted only by rules with ``include_internal``) is
refused (403) from a key bound to a tenant, unless the configuration marks that key
internal: every check made with an internal ingest key is internal.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollmeter.collector._http_errors import error_response
from tollmeter.collector._management import ingest_keys_allowed, principal_of
from tollmeter.collector.errors import BadRequest, InvalidConfig, InvalidSetting
from tollmeter.collector.limits._answer import check_answer_bytes
from tollmeter.collector.limits._config import (
    CalendarWindowConfig,
    InFlightConfig,
    LimitConfig,
    LimitsConfig,
)
from tollmeter.collector.limits._model import CheckRequest
from tollmeter.collector.limits._plans import name_clashes
from tollmeter.collector.limits._service import LimitsService
from tollmeter.semconv.errors import ConfigurationError, InvalidUsage, TollmeterError

__all__ = ["limits_routes", "limits_to_mapping", "read_json_body"]

MAX_BODY_BYTES = 64 * 1024
_MAX_TEXT = 256
_MAX_TOKENS = 100_000_000
_MAX_DURATION_S = 86_400.0
_TEXT_FIELDS = ("project", "model", "api_key_id", "feature", "request_id")
_CHECK_FIELDS = frozenset(
    (
        "tenant",
        "estimated_input_tokens",
        "max_output_tokens",
        "dry_run",
        "internal",
        *_TEXT_FIELDS,
    )
)
_USAGE_INTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
)
_USAGE_TEXT = ("provider", "operation", "response_model", "response_id", "status")


def _invalid_limits(problems: list[tuple[str, str]]) -> JSONResponse:
    message = "; ".join(f"{key}: {reason}" for key, reason in problems)
    return error_response(400, message, code="invalid_limits", problems=problems)


def _other_tenant(bound: str) -> JSONResponse:
    return error_response(
        403, f"this ingest key is bound to tenant {bound!r} and cannot act for another"
    )


async def read_json_body(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object, read up to ``MAX_BODY_BYTES``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > MAX_BODY_BYTES:
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
        body = await request.body()
    else:
        # Chunked: count while reading, so that an endless body cannot fill memory.
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise BadRequest(f"{key}: expected a string of 1 to {_MAX_TEXT} characters")
    return value


def _required(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise BadRequest(f"{key}: required")
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise BadRequest(f"{key}: expected a string of 1 to {_MAX_TEXT} characters")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        raise BadRequest(f"{key}: expected an integer from 0 to {_MAX_TOKENS}")
    return value


def check_request_from_json(data: dict[str, Any]) -> CheckRequest:
    unknown = data.keys() - _CHECK_FIELDS
    if unknown:
        raise BadRequest(f"{sorted(unknown)[0]}: unknown field")
    internal = data.get("internal", False)
    if not isinstance(internal, bool):
        raise BadRequest("internal: expected a boolean")
    tenant = _required(data, "tenant")
    estimated_input_tokens = _count(data, "estimated_input_tokens")
    max_output_tokens = _count(data, "max_output_tokens")
    # Positional, and no keyword dict in between: this runs for every check.
    project, model, api_key_id, feature, request_id = [_text(data, k) for k in _TEXT_FIELDS]
    return CheckRequest(
        tenant,
        project,
        model,
        api_key_id,
        feature,
        estimated_input_tokens,
        max_output_tokens,
        request_id,
        internal=internal,
    )


def limits_to_mapping(config: LimitsConfig) -> dict[str, Any]:
    """The ``limits:`` section as plain data, accepted back by ``LimitsConfig.from_mapping``."""
    return {
        "timezone": config.timezone,
        "reservation_ttl": config.reservation_ttl_s,
        "expired_reservations": config.expired_reservations,
        "state_flush_interval": config.state_flush_interval_s,
        "forecast_interval": config.forecast_interval_s,
        "rules": [_rule_to_mapping(r) for r in config.rules],
    }


def _rule_to_mapping(rule: LimitConfig) -> dict[str, Any]:
    window: dict[str, Any] | None
    if isinstance(rule.window, InFlightConfig):
        window = None
    elif isinstance(rule.window, CalendarWindowConfig):
        window = {
            "type": "calendar",
            "period": rule.window.period,
            "timezone": rule.window.timezone,
        }
    else:
        window = {"type": "rolling", "per": rule.window.per_s}
        if rule.window.burst is not None:
            window["burst"] = rule.window.burst
    out: dict[str, Any] = {
        "name": rule.name,
        "match": {k: list(v) for k, v in rule.match.items()},
        "group_by": list(rule.group_by),
        "measure": rule.measure,
        "window": window,
        "limit": rule.limit,
        "action": rule.action,
        "alert_at": list(rule.alert_at),
    }
    if window is None:
        # A concurrency limit takes neither: the mapping must read back as it was given.
        del out["window"], out["alert_at"]
    if rule.weights:
        out["weights"] = dict(rule.weights)
    if rule.downgrade_model is not None:
        out["downgrade_model"] = rule.downgrade_model
    if rule.currency is not None:
        out["currency"] = rule.currency
    if rule.include_internal:
        out["include_internal"] = True
    return out


def limits_routes(service: LimitsService) -> list[Route]:
    """The limits API bound to ``service``."""

    @ingest_keys_allowed
    async def check(request: Request) -> Response:
        """Reserve a request's estimate against every matching limit, all or nothing.

        Idempotent by ``request_id``. ``dry_run: true`` evaluates without reserving.
        ---
        responses:
          "200": {description: the decision; allowed false carries retry_after_s}
          "400": {description: malformed request}
          "403": {description: the ingest key is bound to another tenant}
        """
        principal = principal_of(request)
        bound = principal.tenant
        try:
            data = await read_json_body(request)
            if bound is not None and data.get("tenant") is None:
                data["tenant"] = bound
            if principal.internal:
                data["internal"] = True
            dry_run = data.get("dry_run", False)
            if not isinstance(dry_run, bool):
                raise BadRequest("dry_run: expected a boolean")
            check_request = check_request_from_json(data)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        if bound is not None and check_request.tenant != bound:
            return _other_tenant(bound)
        if bound is not None and check_request.internal and not principal.internal:
            # As at ingest: a tenant's own key never makes its usage internal.
            return error_response(
                403, f"this ingest key is bound to tenant {bound!r} and cannot mark calls internal"
            )
        result = service.check(check_request, dry_run=dry_run)
        headers = {}
        if not result.allowed and result.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(result.retry_after_s + 0.5)))
        return Response(check_answer_bytes(result), media_type="application/json", headers=headers)

    @ingest_keys_allowed
    async def reconcile(request: Request) -> Response:
        """Report the actual usage of a reserved call, or cancel the reservation.

        For gateways that emit no spans: the collector writes the usage event itself.
        ---
        responses:
          "200": {description: usage recorded or reservation released}
          "400": {description: malformed request}
          "403": {description: the reservation belongs to another tenant than the ingest key's}
          "404": {description: "unknown, already reconciled or expired reservation"}
        """
        try:
            data = await read_json_body(request)
            rid = _required(data, "reservation_id")
            cancelled = data.get("cancelled", False)
            if not isinstance(cancelled, bool):
                raise BadRequest("cancelled: expected a boolean")
            unknown = set(data) - {
                "reservation_id",
                "cancelled",
                "duration_s",
                *_USAGE_INTS,
                *_USAGE_TEXT,
            }
            if unknown:
                raise BadRequest(f"{sorted(unknown)[0]}: unknown field")
            usage: dict[str, Any] = {k: _count(data, k) for k in _USAGE_INTS if k in data}
            usage.update({k: _text(data, k) for k in _USAGE_TEXT if k in data})
            duration = data.get("duration_s")
            if duration is not None:
                if (
                    isinstance(duration, bool)
                    or not isinstance(duration, (int, float))
                    or not 0 <= duration <= _MAX_DURATION_S
                ):
                    raise BadRequest(
                        f"duration_s: expected a number of seconds from 0 to {_MAX_DURATION_S:g}"
                    )
                usage["duration_s"] = float(duration)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        bound = principal_of(request).tenant
        if bound is not None:
            reservation = service.engine.reservation(rid)
            if reservation is not None and reservation.request.tenant != bound:
                return _other_tenant(bound)
        if cancelled:
            if not service.release(rid):
                return error_response(404, f"no open reservation {rid}")
            return JSONResponse({"reservation_id": rid, "released": True})
        try:
            event = await run_in_threadpool(service.reconcile, rid, usage)
        except InvalidUsage as exc:
            return error_response(400, str(exc))
        except TollmeterError as exc:
            return error_response(503, str(exc))
        if event is None:
            return error_response(404, f"no open reservation {rid}")
        return JSONResponse(
            {"reservation_id": rid, "event_id": event.event_id, "sequence": event.sequence}
        )

    async def tenant_status(request: Request) -> Response:
        """What is blocked for a tenant and until when, with every limit's remainder."""
        tenant = request.path_params["tenant"]
        if len(tenant) > _MAX_TEXT:
            return error_response(400, "tenant id too long")
        return JSONResponse(service.status(tenant))

    async def tenant_decisions(request: Request) -> Response:
        """The checks this tenant was recently denied, newest first (kept in memory: the
        last 50 per tenant since the collector started).
        ---
        responses:
          "200": {description: "{\"tenant\": id, \"decisions\": [notice, ...]}"}
        """
        tenant = request.path_params["tenant"]
        if len(tenant) > _MAX_TEXT:
            return error_response(400, "tenant id too long")
        decisions = [notice.to_json() for notice in service.decisions.of(tenant)]
        return JSONResponse({"tenant": tenant, "decisions": decisions})

    async def get_limits(request: Request) -> Response:
        """The limits in force, check and reservation counters, and every hook's deliveries."""
        stats = {
            name: {
                "delivered": s.delivered,
                "failed": s.failed,
                "dropped": s.dropped,
                "retries": s.retries,
            }
            for name, s in service.hook_stats().items()
        }
        return JSONResponse(
            {
                "limits": limits_to_mapping(service.limits),
                "counters": service.engine.counts(),
                "hooks": stats,
            }
        )

    async def put_limits(request: Request) -> Response:
        """Replace the limits at run time, keeping the state of unchanged limits.
        ---
        responses:
          "200": {description: the limits now in force}
          "400": {description: invalid limits; nothing changed}
        """
        try:
            data = await read_json_body(request)
        except BadRequest as exc:
            code = "invalid_limits" if exc.status == 400 else None
            return error_response(exc.status, str(exc), code=code)
        if "rules" not in data:
            # An empty or misspelt body must not silently remove every limit.
            return _invalid_limits(
                [("limits.rules", 'required; send {"rules": []} to remove every limit')]
            )
        # Settings the body leaves out keep the values in force, not the defaults.
        merged = {**limits_to_mapping(service.limits), **data}
        try:
            config = LimitsConfig.from_mapping(merged, "limits")
            clashes = name_clashes(config, service.plans.plans, "limits")
            if clashes:
                return _invalid_limits(clashes)
        except InvalidConfig as exc:
            return _invalid_limits([(p.key, p.reason) for p in exc.problems])
        except InvalidSetting as exc:
            return _invalid_limits([(exc.key, exc.reason)])
        except ConfigurationError as exc:
            return _invalid_limits([("limits", str(exc))])
        service.reload(config)
        return JSONResponse({"limits": limits_to_mapping(config)})

    return [
        Route("/api/v1/check", check, methods=["POST"], name="limits_check"),
        Route("/api/v1/reconcile", reconcile, methods=["POST"], name="limits_reconcile"),
        Route(
            "/api/v1/tenants/{tenant}/status",
            tenant_status,
            methods=["GET"],
            name="tenant_status",
        ),
        Route(
            "/api/v1/tenants/{tenant}/decisions",
            tenant_decisions,
            methods=["GET"],
            name="tenant_decisions",
        ),
        Route("/api/v1/limits", get_limits, methods=["GET"], name="get_limits"),
        Route("/api/v1/limits", put_limits, methods=["PUT"], name="put_limits"),
    ]
