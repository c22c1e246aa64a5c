"""Proxies that meter a streamed response, whatever way the caller leaves it.

``SyncStreamProxy`` and ``AsyncStreamProxy`` wrap an SDK stream (``wrapt``
object proxies: everything not overridden reaches the stream unchanged) and
finish the call's span exactly once, on the first of:

- exhaustion (``StopIteration``/``StopAsyncIteration``);
- an exception raised by the stream: recorded as ``error.type``, then re-raised
  unchanged (same object);
- ``close()``/``aclose()`` and context-manager exit;
- garbage collection of a stream the caller dropped (``break`` out of a loop
  and forget it): the span gets ``tollmeter.usage.abandoned=true``.

Each chunk is handed to a per-SDK ``StreamHandler``, which keeps the latest
provider usage (usage is cumulative, so the last report is assigned, never
summed), the response model/id, finish reasons and the output text received so
far (for the estimate used when no usage arrives). The first chunk's arrival is
recorded as time to first chunk. The span is never made current while the
caller iterates.

Finalization from the garbage collector does no OpenTelemetry work in the
finalizer itself, which could run while the same thread holds a span
processor's lock: it hands the stream's state to ``queue.SimpleQueue`` (whose
``put`` is documented as safe in ``__del__``) and a daemon thread finishes the
span.

Streams still open when the interpreter exits (dropped but not yet collected, or
held by a module-level name) are ended at exit, flagged abandoned with their
estimate: every proxy is tracked (weakly, so that a dropped one still reaches
the reaper), and an ``atexit`` handler, registered when the first stream opens,
ends what is still open or still waiting for the reaper. ``atexit`` runs
handlers in reverse order of registration, so this one runs before the
shutdown of any tracer or meter provider created before that first stream (the
OpenTelemetry SDK's own ``shutdown_on_exit``, ``opentelemetry-instrument``'s
providers, ``tollmeter.configure()``'s exit handler), whose shutdown then
exports the ended spans and their metrics. ``configure()``'s handler also calls
``finish_open_streams`` itself, for providers created after the first stream.

A call that may produce only so many output tokens (a budget or the guard's reservation,
see ``_stop``) has its chunks counted as well: when a hard limit is reached the proxy
closes the SDK stream, ends the span with what was consumed, flagged stopped, and raises
the limit's exception at the caller's next chunk.

A stream that cannot be wrapped in ``MeteredProxy`` joins the same sweep with
``track_open(item)`` (any weakly referenceable object with an ``abandon()``
method) and leaves it with ``untrack(item)`` once it has finished its call.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, cast

from tollmeter.instrumentation._content import Message
from tollmeter.instrumentation._proxy import AnyProxy
from tollmeter.instrumentation._safety import contained, report_failure
from tollmeter.instrumentation._stop import OutputWatch, take_armed
from tollmeter.instrumentation._telemetry import Call, Telemetry, Usage, UsageSource
from tollmeter.semconv import attributes as attrs

__all__ = [
    "Abandonable",
    "AsyncStreamProxy",
    "MeteredProxy",
    "StreamHandler",
    "StreamOutcome",
    "SyncStreamProxy",
    "finish_open_streams",
    "finish_stream",
    "finish_with_outcome",
    "track_open",
    "untrack",
]


@dataclass
class StreamOutcome:
    """What a stream delivered; ``usage`` is ``None`` when the provider reported none."""

    usage: Usage | None = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: Sequence[str] = ()
    output_text: str = ""
    source: UsageSource = "provider"
    """``estimate`` when ``usage`` is partly estimated (a stream cut before its final counts)."""
    output: Callable[[], list[Message]] | None = None
    """The reply as GenAI output messages, built only when content capture is on."""


def finish_with_outcome(
    telemetry: Telemetry,
    call: Call,
    outcome: StreamOutcome,
    *,
    error: BaseException | None = None,
    abandoned: bool = False,
) -> None:
    """Finish ``call`` with everything ``outcome`` says, streamed or not."""
    telemetry.finish(
        call,
        usage=outcome.usage,
        source=outcome.source,
        output_text=outcome.output_text,
        response_model=outcome.response_model,
        response_id=outcome.response_id,
        finish_reasons=outcome.finish_reasons,
        error=error,
        abandoned=abandoned,
        output=outcome.output,
    )


class StreamHandler(Protocol):
    """Per-SDK accumulator fed with every chunk of one stream."""

    def on_chunk(self, chunk: Any) -> None: ...

    def outcome(self) -> StreamOutcome: ...


class Abandonable(Protocol):
    """An open call that exit can still finish."""

    def abandon(self) -> None:
        """Finish the call now, flagged abandoned (does nothing once it is finished)."""


class _OpenCalls:
    """Open streams, held weakly (a dropped one still reaches the reaper), for the exit sweep."""

    def __init__(self) -> None:
        self._items: weakref.WeakValueDictionary[int, object] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._hooked = False

    def add(self, item: object) -> None:
        with self._lock:
            self._items[id(item)] = item
            if not self._hooked:
                self._hooked = True
                atexit.register(finish_open_streams)

    def discard(self, item: object) -> None:
        with self._lock:
            if self._items.get(id(item)) is item:
                del self._items[id(item)]

    def take_all(self) -> list[object]:
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        return items

    def after_fork(self) -> None:
        # The parent's streams are the parent's to finish; the child inherits the handler.
        self._items = weakref.WeakValueDictionary()
        self._lock = threading.Lock()


_open = _OpenCalls()


def track_open(item: Abandonable) -> None:
    """Have ``item.abandon()`` called at interpreter exit unless ``untrack(item)`` comes first.

    ``item`` is held weakly: one that is garbage collected first must finish its call itself.
    """
    _open.add(item)


def untrack(item: Abandonable) -> None:
    """Leave the exit sweep (the call finished, or another object now owns it)."""
    _open.discard(item)


def finish_open_streams() -> int:
    """End every tracked call that is still open, flagged abandoned; how many there were.

    Runs at interpreter exit, before the providers shut down. Safe to call more than once.
    """
    states = _reaper.take_pending()
    for item in _open.take_all():
        if isinstance(item, MeteredProxy):
            if item._self_owner:
                states.append(item._self_state)
        else:
            states.append(cast(Abandonable, item))
    ended = 0
    for state in states:
        with contained("stream.exit"):
            if not (isinstance(state, _StreamState) and state.call.finished):
                state.abandon()
                ended += 1
    return ended


def _ignore(chunk: Any) -> None:
    return None


class _StreamState:
    """Everything needed to finish a stream's call, shared by its proxy and the reaper.

    Kept apart from the proxy, and with slots, because attribute access on a ``wrapt``
    proxy is several times slower than on a plain object: the per-chunk path reads the
    proxy's state once and does the rest here.
    """

    __slots__ = (
        "_accumulate",
        "_close",
        "_next",
        "_waiting_first",
        "call",
        "halted",
        "handler",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        call: Call,
        handler: StreamHandler,
        next_chunk: Callable[[], Any] | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.call = call
        self.handler = handler
        self._accumulate: Callable[[Any], None] = handler.on_chunk
        self._next = next_chunk
        self._waiting_first = True
        self._close: Callable[[], object] | None = None
        self.halted: BaseException | None = None
        """The exception for the caller once a hard limit stopped the stream."""

    def watch(self, watch: OutputWatch, close: Callable[[], object] | None) -> None:
        """Count every chunk against ``watch``; ``close`` (sync streams) is the SDK's close."""
        accumulate = self._accumulate
        self._close = close
        watch.span = self.call.span

        def on_chunk(chunk: Any) -> None:
            try:
                accumulate(chunk)
            finally:
                if watch.observe(chunk):
                    self._halt(watch)

        self._accumulate = on_chunk

    def _halt(self, watch: OutputWatch) -> None:
        cap = watch.hit
        if cap is None:
            return
        error = cap.error(watch.consumed)
        self.halted = error
        with contained("stream.stop"):
            self.call.span.set_attributes(
                {
                    attrs.TOLLMETER_STREAM_LIMIT_REACHED: cap.reason,
                    attrs.TOLLMETER_STREAM_STOPPED: True,
                }
            )
        if self._close is not None:
            with contained("stream.close"):
                self._close()

        def refuse() -> Any:
            raise error

        self._next = refuse
        self.finish()

    def on_chunk(self, chunk: Any) -> None:
        if self._waiting_first:
            self._waiting_first = False
            self.telemetry.first_chunk(self.call)
        try:
            self._accumulate(chunk)
        except Exception as exc:
            # One bad chunk must not stop the caller's stream; stop accumulating instead.
            self._accumulate = _ignore
            report_failure("stream.on_chunk", exc)

    def next_chunk(self) -> Any:
        """The wrapped iterator's next chunk, metered (the sync proxies' hot path)."""
        try:
            chunk = self._next()  # type: ignore[misc]
        except StopIteration:
            self.finish()
            raise
        except BaseException as exc:
            self.finish(exc)
            raise
        if self._waiting_first:
            self._waiting_first = False
            self.telemetry.first_chunk(self.call)
        try:
            self._accumulate(chunk)
        except Exception as exc:
            self._accumulate = _ignore
            report_failure("stream.on_chunk", exc)
        return chunk

    def finish(self, error: BaseException | None = None, *, abandoned: bool = False) -> None:
        if self.call.finished:
            return
        outcome = StreamOutcome()
        with contained("stream.outcome"):
            outcome = self.handler.outcome()
        finish_with_outcome(self.telemetry, self.call, outcome, error=error, abandoned=abandoned)

    def abandon(self) -> None:
        self.finish(abandoned=True)


