"""``quota_response=True``: limit errors a real FastAPI or Flask app lets escape become the
429 a metered API answers. The budgets run out for real, on calls of the real openai SDK to
the fake LLM server; the fail-closed guard for real, against a port nobody listens on."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from werkzeug.serving import make_server
from werkzeug.test import Client

from tollmeter.instrumentation import (
    BudgetExceeded,
    Guard,
    QuotaExceeded,
    TollmeterMiddleware,
    TollmeterWSGIMiddleware,
    budget,
)
from tollmeter.instrumentation.openai import OpenAIInstrumentor

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Name one colour of autumn leaves."}]


def ask(client: openai.OpenAI) -> str:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8).id


def two_calls_on_a_one_call_budget(client: openai.OpenAI) -> str:
    with budget(max_calls=1):
        ask(client)
        return ask(client)  # refused by the budget before it is sent


@pytest.fixture(autouse=True)
def instrumented(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    instrumentor.uninstrument()


@pytest.fixture
def llm_client(fake_llm: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def closed_guard() -> Iterator[Guard]:
    """A fail-closed guard whose collector cannot be reached: every call raises
    ``GuardUnavailable``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    guard = Guard(dead, fail_mode="closed", timeout=0.5).install()
    yield guard
    guard.uninstall()


def fastapi_app(client: openai.OpenAI, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/ask")
    def ask_route() -> dict[str, str]:
        return {"id": two_calls_on_a_one_call_budget(client)}

    @app.get("/one")
    def one_route() -> dict[str, str]:
        return {"id": ask(client)}

    @app.get("/stream")
    def stream_route() -> StreamingResponse:
        def body() -> Iterator[bytes]:
            yield b"first line\n"
            yield two_calls_on_a_one_call_budget(client).encode()

        return StreamingResponse(body(), media_type="text/plain")

    app.add_middleware(TollmeterMiddleware, **options)
    return app


def test_asgi_budget_exhausted_in_the_request_answers_429(
    llm_client: openai.OpenAI, fake_llm: Any
) -> None:
    before = len(fake_llm.requests())
    app = fastapi_app(llm_client, quota_response=True, default_retry_after=30)
    with TestClient(app) as http:
        answer = http.get("/ask", headers={"x-tenant-id": "acme"})

    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "30"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "error": "quota exceeded",
        "code": "budget_exceeded",
        "limit": "budget:calls",
        "tenant": "acme",
        "retry_after": 30,
    }
    # The first call went out, the refused one never did.
    assert len(fake_llm.requests()) == before + 1


def test_asgi_fail_closed_guard_answers_503(llm_client: openai.OpenAI, closed_guard: Guard) -> None:
    with TestClient(fastapi_app(llm_client, quota_response=True)) as http:
        answer = http.get("/one")

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "60"
    assert answer.json() == {
        "error": "usage limits unavailable",
        "code": "guard_unavailable",
        "limit": None,
        "tenant": None,
        "retry_after": 60,
    }


def test_asgi_off_by_default_the_error_reaches_the_server(llm_client: openai.OpenAI) -> None:
    with TestClient(fastapi_app(llm_client)) as http, pytest.raises(BudgetExceeded):
        http.get("/ask")


class Server:
    """An ASGI app served by uvicorn on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])), daemon=True
        )
        self._thread.start()
        waiting = threading.Event()
        while not self._server.started and self._thread.is_alive():
            waiting.wait(0.01)
        assert self._server.started

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def test_asgi_stream_failing_mid_body_is_cut_not_turned_into_429(
    llm_client: openai.OpenAI,
) -> None:
    server = Server(fastapi_app(llm_client, quota_response=True))
    try:
        received: list[bytes] = []
        with (
            httpx.Client(base_url=server.url, timeout=10) as http,
            http.stream("GET", "/stream") as answer,
        ):
            # The status line went out with the first chunk.
            assert answer.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                received.extend(answer.iter_raw())
        assert b"".join(received) == b"first line\n"
    finally:
        server.close()


def flask_app(client: openai.OpenAI, *, handlers: bool) -> tuple[Flask, TollmeterWSGIMiddleware]:
    app = Flask(__name__)

    @app.get("/ask")
    def ask_route() -> dict[str, str]:
        return {"id": two_calls_on_a_one_call_budget(client)}

    middleware = TollmeterWSGIMiddleware(app.wsgi_app, quota_response=True)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    if handlers:
        app.register_error_handler(QuotaExceeded, middleware.limit_response)
        app.register_error_handler(BudgetExceeded, middleware.limit_response)
    return app, middleware


def test_flask_budget_exhausted_answers_429_through_its_error_handler(
    llm_client: openai.OpenAI, fake_llm: Any
) -> None:
    before = len(fake_llm.requests())
    app, _ = flask_app(llm_client, handlers=True)
    answer = app.test_client().get("/ask", headers={"x-tenant-id": "initech"})

    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "60"
    assert answer.get_json() == {
        "error": "quota exceeded",
        "code": "budget_exceeded",
        "limit": "budget:calls",
        "tenant": "initech",
        "retry_after": 60,
    }
    assert len(fake_llm.requests()) == before + 1


def test_flask_without_the_handler_keeps_its_own_500(llm_client: openai.OpenAI) -> None:
    app, _ = flask_app(llm_client, handlers=False)
    assert app.test_client().get("/ask").status_code == 500


def test_plain_wsgi_app_answers_429(llm_client: openai.OpenAI) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return [two_calls_on_a_one_call_budget(llm_client).encode()]

    middleware = TollmeterWSGIMiddleware(app, quota_response=True, default_retry_after=2.5)
    response = Client(middleware).get("/", headers={"x-tenant-id": "globex"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"  # whole seconds, rounded up
    assert response.get_json()["tenant"] == "globex"


def test_wsgi_error_after_start_response_replaces_its_status(
    llm_client: openai.OpenAI,
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [two_calls_on_a_one_call_budget(llm_client).encode()]

    server = make_server("127.0.0.1", 0, TollmeterWSGIMiddleware(app, quota_response=True))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.server_port}/", timeout=10)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
    assert answer.status_code == 429
    assert answer.json()["code"] == "budget_exceeded"


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "60", True])
def test_bad_default_retry_after_raises(value: Any) -> None:
    with pytest.raises(ValueError, match="default_retry_after"):
        TollmeterWSGIMiddleware(lambda e, s: [], default_retry_after=value)
    with pytest.raises(ValueError, match="default_retry_after"):
        TollmeterMiddleware(_noop_asgi, default_retry_after=value)


async def _noop_asgi(scope: Any, receive: Any, send: Any) -> None:
    del scope, receive, send
