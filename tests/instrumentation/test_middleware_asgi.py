"""``TollmeterMiddleware`` in a real FastAPI app served by uvicorn, calling the fake LLM
server through the real, instrumented openai SDK."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

from tollmeter.instrumentation import TollmeterMiddleware, current_attribution
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Name one colour of autumn leaves."}]
API_KEYS = {"key-globex": "globex"}  # a verified credential decides the tenant


class HeaderUserBackend(AuthenticationBackend):
    """Stands in for a real authentication backend: ``x-demo-user`` names the user."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-demo-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def resolve(scope: Mapping[str, Any]) -> Mapping[str, str] | None:
    headers = dict(scope["headers"])
    if b"x-explode" in headers:
        raise RuntimeError("resolver failure")
    key = headers.get(b"x-api-key", b"").decode()
    return {"tenant": API_KEYS[key], "feature": "api"} if key in API_KEYS else None


def make_app(llm_url: str) -> FastAPI:
    clients: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        clients["async"] = openai.AsyncOpenAI(
            base_url=f"{llm_url}/v1", api_key="sk-test", max_retries=0
        )
        clients["sync"] = openai.OpenAI(base_url=f"{llm_url}/v1", api_key="sk-test", max_retries=0)
        yield
        await clients["async"].close()
        clients["sync"].close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/chat")
    async def chat(pause: float = 0.0) -> dict[str, Any]:
        await asyncio.sleep(pause)  # lets concurrent requests interleave
        completion = await clients["async"].chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=8
        )
        await asyncio.sleep(pause)
        return {"id": completion.id, "attribution": dict(current_attribution())}

    @app.get("/sync-chat")
    def sync_chat() -> dict[str, Any]:  # run in the thread pool
        completion = clients["sync"].chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=8
        )
        return {"id": completion.id, "attribution": dict(current_attribution())}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"thinking\n"
            completion = await clients["async"].chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=8
            )
            yield completion.id.encode()

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/sync-stream")
    def sync_stream() -> StreamingResponse:
        def body() -> Iterator[bytes]:  # iterated in the thread pool
            yield b"thinking\n"
            completion = clients["sync"].chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=8
            )
            yield completion.id.encode()

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/baggage")
    async def outgoing_baggage(request: Request) -> dict[str, str]:
        carrier: dict[str, str] = {}
        W3CBaggagePropagator().inject(carrier)
        return carrier

    app.add_middleware(TollmeterMiddleware, project_header="x-project-id", resolve=resolve)
    # Added last, so it runs first and sets scope["user"] for the tollmeter middleware.
    app.add_middleware(AuthenticationMiddleware, backend=HeaderUserBackend())
    return app


