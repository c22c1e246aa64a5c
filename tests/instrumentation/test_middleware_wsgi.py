"""``TollmeterWSGIMiddleware`` in a real Flask app served by werkzeug, calling the fake LLM
server through the real, instrumented openai SDK."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from flask import Flask, Response
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import BaseWSGIServer, make_server

from tollmeter.instrumentation import TollmeterWSGIMiddleware, attribute, current_attribution
from tollmeter.instrumentation.openai import OpenAIInstrumentor
from tollmeter.semconv import attributes as attrs

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Name one colour of autumn leaves."}]


class RemoteUserFromHeader:
    """Stands in for a server's authentication: sets ``REMOTE_USER`` from ``x-demo-user``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if "HTTP_X_DEMO_USER" in environ:
            environ["REMOTE_USER"] = environ["HTTP_X_DEMO_USER"]
        return self.app(environ, start_response)


def make_app(client: openai.OpenAI) -> Any:
    app = Flask(__name__)

    def chat() -> str:
        return client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8).id

    @app.get("/chat")
    def chat_route() -> dict[str, Any]:
        return {"id": chat(), "attribution": dict(current_attribution())}

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[str]:  # consumed by the server after the view returned
            yield "thinking\n"
            yield chat()

        return Response(body(), mimetype="text/plain")

    @app.get("/baggage")
    def outgoing_baggage() -> dict[str, str]:
        carrier: dict[str, str] = {}
        W3CBaggagePropagator().inject(carrier)
        return carrier

    app.wsgi_app = TollmeterWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, project_header="X-Project-Id", baggage=True
    )
    return RemoteUserFromHeader(app)


