"""HTTP routes of outcomes: reports from back ends, and cost per outcome.

``POST /api/v1/outcomes`` takes a JSON list of outcomes (``name``, ``workflow_id``, and
optionally ``value``, ``outcome_id``, ``tenant``, ``time``), checked by the rules of
``_outcomes.py``, all or nothing: one bad item refuses the request, naming the item
and field. Ingest keys may call it; one bound to a tenant reports for that tenant only,
and an admin key names the tenant of each item. A report whose (tenant, outcome id) is
stored already is counted as a duplicate, so retries are harmless.

``GET /api/v1/outcomes/summary`` (``from``, ``to``: ISO 8601, ``to`` exclusive; ``name``;
``tenant``) gives per outcome name the count, total value, workflows, their calls,
tokens and cost, the cost per outcome, and the workflows with usage and no outcome.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollmeter.collector._http_errors import error_response
from tollmeter.collector._management import ingest_keys_allowed, principal_of
from tollmeter.collector._outcomes import (
    Outcome,
    outcome_id,
    outcome_name,
    outcome_text,
    outcome_value,
)
from tollmeter.collector._query_params import refuse_unknown, time_ns, time_window
from tollmeter.collector.errors import BadRequest
from tollmeter.collector.storage import Ledger, StorageError

__all__ = ["MAX_BODY_BYTES", "MAX_OUTCOMES", "outcome_routes"]

MAX_BODY_BYTES = 1024 * 1024
MAX_OUTCOMES = 1000
_FIELDS = frozenset({"name", "workflow_id", "value", "outcome_id", "tenant", "time"})
_SUMMARY_PARAMS = frozenset({"from", "to", "name", "tenant"})


def outcome_routes(ledger: Ledger) -> list[Route]:
    """The outcome routes over ``ledger``."""

    @ingest_keys_allowed
    async def report(request: Request) -> Response:
        """Record outcomes of workflows, idempotent by outcome id.

        The body is a JSON list of objects: ``name`` and ``workflow_id`` (required),
        ``value`` (a finite number, 1 by default), ``outcome_id`` (derived from the workflow
        id and name when absent), ``tenant`` (the ingest key's by default), ``time``.
        ---
        responses:
          "200": {description: "how many were stored and how many were duplicates"}
          "400": {description: an item is invalid; the message names it}
          "403": {description: the ingest key is bound to another tenant}
          "413": {description: body or list too large}
        """
        bound = principal_of(request).tenant
        try:
            items = await _json_list(request)
            outcomes = [_outcome(item, index, bound) for index, item in enumerate(items)]
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        if bound is not None:
            for outcome in outcomes:
                if outcome.tenant_id != bound:
                    return error_response(
                        403,
                        f"this ingest key is bound to tenant {bound!r} and cannot report "
                        "outcomes for another",
                    )
        try:
            stored = await run_in_threadpool(ledger.append_outcomes, outcomes)
        except StorageError as exc:
            return error_response(503, f"ledger unavailable: {exc}")
        return JSONResponse({"stored": len(stored), "duplicates": len(outcomes) - len(stored)})

    async def summary(request: Request) -> Response:
        """Cost and tokens per outcome, and of the workflows that reported none.
        ---
        parameters:
          - {name: from, in: query, description: ISO 8601, inclusive, schema: {type: string}}
          - {name: to, in: query, description: ISO 8601, exclusive, schema: {type: string}}
          - {name: name, in: query, schema: {type: string}}
          - {name: tenant, in: query, schema: {type: string}}
        responses:
          "200": {description: "per outcome name, and the workflows without outcome"}
          "400": {description: a parameter is invalid}
        """
        params = request.query_params
        try:
            refuse_unknown(params, _SUMMARY_PARAMS)
            start_ns, end_ns = time_window(params)
            name = params.get("name")
            tenant = params.get("tenant")
            name = None if name is None else outcome_name(name)
            tenant = None if tenant is None else outcome_text(tenant, "tenant")
        except BadRequest as exc:
            return error_response(400, str(exc))
        try:
            result = await run_in_threadpool(
                lambda: ledger.summarize_outcomes(
                    tenant=tenant, start_ns=start_ns, end_ns=end_ns, name=name
                )
            )
        except StorageError as exc:
            return error_response(503, f"ledger unavailable: {exc}")
        return JSONResponse(result.to_json())

    return [
        Route("/api/v1/outcomes", report, methods=["POST"]),
        Route("/api/v1/outcomes/summary", summary, methods=["GET"]),
    ]


def _refuse_constant(text: str) -> Any:
    raise BadRequest(f"value: must be a finite number, not {text}")


async def _json_list(request: Request) -> list[Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    body = bytearray()
    # Counted while reading, so that a chunked body without a length cannot fill memory.
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        # Numbers stay text until checked: 1e400 must be refused, not read as infinity.
        data = json.loads(body, parse_float=str, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise BadRequest("body must be a JSON list of outcomes")
    if len(data) > MAX_OUTCOMES:
        raise BadRequest(f"more than {MAX_OUTCOMES} outcomes in one request", status=413)
    return data


def _outcome(item: object, index: int, bound: str | None) -> Outcome:
    where = f"outcomes[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where}: expected an object")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise BadRequest(f"{where}: unknown field {', '.join(unknown)[:64]!r}")
    try:
        name = outcome_name(item.get("name"))
        workflow = outcome_text(item.get("workflow_id"), "workflow_id")
        value = outcome_value(item.get("value"))
        given = item.get("outcome_id")
        key = outcome_id(workflow, name) if given is None else outcome_text(given, "outcome_id")
        tenant = item.get("tenant", bound)
        if tenant is None:
            raise BadRequest("tenant: required with a key that is not bound to a tenant")
        tenant = outcome_text(tenant, "tenant")
        moment = time_ns("time", item.get("time"), time.time_ns())
    except BadRequest as exc:
        raise BadRequest(f"{where}.{exc}") from None
    return Outcome(
        outcome_id=key,
        tenant_id=tenant,
        workflow_id=workflow,
        name=name,
        value=value,
        time_ns=moment,
    )