class _Reaper:
    """Finishes streams dropped by the caller, off the garbage collector's path."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_StreamState] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tollmeter-stream-reaper", daemon=True
                )
                self._thread.start()

    def submit(self, state: _StreamState) -> None:
        self._queue.put(state)

    def take_pending(self) -> list[Abandonable]:
        """The dropped streams the thread has not reached yet (exit finishes them itself)."""
        pending: list[Abandonable] = []
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                return pending

    def _run(self) -> None:
        while True:
            state = self._queue.get()
            with contained("stream.reaper"):
                state.finish(abandoned=True)
            # Drop the stream now: waiting for the next one would keep its connection
            # (and anything the SDK finalizes with it) alive indefinitely.
            del state

    def after_fork(self) -> None:
        # The child has a copy of the queue but not the thread; start afresh on next use.
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()


_reaper = _Reaper()
os.register_at_fork(after_in_child=_reaper.after_fork)
os.register_at_fork(after_in_child=_open.after_fork)


class MeteredProxy(AnyProxy):
    """Base of the proxies: owns the call's state and hands it to the reaper when dropped.

    Subclasses that pass the call on to another proxy call ``_self_detach()`` so that
    only the new owner finishes it.
    """

    def __init__(
        self, wrapped: Any, telemetry: Telemetry, call: Call, handler: StreamHandler
    ) -> None:
        super().__init__(wrapped)
        next_chunk = getattr(wrapped, "__next__", None)
        self._self_state = _StreamState(telemetry, call, handler, next_chunk)
        self._self_owner = True
        _reaper.ensure_running()
        _open.add(self)

    def _self_detach(self) -> None:
        self._self_owner = False
        _open.discard(self)

    def __del__(self) -> None:
        state = self._self_state
        if self._self_owner and not state.call.finished:
            _reaper.submit(state)


class SyncStreamProxy(MeteredProxy):
    """Meters a synchronous stream; see the module docstring."""

    def __iter__(self) -> SyncStreamProxy:
        return self

    def __init__(
        self, wrapped: Any, telemetry: Telemetry, call: Call, handler: StreamHandler
    ) -> None:
        super().__init__(wrapped, telemetry, call, handler)
        if self._self_state._next is None:
            self._self_state._next = iter(wrapped).__next__
        watch = take_armed()
        if watch is not None:
            self._self_state.watch(watch, getattr(wrapped, "close", None))

    def __next__(self) -> Any:
        return self._self_state.next_chunk()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_state.finish()

    def __enter__(self) -> SyncStreamProxy:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__exit__", None)
            return None if exit_ is None else exit_(exc_type, exc, tb)
        finally:
            self._self_state.finish()


class AsyncStreamProxy(MeteredProxy):
    """Meters an asynchronous stream; see the module docstring."""

    def __init__(
        self, wrapped: Any, telemetry: Telemetry, call: Call, handler: StreamHandler
    ) -> None:
        super().__init__(wrapped, telemetry, call, handler)
        watch = take_armed()
        if watch is not None:
            self._self_state.watch(watch, None)

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        state = self._self_state
        if state.halted is not None:
            raise state.halted
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            state.finish()
            raise
        except BaseException as exc:
            state.finish(exc)
            raise
        state.on_chunk(chunk)
        if state.halted is not None:
            await self._self_close_halted()
        return chunk

    async def _self_close_halted(self) -> None:
        """Close the SDK stream a hard limit stopped (the span has already ended)."""
        wrapped = self.__wrapped__
        with contained("stream.close"):
            # An async generator (Gemini's streams) has ``aclose`` only.
            closer = getattr(wrapped, "aclose", None) or wrapped.close
            await closer()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_state.finish()

    async def aclose(self) -> None:
        wrapped = self.__wrapped__
        try:
            closer = getattr(wrapped, "aclose", None) or wrapped.close
            await closer()
        finally:
            self._self_state.finish()

    async def __aenter__(self) -> AsyncStreamProxy:
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__aexit__", None)
            return None if exit_ is None else await exit_(exc_type, exc, tb)
        finally:
            self._self_state.finish()


def finish_stream(stream: object) -> None:
    """Finish the call of ``stream`` now if it is one of these proxies (else do nothing).

    For wrappers that learn a stream is closed without the proxy seeing it, such as an
    SDK helper closing the HTTP response underneath.
    """
    if isinstance(stream, MeteredProxy):
        stream._self_state.finish()
