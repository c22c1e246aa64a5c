"""``GET/PUT/DELETE /api/v1/tenants/{id}/plan``: which plan a tenant is on, moving it,
and handing it back to the configuration.

Admin routes (the management API refuses ingest keys on them): a tenant's own key
cannot change its plan. A change is stored in the ledger for every replica and applies
to the next check; see ``_plan_book.py``.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollmeter.collector._http_errors import error_response
from tollmeter.collector.errors import BadRequest
from tollmeter.collector.limits._api import read_json_body
from tollmeter.collector.limits._plan_book import PlanBook, UnknownPlan
from tollmeter.semconv.errors import TollmeterError

__all__ = ["plan_routes"]

_MAX_TEXT = 256


def plan_routes(book: PlanBook) -> list[Route]:
    async def get_plan(request: Request) -> Response:
        """The plan a tenant is on (``null``: none).
        ---
        responses:
          "200": {description: the tenant and its plan (null for none)}
        """
        tenant = request.path_params["tenant"]
        if len(tenant) > _MAX_TEXT:
            return error_response(400, "tenant id too long")
        plan = await run_in_threadpool(book.plan_of, tenant)
        return JSONResponse({"tenant": tenant, "plan": plan})

    async def put_plan(request: Request) -> Response:
        """Put a tenant on a plan; the next check uses its limits.
        ---
        responses:
          "200": {description: the tenant and its new plan}
          "400": {description: unknown plan or malformed body; nothing changed}
        """
        tenant = request.path_params["tenant"]
        if len(tenant) > _MAX_TEXT:
            return error_response(400, "tenant id too long")
        try:
            data = await read_json_body(request)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        plan = data.get("plan")
        if not isinstance(plan, str) or set(data) != {"plan"}:
            return error_response(400, 'the body is {"plan": "<plan name>"}')
        try:
            await run_in_threadpool(book.assign, tenant, plan)
        except UnknownPlan as exc:
            return error_response(400, str(exc), code="unknown_plan")
        except TollmeterError as exc:
            return error_response(503, str(exc))
        return JSONResponse({"tenant": tenant, "plan": plan})

    async def delete_plan(request: Request) -> Response:
        """Remove the plan the API assigned a tenant: the configuration's applies again.
        ---
        responses:
          "200": {description: "the tenant, its plan now, whether an assignment was removed"}
        """
        tenant = request.path_params["tenant"]
        if len(tenant) > _MAX_TEXT:
            return error_response(400, "tenant id too long")
        try:
            removed = await run_in_threadpool(book.unassign, tenant)
        except TollmeterError as exc:
            return error_response(503, str(exc))
        plan = await run_in_threadpool(book.plan_of, tenant)
        return JSONResponse({"tenant": tenant, "plan": plan, "removed": removed})

    path = "/api/v1/tenants/{tenant}/plan"
    return [
        Route(path, get_plan, methods=["GET"], name="get_plan"),
        Route(path, put_plan, methods=["PUT"], name="put_plan"),
        Route(path, delete_plan, methods=["DELETE"], name="delete_plan"),
    ]