@pytest.fixture(scope="module")
def server(fake_llm: Any) -> Iterator[str]:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-test", max_retries=0) as client:
        running: BaseWSGIServer = make_server("127.0.0.1", 0, make_app(client), threaded=True)
        thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        yield f"http://127.0.0.1:{running.server_port}"
        running.shutdown()
        thread.join(timeout=10)
        running.server_close()


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def instrumented(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
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


def test_headers_and_remote_user_reach_the_span(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    body = http.get(
        "/chat", headers={"x-tenant-id": "acme", "x-project-id": "shop", "x-demo-user": "bob"}
    ).json()
    expected = {
        attrs.TOLLMETER_TENANT_ID: "acme",
        attrs.TOLLMETER_PROJECT_ID: "shop",
        attrs.USER_ID: "bob",
    }
    assert body["attribution"] == expected
    span = span_of(span_exporter, body["id"])
    assert {key: span[key] for key in expected} == expected


def test_streamed_body_generated_after_the_view_returns_keeps_the_attribution(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    answer = http.get("/stream", headers={"x-tenant-id": "umbrella"})
    assert answer.status_code == 200
    first, response_id = answer.text.splitlines()
    assert first == "thinking"
    assert span_of(span_exporter, response_id)[attrs.TOLLMETER_TENANT_ID] == "umbrella"


def test_concurrent_requests_do_not_share_attribution(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    tenants = [f"tenant-{n % 5}" for n in range(30)]
    paths = ["/chat", "/stream"]

    def call(n: int) -> tuple[str, str]:
        answer = http.get(paths[n % 2], headers={"x-tenant-id": tenants[n]})
        if n % 2 == 0:
            return tenants[n], answer.json()["id"]
        return tenants[n], answer.text.splitlines()[1]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(len(tenants))))
    for tenant, response_id in results:
        assert span_of(span_exporter, response_id)[attrs.TOLLMETER_TENANT_ID] == tenant


def test_attribution_travels_on_as_baggage(http: httpx.Client) -> None:
    carrier = http.get("/baggage", headers={"x-tenant-id": "acme"}).json()
    assert carrier["baggage"] == f"{attrs.TOLLMETER_TENANT_ID}=acme"


def test_downstream_service_reads_the_attribution_from_baggage(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    """A tenant set at the edge reaches the model calls of the service it calls."""
    headers: dict[str, str] = {}
    with attribute(tenant="acme", project="edge project", user="dave"):
        W3CBaggagePropagator().inject(headers)
    headers["x-project-id"] = "downstream"  # a header wins over baggage
    body = http.get("/chat", headers=headers).json()
    expected = {
        attrs.TOLLMETER_TENANT_ID: "acme",
        attrs.TOLLMETER_PROJECT_ID: "downstream",
        attrs.USER_ID: "dave",
    }
    assert body["attribution"] == expected
    span = span_of(span_exporter, body["id"])
    assert {key: span[key] for key in expected} == expected


def test_baggage_is_ignored_unless_enabled(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Mapping[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(current_attribution())
        return []

    long_value = "x" * 300
    environ = {
        "HTTP_BAGGAGE": f"{attrs.TOLLMETER_TENANT_ID}=acme,{attrs.TOLLMETER_FEATURE}={long_value},"
        "session=s1"
    }
    caplog.set_level(logging.WARNING, "tollmeter")
    TollmeterWSGIMiddleware(app)(environ, lambda *_: None)
    TollmeterWSGIMiddleware(app, baggage=True)(environ, lambda *_: None)
    assert seen == [{}, {attrs.TOLLMETER_TENANT_ID: "acme"}]
    assert f"baggage entry '{attrs.TOLLMETER_FEATURE}'" in caplog.text
    assert long_value not in caplog.text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a" * 300, "at most 256"),
        ("caf\u00e9".encode().decode("latin-1")[:-1], "not UTF-8"),  # a cut multi-byte char
    ],
)
def test_invalid_header_values_are_ignored_and_logged_once(
    value: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Mapping[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(current_attribution())
        start_response("200 OK", [])
        return [b"ok"]

    middleware = TollmeterWSGIMiddleware(app, user_header="x-user")
    caplog.set_level(logging.WARNING, "tollmeter")
    for _ in range(3):
        environ = {"HTTP_X_TENANT_ID": value, "HTTP_X_USER": "carol"}
        assert list(middleware(environ, lambda *_: None)) == [b"ok"]
    assert seen == [{attrs.USER_ID: "carol"}] * 3
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert reason in warnings[0]
    assert value not in warnings[0]


def test_hostile_header_over_real_http_is_ignored(
    http: httpx.Client, span_exporter: InMemorySpanExporter
) -> None:
    body = http.get("/chat", headers={"x-tenant-id": "x" * 5000, "x-project-id": "p"}).json()
    assert body["attribution"] == {attrs.TOLLMETER_PROJECT_ID: "p"}
    assert attrs.TOLLMETER_TENANT_ID not in span_of(span_exporter, body["id"])


def test_close_runs_inside_the_attribution_and_the_block_ends_after() -> None:
    events: list[tuple[str, Mapping[str, str]]] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            events.append(("iter", current_attribution()))
            yield b"a"
            events.append(("next", current_attribution()))
            yield b"b"

        def close(self) -> None:
            events.append(("close", current_attribution()))

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    middleware = TollmeterWSGIMiddleware(app, resolve=lambda environ: {"tenant": "acme"})
    body = middleware({}, lambda *_: None)
    assert current_attribution() == {}
    chunks = []
    for chunk in body:
        chunks.append(chunk)
        assert current_attribution() == {}  # the server's code between chunks is outside
    body.close()  # type: ignore[attr-defined]
    assert chunks == [b"a", b"b"]
    acme = {attrs.TOLLMETER_TENANT_ID: "acme"}
    assert events == [("iter", acme), ("next", acme), ("close", acme)]
    assert current_attribution() == {}


def test_application_errors_propagate_unchanged() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise LookupError("the application's own error")

    middleware = TollmeterWSGIMiddleware(app)
    with pytest.raises(LookupError, match="own error"):
        middleware({"HTTP_X_TENANT_ID": "acme"}, lambda *_: None)
    assert current_attribution() == {}


def test_without_attribution_the_response_is_untouched() -> None:
    response = [b"plain"]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return response

    assert TollmeterWSGIMiddleware(app)({}, lambda *_: None) is response
