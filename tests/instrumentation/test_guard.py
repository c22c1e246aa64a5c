"""The pre-flight guard against a real check API, and end to end with the real Anthropic SDK."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import uvicorn
from starlette.applications import Starlette

from tollmeter.collector.limits import LimitsConfig, LimitsService, limits_routes
from tollmeter.instrumentation import attribute
from tollmeter.instrumentation._guard import Guard, active_guard, environment_guard_url
from tollmeter.instrumentation.anthropic import AnthropicInstrumentor
from tollmeter.instrumentation.errors import GuardUnavailable, QuotaExceeded
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.errors import ConfigurationError, TollmeterError


class CheckServer:
    """The limits API of a ``LimitsService`` on a free loopback port."""

    def __init__(self, rules: list[dict[str, Any]]) -> None:
        self.service = LimitsService(LimitsConfig.from_mapping({"rules": rules}))
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        app = Starlette(routes=limits_routes(self.service))
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        )
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])), daemon=True
        )
        self._thread.start()
        started = threading.Event()
        while not self._server.started and self._thread.is_alive():
            started.wait(0.01)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
        self.service.close()


QUOTA = {"name": "quota", "limit": 2000, "window": "day", "action": "throttle"}


@pytest.fixture
def check_server() -> Iterator[CheckServer]:
    server = CheckServer([QUOTA])
    yield server
    server.close()


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def instrumented(tracer_provider, meter_provider) -> Iterator[None]:
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    instrumentor.uninstrument()


@pytest.fixture
def claude(fake_llm, instrumented, claude_tracing) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(False)
    ) as client:
        yield client


@pytest.fixture
def installed() -> Iterator[list[Guard]]:
    """Guards used by a test, uninstalled and closed afterwards."""
    guards: list[Guard] = []
    yield guards
    for guard in guards:
        guard.uninstall()


def _ask(client: anthropic.Anthropic, text: str = "Hello there", max_tokens: int = 50) -> Any:
    return client.messages.create(
        model="claude-test-large",
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": text}],
    )


def test_check_reserves_then_denies_with_retry_after(check_server, installed):
    guard = Guard(check_server.url)
    installed.append(guard)  # closed after the test
    attribution = {attrs.TOLLMETER_TENANT_ID: "acme"}
    decision = guard.check(
        model="gpt-4o", input_tokens=1500, max_output_tokens=400, attribution=attribution
    )
    assert decision.allowed
    assert decision.reservation_id
    with pytest.raises(QuotaExceeded) as denied:
        guard.check(model="gpt-4o", input_tokens=200, max_output_tokens=0, attribution=attribution)
    assert isinstance(denied.value, TollmeterError)
    assert denied.value.limit == "quota"
    assert denied.value.remaining == 100
    assert denied.value.retry_after is not None
    assert denied.value.retry_after > 0


def test_denied_call_never_reaches_the_provider(
    check_server, claude, fake_llm, installed, wait_spans
):
    installed.append(Guard(check_server.url).install())
    before = len(fake_llm.requests())
    with attribute(tenant="acme"):
        reply = _ask(claude, max_tokens=1500)
        assert len(fake_llm.requests()) == before + 1
        with pytest.raises(QuotaExceeded) as denied:
            _ask(claude, max_tokens=1500)
    assert len(fake_llm.requests()) == before + 1
    assert denied.value.limit == "quota"
    [span] = wait_spans(1)
    reservation = span.attributes[attrs.TOLLMETER_RESERVATION_ID]
    assert check_server.service.engine.reservation(reservation) is not None
    assert reply.usage.output_tokens > 0


def test_other_tenants_are_not_affected(check_server, claude, installed):
    installed.append(Guard(check_server.url).install())
    with attribute(tenant="acme"):
        _ask(claude, max_tokens=1980)
        with pytest.raises(QuotaExceeded):
            _ask(claude)
    with attribute(tenant="globex"):
        assert _ask(claude).content


def test_fail_open_lets_calls_through_and_logs_once_per_outage(
    dead_url, check_server, claude, installed, caplog
):
    guard = Guard(dead_url, timeout=0.5)
    installed.append(guard.install())
    caplog.set_level(logging.WARNING, logger="tollmeter.instrumentation._guard")
    for _ in range(3):
        assert _ask(claude).content
    outage = [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert len(outage) == 1
    guard.url = check_server.url + "/api/v1/check"
    assert _ask(claude).content
    assert any("again" in r.getMessage() for r in caplog.records)


def test_fail_closed_refuses_calls_when_the_collector_is_unreachable(
    dead_url, claude, fake_llm, installed
):
    installed.append(Guard(dead_url, fail_mode="closed", timeout=0.5).install())
    before = len(fake_llm.requests())
    with pytest.raises(GuardUnavailable):
        _ask(claude)
    assert len(fake_llm.requests()) == before


def test_downgrade_applies_only_when_opted_in(claude, fake_llm, installed):
    server = CheckServer(
        [
            {
                "name": "premium",
                "limit": 10,
                "window": "day",
                "action": "downgrade",
                "downgrade_model": "claude-test-small",
            }
        ]
    )
    try:
        guard = Guard(server.url).install()
        installed.append(guard)
        _ask(claude)
        assert fake_llm.last().model == "claude-test-large"
        guard.apply_downgrade = True
        _ask(claude)
        assert fake_llm.last().model == "claude-test-small"
    finally:
        server.close()


def test_guard_from_environment(monkeypatch, check_server):
    monkeypatch.setenv("TOLLMETER_GUARD_URL", check_server.url)
    monkeypatch.setenv("TOLLMETER_GUARD_FAIL_MODE", "closed")
    guard = active_guard(environment_guard_url())
    assert guard is not None
    assert guard.fail_mode == "closed"
    assert active_guard(environment_guard_url()) is guard
    monkeypatch.delenv("TOLLMETER_GUARD_URL")
    assert environment_guard_url() is None
    assert active_guard(environment_guard_url()) is None


def test_the_environment_is_read_when_instrumentation_is_enabled(
    monkeypatch, check_server, fake_llm, tracer_provider, meter_provider, claude_tracing
):
    def enabled() -> AnthropicInstrumentor:
        instrumentor = AnthropicInstrumentor()
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        return instrumentor

    monkeypatch.setenv("TOLLMETER_GUARD_URL", check_server.url)
    with anthropic.Anthropic(
        base_url=fake_llm.url, api_key="test-key", max_retries=0, **claude_tracing(False)
    ) as client:
        instrumentor = enabled()
        try:
            # Unset after enabling: this instrumentor keeps the guard it was enabled with.
            monkeypatch.delenv("TOLLMETER_GUARD_URL")
            _ask(client, max_tokens=1500)
            with pytest.raises(QuotaExceeded):
                _ask(client, max_tokens=1500)
        finally:
            instrumentor.uninstrument()
        instrumentor = enabled()
        try:
            # Enabled again with the variable unset: no guard asks the collector any more.
            assert _ask(client, max_tokens=1500).content
        finally:
            instrumentor.uninstrument()
    assert check_server.service.engine.counts()["checks_denied"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://x"},
        {"url": "http://x", "fail_mode": "maybe"},
        {"url": "http://x", "timeout": 0},
    ],
)
def test_invalid_guard_arguments(kwargs):
    with pytest.raises(ConfigurationError):
        Guard(**kwargs)


def test_a_hostile_answer_fails_open(installed, claude, serve_text):
    guard = Guard(serve_text(b"[1, 2, 3]"))
    installed.append(guard.install())
    assert _ask(claude).content
    oversized = Guard(serve_text(b'{"allowed": false, "pad": "' + b"x" * 2_000_000 + b'"}'))
    installed.append(oversized.install())
    assert _ask(claude).content


def test_connections_are_kept_alive_across_calls(check_server, installed, claude):
    guard = Guard(check_server.url).install()
    installed.append(guard)
    with attribute(tenant="keepalive"):
        for _ in range(3):
            _ask(claude, max_tokens=10)
    assert len(guard._idle) == 1


@pytest.fixture
def serve_text() -> Iterator[Any]:
    """``serve_text(body)``: a URL whose every POST answers 200 with ``body``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers: list[ThreadingHTTPServer] = []

    def serve(body: bytes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_collector_that_never_answers_times_out_and_fails_open(installed, claude):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections queue up; nothing ever reads or answers them
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        installed.append(Guard(url, timeout=0.2).install())
        assert _ask(claude).content
        installed[-1].fail_mode = "closed"
        with pytest.raises(GuardUnavailable):
            _ask(claude)


def test_configure_guard_url_wins_over_the_environment(monkeypatch, check_server, dead_url):
    from types import SimpleNamespace

    from tollmeter.instrumentation import _configure

    monkeypatch.setenv("TOLLMETER_GUARD_URL", dead_url)
    monkeypatch.setattr(_configure, "_HANDLE", SimpleNamespace(guard_url=check_server.url))
    guard = active_guard(environment_guard_url())
    assert guard is not None
    assert guard.url == check_server.url + "/api/v1/check"


def test_a_call_failing_before_any_usage_gives_its_reservation_back(
    check_server, claude, claude_tracing, dead_url, installed, wait_spans
):
    installed.append(Guard(check_server.url).install())
    with (
        anthropic.Anthropic(
            base_url=dead_url, api_key="test-key", max_retries=0, **claude_tracing(False)
        ) as unreachable,
        attribute(tenant="acme"),
    ):
        with pytest.raises(anthropic.APIConnectionError):
            _ask(unreachable, max_tokens=1500)
        [span] = wait_spans(1)
        reservation = span.attributes[attrs.TOLLMETER_RESERVATION_ID]
        # Released on a thread of its own, so that the app's exception is not delayed.
        deadline = time.monotonic() + 10
        while check_server.service.engine.reservation(reservation) is not None:
            assert time.monotonic() < deadline, "the failed call's reservation is still held"
            time.sleep(0.02)
        # The whole quota is there again for the next call.
        assert _ask(claude, max_tokens=1500).usage.output_tokens > 0