class Server:
    """An ASGI app served by uvicorn (lifespan on) on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        )
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


@pytest.fixture(scope="module")
def server(fake_llm: Any) -> Iterator[Server]:
    running = Server(make_app(fake_llm.url))
    yield running
    running.close()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def instrumented(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Iterator[OpenAIInstrumentor]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield instrumentor
    instrumentor.uninstrument()


def span_of(exporter: InMemorySpanExporter, response_id: str) -> dict[str, Any]:
    """The attributes of the span that reported ``response_id``."""
    found = [
        dict(span.attributes or {})
        for span in exporter.get_finished_spans()
        if (span.attributes or {}).get(attrs.GEN_AI_RESPONSE_ID) == response_id
    ]
    assert len(found) == 1, response_id
    return found[0]


def test_tenant_and_project_headers_reach_the_span(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    answer = http.get("/chat", headers={"x-tenant-id": "acme", "x-project-id": "helpdesk"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["attribution"] == {
        attrs.TOLLMETER_TENANT_ID: "acme",
        attrs.TOLLMETER_PROJECT_ID: "helpdesk",
    }
    span = span_of(span_exporter, body["id"])
    assert span[attrs.TOLLMETER_TENANT_ID] == "acme"
    assert span[attrs.TOLLMETER_PROJECT_ID] == "helpdesk"


def test_sync_endpoint_in_the_thread_pool_is_attributed(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    body = http.get("/sync-chat", headers={"x-tenant-id": "initech"}).json()
    assert span_of(span_exporter, body["id"])[attrs.TOLLMETER_TENANT_ID] == "initech"


@pytest.mark.parametrize("path", ["/stream", "/sync-stream"])
def test_streamed_body_keeps_the_attribution(
    http: httpx.Client, span_exporter: InMemorySpanExporter, path: str
) -> None:
    answer = http.get(path, headers={"x-tenant-id": "umbrella"})
    assert answer.status_code == 200
    first, response_id = answer.text.splitlines()
    assert first == "thinking"
    assert span_of(span_exporter, response_id)[attrs.TOLLMETER_TENANT_ID] == "umbrella"


def test_concurrent_requests_do_not_share_attribution(
    server: Server, span_exporter: InMemorySpanExporter
) -> None:
    tenants = [f"tenant-{n % 6}" for n in range(30)]

    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            answers = await asyncio.gather(
                *(
                    client.get(
                        "/chat", params={"pause": 0.005 * (n % 3)}, headers={"x-tenant-id": t}
                    )
                    for n, t in enumerate(tenants)
                )
            )
        return [answer.json() for answer in answers]

    bodies = asyncio.run(run())
    for tenant, body in zip(tenants, bodies, strict=True):
        assert body["attribution"] == {attrs.TOLLMETER_TENANT_ID: tenant}
        assert span_of(span_exporter, body["id"])[attrs.TOLLMETER_TENANT_ID] == tenant


def test_attribution_travels_on_as_baggage(http: httpx.Client) -> None:
    carrier = http.get("/baggage", headers={"x-tenant-id": "acme"}).json()
    assert carrier["baggage"] == f"{attrs.TOLLMETER_TENANT_ID}=acme"


def test_authenticated_user_and_resolver(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    body = http.get(
        "/chat",
        headers={"x-tenant-id": "acme", "x-api-key": "key-globex", "x-demo-user": "alice"},
    ).json()
    expected = {
        attrs.TOLLMETER_TENANT_ID: "globex",  # the resolver wins over the header
        attrs.TOLLMETER_FEATURE: "api",
        attrs.USER_ID: "alice",
    }
    assert body["attribution"] == expected
    span = span_of(span_exporter, body["id"])
    assert {key: span[key] for key in expected} == expected


def test_no_attribution_without_headers(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    body = http.get("/chat").json()
    assert body["attribution"] == {}
    assert attrs.TOLLMETER_TENANT_ID not in span_of(span_exporter, body["id"])


def test_failing_resolver_never_fails_the_request(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    body = http.get("/chat", headers={"x-tenant-id": "acme", "x-explode": "1"}).json()
    assert span_of(span_exporter, body["id"])[attrs.TOLLMETER_TENANT_ID] == "acme"


@pytest.mark.parametrize(
    ("value", "reason"),
    [("a" * 257, "at most 256"), ("\t \t", "empty"), ("bad\x01value", "control")],
)
def test_invalid_header_values_are_ignored_and_logged_once(
    value: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Mapping[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_attribution())

    middleware = TollmeterMiddleware(app, project_header="x-project-id")
    scope = {
        "type": "http",
        "headers": [(b"x-tenant-id", value.encode()), (b"x-project-id", b"ok")],
    }
    caplog.set_level(logging.WARNING, "tollmeter")
    for _ in range(3):
        asyncio.run(middleware(scope, _receive, _send))
    assert seen == [{attrs.TOLLMETER_PROJECT_ID: "ok"}] * 3
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert reason in warnings[0]
    assert "x-tenant-id" in warnings[0]
    assert value not in warnings[0]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(b"x-tenant-id", b"a"), (b"X-Tenant-Id", b"b")], "sent 2 times"),
        ([(b"x-tenant-id", b"\xff\xfe")], "not UTF-8"),
    ],
)
def test_duplicate_and_undecodable_headers_are_ignored(
    headers: list[tuple[bytes, bytes]], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Mapping[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_attribution())

    caplog.set_level(logging.WARNING, "tollmeter")
    asyncio.run(TollmeterMiddleware(app)({"type": "http", "headers": headers}, _receive, _send))
    assert seen == [{}]
    assert reason in caplog.text


def test_hostile_resolver_results_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Mapping[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_attribution())

    results: list[Any] = [
        ["tenant", "acme"],
        {"tenant": 42, "project": "p"},
        {"secret": "x", "tenant": "acme"},
    ]
    caplog.set_level(logging.WARNING, "tollmeter")
    for result in results:
        middleware = TollmeterMiddleware(app, resolve=lambda _, result=result: result)
        asyncio.run(middleware({"type": "http", "headers": []}, _receive, _send))
    assert seen == [
        {},
        {attrs.TOLLMETER_PROJECT_ID: "p"},
        {attrs.TOLLMETER_TENANT_ID: "acme"},
    ]
    assert "not a mapping" in caplog.text
    assert "must be a str" in caplog.text
    assert "unknown key 'secret'" in caplog.text


def test_baggage_from_an_upstream_service_when_enabled() -> None:
    seen: list[Mapping[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_attribution())

    headers = [  # W3C Baggage allows the list to be split over several headers
        (b"baggage", f"{attrs.TOLLMETER_TENANT_ID}=acme,other=1".encode()),
        (b"baggage", f"{attrs.TOLLMETER_PROJECT_ID}=edge%20project".encode()),
        (b"x-tenant-id", b"initech"),
    ]
    scope = {"type": "http", "headers": headers}
    asyncio.run(TollmeterMiddleware(app, baggage=True)(scope, _receive, _send))
    asyncio.run(TollmeterMiddleware(app, tenant_header=None, baggage=True)(scope, _receive, _send))
    asyncio.run(TollmeterMiddleware(app, tenant_header=None)(scope, _receive, _send))
    assert seen == [
        {attrs.TOLLMETER_TENANT_ID: "initech", attrs.TOLLMETER_PROJECT_ID: "edge project"},
        {attrs.TOLLMETER_TENANT_ID: "acme", attrs.TOLLMETER_PROJECT_ID: "edge project"},
        {},
    ]


def test_application_errors_propagate_and_attribution_ends() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("the application's own error")

    middleware = TollmeterMiddleware(app)
    scope = {"type": "http", "headers": [(b"x-tenant-id", b"acme")]}
    with pytest.raises(LookupError, match="own error"):
        asyncio.run(middleware(scope, _receive, _send))
    assert current_attribution() == {}


def test_lifespan_and_other_scopes_pass_through() -> None:
    seen: list[Mapping[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_attribution())

    middleware = TollmeterMiddleware(app, resolve=lambda _: {"tenant": "acme"})
    asyncio.run(middleware({"type": "lifespan"}, _receive, _send))
    asyncio.run(middleware({"type": "websocket", "headers": []}, _receive, _send))
    assert seen == [{}, {attrs.TOLLMETER_TENANT_ID: "acme"}]


@pytest.mark.parametrize(
    "options",
    [{"tenant_header": "x tenant"}, {"project_header": ""}, {"resolve": "module:function"}],
)
def test_bad_configuration_raises(options: dict[str, Any]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(ValueError, match=next(iter(options))):
        TollmeterMiddleware(app, **options)


async def _receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _send(message: Any) -> None:
    return None
