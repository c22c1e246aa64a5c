"""``POST /api/v1/export``: run an export now and report what it wrote."""

from __future__ import annotations

import asyncio
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from tollmeter.collector._http_errors import CODES, error_response
from tollmeter.collector.export._exporter import ExportResult, ExportStatus

__all__ = ["export_routes"]

_STATUS_CODES = {ExportStatus.SUCCESS: 200, ExportStatus.BUSY: 409, ExportStatus.FAILURE: 500}
_MAX_TIMEOUT_S = 3600.0


class _Runs(Protocol):
    def export(self, *, timeout: float | None = None) -> ExportResult: ...


def export_routes(exporter: _Runs) -> list[BaseRoute]:
    """Routes to mount under the management API's admin authentication.

    The optional query parameter ``timeout`` (seconds) bounds the run; an export
    cut short by it still commits what it wrote and reports ``caught_up: false``.
    """

    async def run_export(request: Request) -> JSONResponse:
        raw = request.query_params.get("timeout")
        timeout: float | None = None
        if raw is not None:
            try:
                timeout = float(raw)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout <= _MAX_TIMEOUT_S:
                return error_response(
                    400, f"timeout must be a number of seconds in (0, {_MAX_TIMEOUT_S:g}]"
                )
        result = await asyncio.to_thread(exporter.export, timeout=timeout)
        status = _STATUS_CODES[result.status]
        body = result.to_json()
        if status != 200:
            # A failed run's report is also an error body: ``error`` holds its message.
            body["code"] = CODES[status]
        return JSONResponse(body, status_code=status)

    return [Route("/api/v1/export", run_export, methods=["POST"])]
