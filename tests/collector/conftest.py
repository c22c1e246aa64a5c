"""Collector fixtures: a real in-process collector on free ports, and span builders.

``collector_factory(**sections)`` starts a :class:`~tollmeter.collector.Collector`
with its own event loop in a background thread (so tests stay synchronous and
talk to it over real sockets), on 127.0.0.1 port 0 for every listener, with its
ledger under ``tmp_path``. Keyword arguments are configuration sections merged
over those defaults, e.g. ``collector_factory(ingest={"max_pending_spans": 1})``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tollmeter.collector._config import Config
from tollmeter.collector._records import UsageEvent
from tollmeter.collector._server import Collector
from tollmeter.collector.storage import AppendResult, SQLiteLedger, StorageError, register_ledger

_T = TypeVar("_T")


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two configuration mappings (``extra`` wins)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class RunningCollector:
    """A collector serving from its own event loop thread."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.collector = Collector(config, **kwargs)
        self.config = config

    def call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> RunningCollector:
        self.call(self.collector.start())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self.collector.stop())
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)
                self.loop.close()

    @property
    def grpc_endpoint(self) -> str:
        return self.collector.grpc_endpoint

    @property
    def http_endpoint(self) -> str:
        return self.collector.http_endpoint

    @property
    def management_url(self) -> str:
        return self.collector.management_url

    def events(self) -> list[UsageEvent]:
        """Every usage event in the ledger, in commit order."""
        return self.collector.ledger.read_events(0, 1_000_000)


def collector_config(tmp_path: Path, **sections: Any) -> Config:
    base = {
        "collector_id": "test-collector",
        "data_dir": str(tmp_path / "data"),
        "shutdown_grace": "10s",
        "receivers": {
            "grpc": {"endpoint": "127.0.0.1:0"},
            "http": {"endpoint": "127.0.0.1:0"},
        },
        "management": {"endpoint": "127.0.0.1:0"},
    }
    return Config.from_mapping(merge(base, sections))


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """``make_config(**sections)``: the test defaults (free ports, ledger in tmp_path)
    merged with ``sections``."""

    def factory(**sections: Any) -> Config:
        return collector_config(tmp_path, **sections)

    return factory


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., RunningCollector]]:
    """Start real collectors on free ports; all are stopped after the test."""
    started: list[RunningCollector] = []

    def factory(**sections: Any) -> RunningCollector:
        signal_sink = sections.pop("signal_sink", None)
        running = RunningCollector(collector_config(tmp_path, **sections), signal_sink=signal_sink)
        started.append(running)
        return running.start()

    yield factory
    for running in reversed(started):
        running.stop()


@pytest.fixture(scope="module")
def module_collector_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RunningCollector]]:
    """``collector_factory`` for collectors that the tests of one module share."""
    started: list[RunningCollector] = []

    def factory(**sections: Any) -> RunningCollector:
        tmp_path = tmp_path_factory.mktemp("collector")
        running = RunningCollector(collector_config(tmp_path, **sections))
        started.append(running)
        return running.start()

    yield factory
    for running in reversed(started):
        running.stop()


@pytest.fixture
def collector(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    """One default collector on free ports."""
    return collector_factory()


@pytest.fixture
def make_spans() -> Callable[..., list[ReadableSpan]]:
    """Builds finished GenAI chat spans; see :func:`genai_spans`."""
    return genai_spans


@pytest.fixture
def tenant_totals() -> Callable[[Sequence[UsageEvent]], dict[str, tuple[int, int, int]]]:
    """Sums events per tenant; see :func:`totals`."""
    return totals


class GatedLedger(SQLiteLedger):
    """A real SQLite ledger whose appends wait for ``gate``, then take ``delay_s``
    (the way to hold commits back and fill the pipeline on purpose), and fail while
    ``failures_left`` is positive."""

    opened: ClassVar[list[GatedLedger]] = []

    def __init__(self, path: str | None, **options: Any) -> None:
        super().__init__(path, **options)
        self.gate = threading.Event()
        self.gate.set()
        self.appending = threading.Event()
        self.delay_s = 0.0
        self.failures_left = 0
        GatedLedger.opened.append(self)

    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        self.appending.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        time.sleep(self.delay_s)
        if self.failures_left > 0:
            self.failures_left -= 1
            raise StorageError("disk I/O error (injected by the test)")
        return super().append(events)


register_ledger("gated-sqlite", GatedLedger)


@pytest.fixture
def gated_collector(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> Callable[..., tuple[RunningCollector, GatedLedger]]:
    """``gated_collector(max_pending_spans=N, **sections)`` -> (collector, its GatedLedger)."""

    def factory(
        max_pending_spans: int = 100_000, **sections: Any
    ) -> tuple[RunningCollector, GatedLedger]:
        running = collector_factory(
            storage={"url": f"gated-sqlite:///{tmp_path / 'gated.db'}"},
            ingest={"max_pending_spans": max_pending_spans, "commit_interval": "1ms"},
            **sections,
        )
        return running, GatedLedger.opened[-1]

    return factory


def genai_spans(
    count: int,
    *,
    tenant: str | None = "tenant-a",
    input_tokens: int = 100,
    output_tokens: int = 20,
    model: str = "gpt-4o-mini",
    id_prefix: str = "resp",
    resource: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[ReadableSpan]:
    """``count`` finished chat spans as the OpenTelemetry SDK would export them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "test-app", **(resource or {})})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    for index in range(count):
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": f"{id_prefix}-{index}",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
        }
        if tenant is not None:
            attributes["tollmeter.tenant.id"] = tenant
        attributes.update(extra or {})
        with tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
        ):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


def totals(events: Sequence[UsageEvent]) -> dict[str, tuple[int, int, int]]:
    """Per tenant: (events, input tokens, output tokens)."""
    result: dict[str, tuple[int, int, int]] = {}
    for event in events:
        count, inputs, outputs = result.get(event.tenant_id, (0, 0, 0))
        result[event.tenant_id] = (
            count + 1,
            inputs + event.input_tokens,
            outputs + event.output_tokens,
        )
    return result
