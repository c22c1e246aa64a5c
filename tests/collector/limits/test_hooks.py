"""Hooks against a real local HTTP receiver: signatures, retries, dead endpoints."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tollmeter.collector.limits import (
    CheckRequest,
    HooksConfig,
    LimitsService,
    Notice,
    verify_signature,
)
from tollmeter.collector.limits._hooks import HookDispatcher

SECRET = "s3cret"


class Receiver:
    """A webhook endpoint that answers ``fail_first`` requests with 503, then 204."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.requests.append((dict(self.headers.items()), body))
                    failing = len(receiver.requests) <= receiver.fail_first
                    receiver.arrived.notify_all()
                self.send_response(503 if failing else 204)
                if failing:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def _hooks(url: str, **extra) -> HooksConfig:
    return HooksConfig.from_mapping(
        [
            {
                "name": "wh",
                "type": "webhook",
                "url": url,
                "secret": SECRET,
                "backoff": "10ms",
                **extra,
            }
        ]
    )


def _wait(predicate, timeout=10.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        done.wait(0.01)
    return predicate()


def test_webhook_is_signed_and_retried_until_delivered(receiver, make_limits):
    limits = make_limits({"name": "daily", "limit": 100, "window": "day", "alert_at": [0.5]})
    service = LimitsService(limits, _hooks(receiver.url))
    service.start()
    try:
        assert service.check(CheckRequest(tenant="acme", estimated_input_tokens=60)).allowed
        requests = receiver.wait_for(3)
        assert _wait(lambda: service.hook_stats()["wh"].delivered == 1)
    finally:
        service.close()
    assert len(requests) == 3
    headers, body = requests[-1]
    assert verify_signature(
        SECRET, headers["X-Tollmeter-Timestamp"], body, headers["X-Tollmeter-Signature"]
    )
    assert not verify_signature(
        "wrong", headers["X-Tollmeter-Timestamp"], body, headers["X-Tollmeter-Signature"]
    )
    assert not verify_signature(
        SECRET, headers["X-Tollmeter-Timestamp"], body + b" ", headers["X-Tollmeter-Signature"]
    )
    payload = json.loads(body)
    assert payload["event"] == "threshold_crossed"
    assert (payload["limit"], payload["tenant"], payload["threshold"]) == ("daily", "acme", 0.5)
    # Retries are the same delivery.
    assert len({h["X-Tollmeter-Delivery"] for h, _ in requests}) == 1
    stats = service.hook_stats()["wh"]
    assert (stats.delivered, stats.retries, stats.failed) == (1, 2, 0)


def test_a_dead_webhook_does_not_block_checks_and_is_counted(make_limits, caplog):
    # Bound but never listening: connections are refused, and no other server can take the
    # port while the test runs (a closed port could be reused and answer).
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
    limits = make_limits({"name": "tiny", "limit": 1, "window": "day"})
    hooks = _hooks(dead_url, max_retries=1, queue_size=5, events=["request_denied"])
    service = LimitsService(limits, hooks)
    service.start()
    try:
        results = [
            service.check(CheckRequest(tenant="acme", estimated_input_tokens=5)) for _ in range(50)
        ]
        assert not any(r.allowed for r in results)
        assert _wait(lambda: service.hook_stats()["wh"].failed >= 2)
        assert service.hook_stats()["wh"].dropped > 0
        assert service.engine.counts()["checks_denied"] == 50
        # The outage is logged once, however many deliveries fail.
        assert len([r for r in caplog.records if "hook wh failed" in r.getMessage()]) == 1
    finally:
        service.close(timeout=1)
        dead.close()


def test_python_hook_imported_lazily_and_failures_counted(tmp_path, monkeypatch):
    (tmp_path / "hook_target.py").write_text(
        "calls = []\n\ndef hook(payload):\n    calls.append(payload)\n"
        "    if len(calls) == 1:\n        raise RuntimeError('first call fails')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = HooksConfig.from_mapping(
        [
            {"name": "py", "type": "python", "target": "hook_target:hook", "backoff": "1ms"},
            {"name": "missing", "type": "python", "target": "no_such_module_xyz:hook"},
            {"name": "log", "type": "log"},
        ]
    )
    dispatcher = HookDispatcher(config)
    dispatcher.start()
    dispatcher.emit(Notice(kind="limit_exceeded", time=1_800_000_000.0, limit="x", tenant="t"))
    assert _wait(lambda: dispatcher.stats()["py"].delivered == 1)
    dispatcher.close(timeout=10)
    import hook_target

    assert [c["event"] for c in hook_target.calls] == ["limit_exceeded", "limit_exceeded"]
    stats = dispatcher.stats()
    assert (stats["py"].delivered, stats["py"].retries) == (1, 1)
    assert (stats["missing"].delivered, stats["missing"].failed) == (0, 1)
    assert stats["log"].delivered == 1


def test_signature_rejects_stale_timestamps():
    body = b"{}"
    from tollmeter.collector.limits import sign

    signature = sign(SECRET, "1000", body)
    assert verify_signature(SECRET, "1000", body, signature, now=1100)
    assert not verify_signature(SECRET, "1000", body, signature, now=5000)
    assert not verify_signature(SECRET, "not-a-number", body, signature)
