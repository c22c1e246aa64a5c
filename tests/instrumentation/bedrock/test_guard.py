"""The guard before Bedrock calls, against the collector's real limits API."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from tollmeter.collector.limits import LimitsConfig, LimitsService, limits_routes
from tollmeter.instrumentation import Guard
from tollmeter.instrumentation.errors import QuotaExceeded
from tollmeter.semconv import attributes as attrs

MICRO = "amazon.nova-micro-v1:0"
LITE = "amazon.nova-lite-v1:0"
HELLO = [{"role": "user", "content": [{"text": "Name three rivers."}]}]


class LimitsServer:
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


@pytest.fixture
def guarded() -> Iterator[list[Guard]]:
    guards: list[Guard] = []
    yield guards
    for guard in guards:
        guard.uninstall()


def test_downgrade_swaps_the_model_id(client: Any, fake_llm: Any, one_span: Any, guarded: Any):
    rule = {
        "name": "premium",
        "limit": 10,
        "window": "day",
        "action": "downgrade",
        "downgrade_model": LITE,
    }
    server = LimitsServer([rule])
    try:
        guard = Guard(server.url).install()
        guarded.append(guard)
        guard.apply_downgrade = True
        client.converse(modelId=MICRO, messages=HELLO)
    finally:
        server.close()
    assert fake_llm.last().model == LITE
    values = one_span()
    assert values[attrs.GEN_AI_REQUEST_MODEL] == LITE
    assert values[attrs.TOLLMETER_RESERVATION_ID]


def test_denied_call_is_never_sent(client: Any, fake_llm: Any, guarded: Any):
    rule = {"name": "tiny", "limit": 1, "window": "day", "action": "block"}
    server = LimitsServer([rule])
    try:
        guarded.append(Guard(server.url).install())
        before = len(fake_llm.requests())
        with pytest.raises(QuotaExceeded):
            client.converse(modelId=MICRO, messages=HELLO, inferenceConfig={"maxTokens": 50})
        assert len(fake_llm.requests()) == before
    finally:
        server.close()
