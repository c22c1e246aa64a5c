"""Stream proxies finish exactly once on every way out of a stream."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tollmeter.instrumentation._streams import (
    AsyncStreamProxy,
    StreamOutcome,
    SyncStreamProxy,
    finish_open_streams,
    track_open,
    untrack,
)
from tollmeter.instrumentation._telemetry import Telemetry, Usage
from tollmeter.semconv import attributes as attrs

WaitSpans = Callable[[int], tuple[ReadableSpan, ...]]


@dataclass
class Chunk:
    text: str
    usage: int | None = None


@dataclass
class Handler:
    """Keeps the latest cumulative usage and the text, like an SDK handler does."""

    texts: list[str] = field(default_factory=list)
    usage: int | None = None

    def on_chunk(self, chunk: Chunk) -> None:
        self.texts.append(chunk.text)
        if chunk.usage is not None:
            self.usage = chunk.usage

    def outcome(self) -> StreamOutcome:
        usage = None if self.usage is None else Usage(input_tokens=5, output_tokens=self.usage)
        return StreamOutcome(usage=usage, output_text="".join(self.texts))


class FakeStream:
    """An SDK-like stream: iterator, close(), context manager."""

    def __init__(self, chunks: list[Chunk], error: BaseException | None = None) -> None:
        self._chunks = iter(chunks)
        self._error = error
        self.closed = False
        self.response = "the http response"

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        for chunk in self._chunks:
            return chunk
        if self._error is not None:
            raise self._error
        raise StopIteration

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeAsyncStream:
    def __init__(self, chunks: list[Chunk], error: BaseException | None = None) -> None:
        self._chunks = iter(chunks)
        self._error = error
        self.closed = False

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self

    async def __anext__(self) -> Chunk:
        await asyncio.sleep(0)
        for chunk in self._chunks:
            return chunk
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> FakeAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


CHUNKS = [Chunk("Hello "), Chunk("world", usage=2), Chunk("", usage=7)]


@pytest.fixture
def telemetry(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Telemetry:
    return Telemetry("tests", tracer_provider=tracer_provider, meter_provider=meter_provider)


def sync_proxy(telemetry: Telemetry, stream: Any) -> SyncStreamProxy:
    call = telemetry.start(
        operation="chat", provider="openai", request_model="gpt-4o", input_estimate=lambda: 11
    )
    return SyncStreamProxy(stream, telemetry, call, Handler())


def async_proxy(telemetry: Telemetry, stream: Any) -> AsyncStreamProxy:
    call = telemetry.start(
        operation="chat", provider="openai", request_model="gpt-4o", input_estimate=lambda: 11
    )
    return AsyncStreamProxy(stream, telemetry, call, Handler())


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_exhaustion_assigns_latest_usage(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    proxy = sync_proxy(telemetry, FakeStream(CHUNKS))
    assert [chunk.text for chunk in proxy] == ["Hello ", "world", ""]
    list(proxy)  # iterating again after the end must not finish twice
    (span,) = span_exporter.get_finished_spans()
    assert attributes_of(span)[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert attributes_of(span)[attrs.TOLLMETER_USAGE_SOURCE] == "provider"


def test_proxy_is_transparent(telemetry: Telemetry) -> None:
    stream = FakeStream(CHUNKS)
    proxy = sync_proxy(telemetry, stream)
    assert isinstance(proxy, FakeStream)
    assert proxy.response == "the http response"
    with proxy as entered:
        assert entered is proxy
    assert stream.closed


def test_span_is_not_current_during_iteration(telemetry: Telemetry) -> None:
    proxy = sync_proxy(telemetry, FakeStream(CHUNKS))
    for _ in proxy:
        assert trace.get_current_span() is trace.INVALID_SPAN


def test_stream_error_is_recorded_and_reraised_unchanged(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    error = ConnectionResetError("peer went away")
    proxy = sync_proxy(telemetry, FakeStream([Chunk("partial text")], error=error))
    with pytest.raises(ConnectionResetError) as caught:
        for _ in proxy:
            pass
    assert caught.value is error
    (span,) = span_exporter.get_finished_spans()
    attributes = attributes_of(span)
    assert attributes[attrs.ERROR_TYPE] == "ConnectionResetError"
    assert attributes[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attributes[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert attributes[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 2


def test_user_exception_in_loop_with_context_manager(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    stream = FakeStream(CHUNKS)
    error = LookupError("user code")

    def consume() -> None:
        with sync_proxy(telemetry, stream) as proxy:
            for _ in proxy:
                raise error

    with pytest.raises(LookupError) as caught:
        consume()
    assert caught.value is error
    assert stream.closed
    (span,) = span_exporter.get_finished_spans()
    assert attributes_of(span)[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert attrs.TOLLMETER_USAGE_ABANDONED not in attributes_of(span)


def test_close_finishes_once(telemetry: Telemetry, span_exporter: InMemorySpanExporter) -> None:
    stream = FakeStream(CHUNKS)
    proxy = sync_proxy(telemetry, stream)
    next(proxy)
    proxy.close()
    proxy.close()
    assert stream.closed
    (span,) = span_exporter.get_finished_spans()
    assert attributes_of(span)[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] == 2  # "Hello " estimated


def test_break_then_garbage_collection_marks_abandoned(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter, wait_spans: WaitSpans
) -> None:
    proxy = sync_proxy(telemetry, FakeStream(CHUNKS))
    for _ in proxy:
        break
    del proxy
    gc.collect()
    (span,) = wait_spans(1)
    assert attributes_of(span)[attrs.TOLLMETER_USAGE_ABANDONED] is True
    assert attributes_of(span)[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_abandoned_stream_is_released_after_finishing(
    telemetry: Telemetry, wait_spans: WaitSpans
) -> None:
    stream = FakeStream(CHUNKS)
    released = weakref.ref(stream)
    proxy = sync_proxy(telemetry, stream)
    next(proxy)
    del proxy, stream
    gc.collect()
    wait_spans(1)
    deadline = time.monotonic() + 10
    while released() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
    assert released() is None


def test_garbage_collection_inside_a_reference_cycle(
    telemetry: Telemetry, wait_spans: WaitSpans
) -> None:
    stream = FakeStream(CHUNKS)
    proxy = sync_proxy(telemetry, stream)
    stream.owner = proxy  # type: ignore[attr-defined]
    next(proxy)
    del proxy, stream
    gc.collect()
    (span,) = wait_spans(1)
    assert attributes_of(span)[attrs.TOLLMETER_USAGE_ABANDONED] is True


def test_failing_handler_does_not_break_the_stream(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    class Broken(Handler):
        def on_chunk(self, chunk: Chunk) -> None:
            raise RuntimeError("bug in tollmeter")

        def outcome(self) -> StreamOutcome:
            raise RuntimeError("bug in tollmeter")

    call = telemetry.start(operation="chat", provider="openai", request_model="m")
    proxy = SyncStreamProxy(FakeStream(CHUNKS), telemetry, call, Broken())
    assert len(list(proxy)) == 3
    (span,) = span_exporter.get_finished_spans()
    assert attributes_of(span)[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"


def test_async_exhaustion_close_and_context_manager(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    async def main() -> None:
        proxy = async_proxy(telemetry, FakeAsyncStream(CHUNKS))
        assert [chunk.text async for chunk in proxy] == ["Hello ", "world", ""]

        stream = FakeAsyncStream(CHUNKS)
        proxy = async_proxy(telemetry, stream)
        await proxy.__anext__()
        await proxy.close()
        assert stream.closed

        stream = FakeAsyncStream(CHUNKS)
        proxy = async_proxy(telemetry, stream)
        await proxy.__anext__()
        await proxy.aclose()
        assert stream.closed

        stream = FakeAsyncStream(CHUNKS)
        async with async_proxy(telemetry, stream) as entered:
            async for _ in entered:
                break
        assert stream.closed

    asyncio.run(main())
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 4
    assert [attributes_of(s)[attrs.TOLLMETER_USAGE_SOURCE] for s in spans] == [
        "provider",
        "estimate",
        "estimate",
        "estimate",
    ]


def test_async_error_is_reraised_unchanged(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    error = TimeoutError("slow")

    async def main() -> None:
        async for _ in async_proxy(telemetry, FakeAsyncStream([Chunk("x")], error=error)):
            pass

    with pytest.raises(TimeoutError) as caught:
        asyncio.run(main())
    assert caught.value is error
    (span,) = span_exporter.get_finished_spans()
    assert attributes_of(span)[attrs.ERROR_TYPE] == "TimeoutError"


def test_async_break_then_gc_marks_abandoned(telemetry: Telemetry, wait_spans: WaitSpans) -> None:
    async def main() -> None:
        proxy = async_proxy(telemetry, FakeAsyncStream(CHUNKS))
        async for _ in proxy:
            break
        del proxy
        gc.collect()

    asyncio.run(main())
    (span,) = wait_spans(1)
    assert attributes_of(span)[attrs.TOLLMETER_USAGE_ABANDONED] is True


def test_exit_sweep_ends_open_streams_as_abandoned_with_their_estimate(
    telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    kept = sync_proxy(telemetry, FakeStream(CHUNKS))
    assert next(kept).text == "Hello "
    closed = sync_proxy(telemetry, FakeStream(CHUNKS))
    closed.close()
    finish_open_streams()
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2
    (swept,) = [span for span in spans if attributes_of(span).get(attrs.TOLLMETER_USAGE_ABANDONED)]
    values = attributes_of(swept)
    assert values[attrs.TOLLMETER_USAGE_SOURCE] == "estimate"
    assert values[attrs.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert values[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    finish_open_streams()  # a second sweep finds nothing left
    assert len(span_exporter.get_finished_spans()) == 2
    assert [chunk.text for chunk in kept] == ["world", ""]  # the stream itself still works


@dataclass
class Tracked:
    abandoned: int = 0

    def abandon(self) -> None:
        self.abandoned += 1


def test_other_streams_join_the_exit_sweep_until_untracked() -> None:
    open_one, finished_one = Tracked(), Tracked()
    track_open(open_one)
    track_open(finished_one)
    untrack(finished_one)
    finish_open_streams()
    finish_open_streams()
    assert (open_one.abandoned, finished_one.abandoned) == (1, 0)
