"""HTTP routes of the usage API: totals, raw events and live meters, as JSON.

``GET /api/v1/usage`` filters (``tenant``, ``project``, ``model``, ``feature``,
``api_key``, ``usage_source``, ``plan``), bounds (``start``, ``end``: ISO 8601, UTC when no offset
is given, ``end`` exclusive), groups (``group_by=tenant,model``) and buckets
(``window=minute|hour|day|week|month``, UTC, weeks from Monday) usage from the ledger;
``group_by=workflow`` (alone, with ``start`` and ``end``) answers per workflow run with
its hidden and loop tokens, from the raw events of the range. ``internal=true|false``
keeps only the operator's own usage or only the rest. A ``plan`` filter or grouping
splits usage by the plan each event was metered under. Rollups keep neither, so such a
query is answered from the raw events and needs ``start`` and ``end`` at most 31 days
apart.
``GET /api/v1/events`` pages through raw usage events by sequence (``after``, ``limit``;
``next`` is the cursor of the following page). ``GET /api/v1/meters`` reads the
in-memory meters of the current window bucket, or the ledger's rollups of it when the
ledger is shared by replicas. Bad parameters get a 400 with the reason;
authentication is the job of the application that mounts these routes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tollmeter.collector._http_errors import error_response
from tollmeter.collector._meters import METER_DIMENSIONS, Meters, ledger_breakdown
from tollmeter.collector._org_usage import ORG, by_org
from tollmeter.collector.errors import BadRequest
from tollmeter.collector.storage import (
    QUERY_DIMENSIONS,
    QUERY_WINDOWS,
    WINDOWS,
    InvalidQuery,
    Ledger,
    StorageError,
    UsageQuery,
)
from tollmeter.collector.storage._codec import event_to_json
from tollmeter.collector.storage._workflows import check_workflow_query

__all__ = ["MAX_EVENTS_PAGE", "MAX_USAGE_ROWS", "usage_routes"]

MAX_USAGE_ROWS = 10_000
MAX_EVENTS_PAGE = 1_000
_USAGE_PARAMS = frozenset(
    {*QUERY_DIMENSIONS, ORG, "internal", "start", "end", "group_by", "window", "limit"}
)
_EVENTS_PARAMS = frozenset({"after", "limit"})
_METERS_PARAMS = frozenset({"window", "group_by"})
_WORKFLOW = "workflow"


def _check_names(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown parameter {_preview(', '.join(unknown))}; "
            f"expected {', '.join(sorted(allowed))}"
        )


def _preview(text: str) -> str:
    """The offending value for an error message, short enough to echo back."""
    return repr(text) if len(text) <= 64 else repr(text[:64]) + "..."


def _time(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time, not {_preview(text)}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _integer(name: str, text: str | None, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {_preview(text)}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _internal(text: str | None) -> bool | None:
    if not text:
        return None
    if text not in ("true", "false"):
        raise BadRequest(f"internal must be true or false, not {_preview(text)}")
    return text == "true"


def _group_by(params: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(name.strip() for name in params.get("group_by", "").split(",") if name.strip())


def _usage_query(params: Mapping[str, str]) -> UsageQuery:
    _check_names(params, _USAGE_PARAMS)
    group_by = _group_by(params)
    if _WORKFLOW in group_by:
        # Answered from the raw events (storage/_workflows.py), alone and over a bounded range.
        group_by = tuple(name for name in group_by if name != _WORKFLOW)
        if group_by or params.get("window"):
            raise BadRequest("group_by=workflow takes no other dimension and no window")
        if params.get("start") is None or params.get("end") is None:
            raise BadRequest("group_by=workflow needs start and end")
    unknown = [name for name in group_by if name not in QUERY_DIMENSIONS]
    if unknown:
        raise BadRequest(
            f"cannot group by {_preview(', '.join(unknown))}; "
            f"choose from {', '.join(QUERY_DIMENSIONS)} or {_WORKFLOW} alone"
        )
    window = params.get("window") or None
    if window is not None and window not in QUERY_WINDOWS:
        raise BadRequest(
            f"window must be one of {', '.join(QUERY_WINDOWS)}, not {_preview(window)}"
        )
    try:
        query = UsageQuery(
            tenant=params.get("tenant") or None,
            project=params.get("project") or None,
            model=params.get("model") or None,
            feature=params.get("feature") or None,
            api_key=params.get("api_key") or None,
            usage_source=params.get("usage_source") or None,
            plan=params.get("plan") or None,
            internal=_internal(params.get("internal")),
            start=_time("start", params.get("start")),
            end=_time("end", params.get("end")),
            group_by=group_by,  # type: ignore[arg-type]  # names checked above
            window=window,
            limit=_integer("limit", params.get("limit"), MAX_USAGE_ROWS, 1, MAX_USAGE_ROWS),
        )
        if _WORKFLOW in _group_by(params):
            check_workflow_query(query)
        return query
    except InvalidQuery as exc:
        raise BadRequest(str(exc)) from None


def _per_tenant(params: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The parameters of an ``org`` query asked of the ledger per tenant instead, and the
    grouping asked for."""
    asked = _group_by(params)
    if _WORKFLOW in asked:
        raise BadRequest("group_by=workflow takes no org")
    unknown = [name for name in asked if name not in QUERY_DIMENSIONS and name != ORG]
    if unknown:
        raise BadRequest(
            f"cannot group by {_preview(', '.join(unknown))}; "
            f"choose from {', '.join(QUERY_DIMENSIONS)}, {ORG} or {_WORKFLOW} alone"
        )
    dims = [name for name in asked if name != ORG]
    per_tenant = {name: value for name, value in params.items() if name != ORG}
    per_tenant["group_by"] = ",".join([*dims, *(("tenant",) if "tenant" not in dims else ())])
    return per_tenant, asked


