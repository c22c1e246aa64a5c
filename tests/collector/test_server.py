"""Collector lifecycle: start-up failures, warnings, shutdown order, in-flight requests."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tollmeter.collector import Collector, StartupError
from tollmeter.collector._components import COMPONENTS
from tollmeter.collector.storage import open_ledger

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def grpc_export(endpoint: str, payload: bytes) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(
            TRACES, response_deserializer=ExportTraceServiceResponse.FromString
        )
        return stub(payload, timeout=30)


@pytest.mark.parametrize("section", ["receivers.grpc", "receivers.http", "management"])
def test_address_in_use_is_a_startup_error_that_leaves_nothing_behind(
    make_config, busy_port, section
):
    *parents, leaf = section.split(".")
    sections: dict = {}
    node = sections
    for name in [*parents, leaf]:
        node = node.setdefault(name, {})
    node["endpoint"] = f"127.0.0.1:{busy_port}"
    config = make_config(**sections)

    async def scenario() -> None:
        collector = Collector(config)
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{busy_port}"):
            await collector.start()
        with pytest.raises(RuntimeError, match="not started"):
            _ = collector.ledger
        # Everything opened before the failure was released: the same data starts again.
        async with Collector(make_config()) as again:
            assert again.ledger.last_sequence() == 0

    asyncio.run(scenario())


def test_a_non_loopback_address_without_keys_is_warned_about(make_config, caplog, tls_files):
    # 192.0.2.1 (TEST-NET-1) is never local: binding fails, after the warning.
    config = make_config(receivers={"http": {"endpoint": "192.0.2.1:0"}})
    with (
        caplog.at_level(logging.WARNING, logger="tollmeter.collector"),
        pytest.raises(StartupError, match=r"cannot listen on 192\.0\.2\.1:0"),
    ):
        asyncio.run(Collector(config).start())
    [warning] = [r for r in caplog.records if "no admin or ingest keys" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "192.0.2.1:0" in warning.getMessage()
    [clear_text] = [r for r in caplog.records if "without TLS" in r.getMessage()]
    assert "192.0.2.1:0" in clear_text.getMessage()

    caplog.clear()
    keyed = make_config(
        receivers={"http": {"endpoint": "192.0.2.1:0"}},
        management={"ingest_keys": {"k": None}, "admin_keys": ["a"]},
    )
    with (
        caplog.at_level(logging.WARNING, logger="tollmeter.collector"),
        pytest.raises(StartupError),
    ):
        asyncio.run(Collector(keyed).start())
    assert not [r for r in caplog.records if "no admin or ingest keys" in r.getMessage()]

    caplog.clear()
    keyed_tls = make_config(
        receivers={"http": {"endpoint": "192.0.2.1:0"}},
        management={"ingest_keys": {"k": None}, "admin_keys": ["a"]},
        server={"tls": tls_files.server_section()},
    )
    with (
        caplog.at_level(logging.WARNING, logger="tollmeter.collector"),
        pytest.raises(StartupError),
    ):
        asyncio.run(Collector(keyed_tls).start())
    assert not [r for r in caplog.records if "non-loopback" in r.getMessage()]


def test_lifecycle_misuse(make_config):
    async def scenario() -> None:
        collector = Collector(make_config())
        await collector.stop()  # never started: nothing to do
        with pytest.raises(RuntimeError, match="starts once"):
            await collector.start()
        running = Collector(make_config())
        await running.start()
        with pytest.raises(RuntimeError, match="starts once"):
            await running.start()
        await running.stop()
        await running.stop()
        with pytest.raises(RuntimeError):
            _ = running.grpc_endpoint

    asyncio.run(scenario())


def test_disabled_listeners(make_config):
    async def scenario() -> None:
        config = make_config(receivers={"http": {"enabled": False}}, management={"enabled": False})
        async with Collector(config) as collector:
            assert collector.grpc_endpoint.startswith("127.0.0.1:")
            with pytest.raises(RuntimeError):
                _ = collector.http_endpoint
            with pytest.raises(RuntimeError):
                _ = collector.management_url

    asyncio.run(scenario())


class _Probe:
    """A component that records what it sees when it stops; ``fail`` or ``hang`` there."""

    def __init__(self, seen: list[str], name: str, *, fail: bool = False, hang: bool = False):
        self.name = name
        self._seen = seen
        self._fail = fail
        self._hang = hang
        self._collector: Collector | None = None

    async def start(self, collector: Collector) -> None:
        self._collector = collector

    async def stop(self, deadline: float) -> None:
        assert self._collector is not None
        pipeline = self._collector.pipeline
        ledger = self._collector.ledger
        self._seen.append(
            f"{self.name}: pipeline ready={pipeline.ready}, open={ledger is not None}"
        )
        if self._fail:
            raise RuntimeError("export target gone")
        if self._hang:
            await asyncio.Event().wait()


def test_components_stop_in_reverse_order_and_one_failure_stops_none_of_the_others(
    make_config, caplog
):
    seen: list[str] = []
    order = list(COMPONENTS)
    # Between the pipeline and the receivers, like the export: stopped before the drain.
    at = order.index(COMPONENTS[2]) + 1
    order[at:at] = [
        lambda: _Probe(seen, "before the drain"),
        lambda: _Probe(seen, "hangs", hang=True),
        lambda: _Probe(seen, "fails", fail=True),
    ]

    async def scenario() -> None:
        collector = Collector(make_config(shutdown_grace="200ms"), components=order)
        await collector.start()
        await collector.stop()
        with pytest.raises(RuntimeError, match="not started"):
            _ = collector.ledger

    with caplog.at_level(logging.ERROR, logger="tollmeter.collector"):
        asyncio.run(scenario())
    assert seen == [
        "fails: pipeline ready=True, open=True",
        "hangs: pipeline ready=True, open=True",
        "before the drain: pipeline ready=True, open=True",
    ]
    assert "error while stopping the fails" in caplog.text
    assert "the hangs did not stop in time" in caplog.text


def test_stop_commits_the_request_in_flight(gated_collector, make_spans, tmp_path):
    running, ledger = gated_collector()
    ledger.gate.clear()
    payload = encode_spans(make_spans(3)).SerializeToString()
    with ThreadPoolExecutor(2) as pool:
        sent = pool.submit(grpc_export, running.grpc_endpoint, payload)
        assert ledger.appending.wait(10)
        health = f"{running.management_url}/healthz"
        stopping = pool.submit(running.stop)
        # The listeners close while the request in flight is still held by the ledger.
        for _ in range(200):
            try:
                httpx.get(health, timeout=1)
            except httpx.TransportError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the management API still answers during shutdown")
        assert not sent.done()
        ledger.gate.set()
        assert not sent.result(30).HasField("partial_success")
        stopping.result(30)
    with open_ledger(f"sqlite:///{tmp_path / 'gated.db'}") as reopened:
        assert len(reopened.read_events(0, 100)) == 3
