"""HTTP route of avoided usage: the calls applications answered from their own caches.

``GET /api/v1/usage/avoided`` (``from``, ``to``: ISO 8601, UTC when no offset is given,
``to`` exclusive; ``tenant``; ``group_by``: any of ``tenant``, ``feature``, ``model``)
answers per group the calls avoided, their input, output and total tokens and the saved
cost, one row per currency. It is a route of its own, not a flag on ``/api/v1/usage``,
so that no client summing that route's rows can add avoided tokens to billed ones.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollmeter.collector._http_errors import error_response
from tollmeter.collector._outcomes import outcome_text
from tollmeter.collector._query_params import refuse_unknown, time_window
from tollmeter.collector.errors import BadRequest
from tollmeter.collector.storage import Ledger, StorageError
from tollmeter.collector.storage._avoided import AVOIDED_GROUPS

__all__ = ["avoided_routes"]

_PARAMS = frozenset({"from", "to", "tenant", "group_by"})


def avoided_routes(ledger: Ledger) -> list[Route]:
    """The avoided usage route over ``ledger``."""

    async def avoided(request: Request) -> Response:
        """Avoided calls, tokens and saved cost, apart from billed usage.
        ---
        parameters:
          - {name: from, in: query, description: ISO 8601, inclusive, schema: {type: string}}
          - {name: to, in: query, description: ISO 8601, exclusive, schema: {type: string}}
          - {name: tenant, in: query, schema: {type: string}}
          - {name: group_by, in: query, description: "tenant,feature,model", schema: {type: string}}
        responses:
          "200": {description: "per group and currency: calls, avoided tokens, saved cost"}
          "400": {description: a parameter is invalid}
        """
        params = request.query_params
        try:
            refuse_unknown(params, _PARAMS)
            start_ns, end_ns = time_window(params)
            tenant = params.get("tenant")
            tenant = None if tenant is None else outcome_text(tenant, "tenant")
            group_by = [n.strip() for n in params.get("group_by", "").split(",") if n.strip()]
            wrong = [name for name in group_by if name not in AVOIDED_GROUPS]
            if wrong or len(set(group_by)) != len(group_by):
                raise BadRequest(
                    f"group_by: {params.get('group_by', '')[:64]!r} is not a list of distinct "
                    f"names from {', '.join(AVOIDED_GROUPS)}"
                )
        except BadRequest as exc:
            return error_response(400, str(exc))
        try:
            groups = await run_in_threadpool(
                lambda: ledger.summarize_avoided(
                    start_ns=start_ns, end_ns=end_ns, tenant=tenant, group_by=group_by
                )
            )
        except StorageError as exc:
            return error_response(503, f"ledger unavailable: {exc}")
        return JSONResponse({"group_by": group_by, "avoided": groups})

    return [Route("/api/v1/usage/avoided", avoided, methods=["GET"])]
