"""The Starlette application: request parsing, faults, and the ``/_fake`` inspection routes."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollmeter.fakellm._anthropic import messages
from tollmeter.fakellm._bedrock import converse, converse_stream
from tollmeter.fakellm._bedrock_invoke import invoke, invoke_stream
from tollmeter.fakellm._cache import PrefixCache
from tollmeter.fakellm._errors import Provider, error_body, error_headers, retry_headers
from tollmeter.fakellm._faults import (
    Directives,
    FaultError,
    parse_directives,
    split_model,
)
from tollmeter.fakellm._gemini import GEMINI_ROUTES
from tollmeter.fakellm._journal import Exchange, Journal
from tollmeter.fakellm._models import list_models
from tollmeter.fakellm._openai_chat import chat_completions
from tollmeter.fakellm._openai_other import completions, embeddings
from tollmeter.fakellm._openai_responses import responses
from tollmeter.fakellm._reply import BadRequest, Call, Prepared, new_id
from tollmeter.fakellm._reports import ReportSettings, key_id, report_routes
from tollmeter.fakellm._sse import PlayedResponse, install_log_filter, json_bytes

__all__ = ["MAX_BODY_BYTES", "FakeLLMState", "create_app"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
_SSE = "text/event-stream; charset=utf-8"
_JSON = "application/json"

Handler = Callable[[Call], Prepared]
_ENDPOINTS: dict[str, tuple[Provider, Handler]] = {
    "/v1/chat/completions": ("openai", chat_completions),
    "/v1/completions": ("openai", completions),
    "/v1/embeddings": ("openai", embeddings),
    "/v1/responses": ("openai", responses),
    "/v1/messages": ("anthropic", messages),
    # Azure OpenAI names a deployment in the path (and takes ``?api-version=``); the model that
    # answers is the body's ``model`` when given, else one named like the deployment.
    "/openai/deployments/{deployment}/chat/completions": ("openai", chat_completions),
    "/openai/deployments/{deployment}/completions": ("openai", completions),
    "/openai/deployments/{deployment}/embeddings": ("openai", embeddings),
    # Bedrock names the model in the path; ``:path`` because ARNs and profile ids hold "/".
    "/model/{model_id:path}/converse": ("bedrock", converse),
    "/model/{model_id:path}/converse-stream": ("bedrock", converse_stream),
    "/model/{model_id:path}/invoke": ("bedrock", invoke),
    "/model/{model_id:path}/invoke-with-response-stream": ("bedrock", invoke_stream),
    **{path: ("gemini", handler) for path, handler in GEMINI_ROUTES.items()},
}
_BEDROCK_ATTEMPT = re.compile(r"attempt=(\d+)")
_MAX_LEFT_EARLY = 1024


class FakeLLMState:
    """The server's memory: the prompt cache, the journal of recent exchanges and the
    streams their clients left before the end (request id: chunks sent by then)."""

    def __init__(self) -> None:
        self.cache = PrefixCache()
        self.journal = Journal()
        self.reports = ReportSettings()
        self.left_early: dict[str, int] = {}

    def reset(self) -> None:
        self.cache.clear()
        self.journal.clear()
        self.reports.reset()
        self.left_early.clear()

    def note_left(self, request_id: str, sent: int) -> None:
        if len(self.left_early) >= _MAX_LEFT_EARLY:
            self.left_early.pop(next(iter(self.left_early)))
        self.left_early[request_id] = sent


class _Problem(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


async def _read_json(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Problem(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _Problem(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Problem(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Problem(400, "request body must be a JSON object")
    return body


def _attempt(request: Request) -> int:
    """The client's retry count: the OpenAI and Anthropic SDKs send it, botocore the attempt."""
    found = _BEDROCK_ATTEMPT.search(request.headers.get("amz-sdk-request", ""))
    if found:
        return int(found.group(1)) - 1
    raw = request.headers.get("x-stainless-retry-count", "0")
    return int(raw) if raw.isdigit() else 0


