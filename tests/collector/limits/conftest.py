"""Helpers for limit tests: a controllable clock and config builders."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tollmeter.collector.limits import LimitEngine, LimitsConfig
from tollmeter.collector.limits._redis_engine import RedisLimitEngine


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _limits(*rules: dict[str, Any], **options: Any) -> LimitsConfig:
    return LimitsConfig.from_mapping({"rules": list(rules), **options})


@pytest.fixture
def make_limits() -> Any:
    """``make_limits(rule, ..., **options)`` -> a parsed ``LimitsConfig``."""
    return _limits


@pytest.fixture(params=["memory", "redis"])
def make_engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``make_engine(config, **kwargs)`` -> the in-process engine, then the Redis one on
    the session's redis-server: engine tests run against both, so they must agree."""
    made: list[RedisLimitEngine] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def make(config: LimitsConfig, **kwargs: Any) -> LimitEngine | RedisLimitEngine:
        if url is None:
            return LimitEngine(config, **kwargs)
        shared = dataclasses.replace(config, storage=url, redis_timeout_s=5.0)
        engine = RedisLimitEngine(shared, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


class AppServer:
    """A Starlette app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        import socket

        import uvicorn

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])), daemon=True
        )

    def __enter__(self) -> AppServer:
        self._thread.start()
        ready = threading.Event()
        for _ in range(1000):
            if self._server.started:
                break
            ready.wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


@pytest.fixture
def serve_app() -> Any:
    """``with serve_app(app) as server: server.url``: a real HTTP server for an ASGI app."""
    return AppServer