def usage_routes(
    ledger: Ledger, meters: Meters, *, org_of: Mapping[str, str] | None = None
) -> list[Route]:
    """The usage API routes over ``ledger`` and ``meters``; ``org_of`` maps tenants to
    their organisations for ``org`` queries."""
    organisations = org_of or {}

    async def usage_by_org(params: Mapping[str, str]) -> JSONResponse:
        _check_names(params, _USAGE_PARAMS)
        per_tenant, asked = _per_tenant(params)
        query = _usage_query(per_tenant)
        rows = await run_in_threadpool(ledger.query_usage, query)
        found = by_org(rows, group_by=asked, org=params.get(ORG) or None, org_of=organisations)
        grouped = ORG in asked
        return JSONResponse(
            {
                "group_by": list(asked),
                "window": query.window,
                "start": None if query.start is None else query.start.isoformat(),
                "end": None if query.end is None else query.end.isoformat(),
                "rows": [
                    {**row.to_json(), **({ORG: owner} if grouped else {})} for owner, row in found
                ],
                # Per-tenant rows up to the limit were summed: more may exist beyond it.
                "truncated": len(rows) == query.limit,
            }
        )

    async def usage(request: Request) -> JSONResponse:
        """Usage totals, filtered, grouped and bucketed by window.
        ---
        parameters:
          - {name: tenant, in: query, schema: {type: string}}
          - {name: project, in: query, schema: {type: string}}
          - {name: model, in: query, schema: {type: string}}
          - {name: feature, in: query, schema: {type: string}}
          - {name: api_key, in: query, schema: {type: string}}
          - name: org
            in: query
            description: the tenants the organisations configuration maps to it
            schema: {type: string}
          - name: usage_source
            in: query
            schema: {type: string, enum: [provider, estimate, reservation]}
          - name: plan
            in: query
            description: >-
              the plan the usage was metered under; needs start and end at most 31 days
              apart
            schema: {type: string}
          - name: internal
            in: query
            description: >-
              only internal usage (true) or only the rest (false); needs start and end at
              most 31 days apart
            schema: {type: string, enum: ["true", "false"]}
          - {name: start, in: query, description: ISO 8601, inclusive, schema: {type: string}}
          - {name: end, in: query, description: ISO 8601, exclusive, schema: {type: string}}
          - name: group_by
            in: query
            description: >-
              comma-separated tenant, project, model, feature, api_key, usage_source, plan
              (with start and end at most 31 days apart), org; or workflow alone (with start
              and end at most 31 days apart): calls, tokens, hidden input tokens, loop
              tokens, retries and cost per workflow run
            schema: {type: string}
          - name: window
            in: query
            schema: {type: string, enum: [minute, hour, day, week, month]}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 10000}}
        responses:
          "200": {description: "rows with token buckets, requests, cost and currency"}
          "400": {description: a parameter is invalid}
        """
        params = request.query_params
        if params.get(ORG) or ORG in _group_by(params):
            return await usage_by_org(params)
        query = _usage_query(params)
        if _WORKFLOW in _group_by(params):
            workflows = await run_in_threadpool(ledger.query_workflows, query)
            return JSONResponse(
                {
                    "group_by": [_WORKFLOW],
                    "window": None,
                    "start": None if query.start is None else query.start.isoformat(),
                    "end": None if query.end is None else query.end.isoformat(),
                    "rows": [row.to_json() for row in workflows],
                    "truncated": len(workflows) == query.limit,
                }
            )
        rows = await run_in_threadpool(ledger.query_usage, query)
        return JSONResponse(
            {
                "group_by": list(query.group_by),
                "window": query.window,
                "start": None if query.start is None else query.start.isoformat(),
                "end": None if query.end is None else query.end.isoformat(),
                "rows": [row.to_json() for row in rows],
                "truncated": len(rows) == query.limit,
            }
        )

    async def events(request: Request) -> JSONResponse:
        """Raw usage events in sequence order, one page at a time.
        ---
        parameters:
          - name: after
            in: query
            description: sequence cursor
            schema: {type: integer, minimum: 0}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000}}
        responses:
          "200": {description: "events, the next cursor, and the range retention pruned"}
          "400": {description: a parameter is invalid}
        """
        params = request.query_params
        _check_names(params, _EVENTS_PARAMS)
        after = _integer("after", params.get("after"), 0, 0, 2**63 - 1)
        limit = _integer("limit", params.get("limit"), 100, 1, MAX_EVENTS_PAGE)
        page = await run_in_threadpool(ledger.read_events, after, limit)
        body: dict[str, object] = {
            "events": [event_to_json(event) for event in page],
            "next": page[-1].sequence if page else after,
        }
        checkpoint = await run_in_threadpool(ledger.chain_checkpoint)
        if checkpoint is not None:
            # Retention pruned the events up to here: a reader starting before them
            # resumes after the cut, and learns why the sequences jump.
            body["pruned"] = {
                "through_sequence": checkpoint.last_sequence,
                "first_event_ns": checkpoint.first_pruned_ns,
                "last_event_ns": checkpoint.last_pruned_ns,
            }
        return JSONResponse(body)

    async def current_meters(request: Request) -> JSONResponse:
        """Live meters of the current window bucket, per value of one dimension.
        ---
        parameters:
          - {name: window, in: query, schema: {type: string, enum: [minute, hour, day, month]}}
          - name: group_by
            in: query
            schema: {type: string, enum: [tenant, project, model, feature, api_key]}
        responses:
          "200": {description: "totals per dimension value"}
          "400": {description: a parameter is invalid}
        """
        params = request.query_params
        _check_names(params, _METERS_PARAMS)
        window = params.get("window", "day")
        if window not in WINDOWS:
            raise BadRequest(f"window must be one of {', '.join(WINDOWS)}, not {_preview(window)}")
        dimension = params.get("group_by", "tenant")
        if dimension not in METER_DIMENSIONS:
            raise BadRequest(
                f"group_by must be one of {', '.join(METER_DIMENSIONS)}, not {_preview(dimension)}"
            )
        if ledger.shared:
            cells = await run_in_threadpool(ledger_breakdown, ledger, window, dimension)
        else:
            cells = meters.breakdown(window, dimension)
        return JSONResponse(
            {
                "window": window,
                "group_by": dimension,
                "meters": {value: totals.to_json() for value, totals in sorted(cells.items())},
            }
        )

    return [
        Route("/api/v1/usage", _guarded(usage), methods=["GET"]),
        Route("/api/v1/events", _guarded(events), methods=["GET"]),
        Route("/api/v1/meters", _guarded(current_meters), methods=["GET"]),
    ]


def _guarded(
    endpoint: Callable[[Request], Any],
) -> Callable[[Request], Any]:
    @functools.wraps(endpoint)
    async def handle(request: Request) -> JSONResponse:
        try:
            response: JSONResponse = await endpoint(request)
        except BadRequest as exc:
            return error_response(400, str(exc))
        except StorageError as exc:
            return error_response(503, f"ledger unavailable: {exc}")
        return response

    return handle