class _Endpoint:
    def __init__(self, state: FakeLLMState, path: str) -> None:
        self.state = state
        self.path = path
        self.provider, self.handler = _ENDPOINTS[path]

    def _headers(self, request_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"x-request-id": request_id}
        if self.provider == "anthropic":
            headers["request-id"] = request_id
        elif self.provider == "bedrock":
            headers["x-amzn-requestid"] = request_id
        headers.update(extra or {})
        return headers

    def _error(
        self,
        exchange: Exchange,
        status: int,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        self.state.journal.add(exchange)
        body = error_body(
            self.provider, status, message, param=param, request_id=exchange.request_id
        )
        all_headers = self._headers(
            exchange.request_id, {**error_headers(self.provider, status), **(headers or {})}
        )
        all_headers["x-fake-usage"] = "null"
        return Response(json_bytes(body), status, all_headers, media_type=_JSON)

    async def handle(self, request: Request) -> Response | PlayedResponse:
        request_id = new_id("req_")
        attempt = _attempt(request)
        base = Exchange(
            request_id,
            self.provider,
            self.path,
            400,
            attempt=attempt,
            time=time.time(),
            project=request.headers.get("openai-project"),
            api_key_id=key_id(self.provider, request.headers),
        )
        try:
            body = await _read_json(request)
            model = request.path_params.get("model_id", body.get("model"))
            if not model:
                model = request.path_params.get("deployment")
            if not isinstance(model, str) or not model.strip():
                raise _Problem(400, "model is required", "model")
            model, suffix = split_model(model)
            directives = parse_directives(request.headers, suffix)
        except _Problem as problem:
            exchange = replace(base, status=problem.status)
            return self._error(exchange, problem.status, problem.message, param=problem.param)
        except FaultError as err:
            return self._error(base, 400, str(err))
        stream = body.get("stream") is True or self.path.endswith("-stream")
        base = replace(base, model=model, stream=stream, faults=directives.as_list())
        status = directives.error_status(attempt)
        if status is not None:
            extra = retry_headers(directives.retry_after) if status == 429 else None
            message = (
                "Rate limit reached (injected)" if status == 429 else "Server error (injected)"
            )
            return self._error(replace(base, status=status), status, message, headers=extra)
        try:
            # Off the event loop: counting a 4 MiB prompt must not stall other clients.
            call = Call(body, model, directives, self.state.cache)
            prepared = await run_in_threadpool(self.handler, call)
        except BadRequest as err:
            return self._error(base, 400, err.message, param=err.param)
        except Exception:
            # A bug here must answer like a provider outage, not crash the connection.
            logger.exception("fake LLM handler failed for %s", self.path)
            return self._error(replace(base, status=500), 500, "internal error")
        return self._play(base, prepared, directives)

    def _play(self, base: Exchange, prepared: Prepared, directives: Directives) -> PlayedResponse:
        streaming = prepared.events is not None
        chunks = prepared.events if prepared.events is not None else [json_bytes(prepared.body)]
        cut = directives.cut_after
        if cut is not None and not streaming:
            whole = chunks[0]
            chunks, cut = [whole[: len(whole) // 2], whole[len(whole) // 2 :]], 1
        reported = prepared.provider_usage is not None and (cut is None or cut >= len(chunks))
        exchange = replace(
            base,
            status=200,
            stream=streaming,
            response_id=prepared.response_id,
            usage=prepared.usage,
            reported=reported,
            provider_usage=prepared.provider_usage,
        )
        self.state.journal.add(exchange)
        header = json.dumps({**prepared.usage.as_dict(), "reported": reported})
        return PlayedResponse(
            status=200,
            headers=self._headers(
                base.request_id, {**(prepared.headers or {}), "x-fake-usage": header}
            ),
            chunks=chunks,
            media_type=prepared.media_type or (_SSE if streaming else _JSON),
            streaming=streaming,
            first_delay=directives.first_token_delay,
            chunk_delay=directives.chunk_delay_ms / 1000,
            cut_after=cut,
            on_left=lambda sent: self.state.note_left(base.request_id, sent),
        )


def _inspection_routes(state: FakeLLMState) -> list[Route]:
    async def list_requests(request: Request) -> Response:
        items = [exchange.as_dict() for exchange in state.journal.snapshot()]
        limit = request.query_params.get("limit", "")
        if limit.isdigit():
            items = items[-int(limit) :] if int(limit) else []
        return JSONResponse({"requests": items})

    async def reset(request: Request) -> Response:
        state.reset()
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_fake/requests", list_requests, methods=["GET"]),
        Route("/_fake/reset", reset, methods=["POST"]),
        Route("/_fake/health", health, methods=["GET"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    provider: Provider = "anthropic" if "anthropic-version" in request.headers else "openai"
    if ":" in request.url.path:
        provider = "gemini"
    message = (
        "unknown route" if status == 404 else "method not allowed" if status == 405 else "error"
    )
    body = error_body(provider, status, message, request_id=new_id("req_"))
    return Response(json_bytes(body), status, media_type=_JSON)


def create_app(state: FakeLLMState | None = None) -> Starlette:
    """The ASGI application; pass ``state`` to inspect or reset it from the same process."""
    install_log_filter()
    state = state or FakeLLMState()
    routes = [Route(path, _Endpoint(state, path).handle, methods=["POST"]) for path in _ENDPOINTS]
    routes.append(Route("/v1/models", list_models, methods=["GET"]))
    routes.extend(_inspection_routes(state))
    routes.extend(report_routes(state.journal, state.reports))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.fake_llm = state
    return app
