"""Stream proxies for the Anthropic SDK, built on the shared ``_streams`` proxies.

- ``RawStreamProxy``/``AsyncRawStreamProxy`` wrap the ``Stream``/``AsyncStream`` of raw events
  that ``messages.create(stream=True)`` returns and fold every event into a
  ``StreamAccumulator``.
- ``MessageStreamManagerProxy``/``AsyncMessageStreamManagerProxy`` wrap what
  ``messages.stream()`` returns. The request is sent when the manager is entered; the
  ``MessageStream`` it yields is wrapped too, and its usage is read from the message the SDK
  accumulates itself, so ``text_stream``, ``get_final_message()`` and ``until_done()`` are
  metered even though they iterate the SDK object directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Protocol

from tollmeter.instrumentation._proxy import AnyProxy
from tollmeter.instrumentation._safety import report_failure
from tollmeter.instrumentation._streams import (
    AsyncStreamProxy,
    StreamOutcome,
    SyncStreamProxy,
    finish_with_outcome,
)
from tollmeter.instrumentation._telemetry import Call, Telemetry
from tollmeter.instrumentation.anthropic import content, extract

__all__ = [
    "AsyncMessageStreamManagerProxy",
    "AsyncRawStreamProxy",
    "MessageStreamManagerProxy",
    "RawStreamProxy",
    "finish_message",
    "message_outcome",
]


def message_outcome(message: object, model: str | None) -> StreamOutcome:
    """Outcome of a whole or partial ``Message``; partial when it has no ``stop_reason`` yet."""
    if message is None:
        return StreamOutcome()
    stop_reason = getattr(message, "stop_reason", None)
    response_id = getattr(message, "id", None)
    response_model = getattr(message, "model", None)
    usage = extract.usage_from(getattr(message, "usage", None))
    complete = usage is not None and isinstance(stop_reason, str)
    # The text is only needed for an estimate; counting it is not free.
    text = "" if complete else extract.message_text(message)
    source: extract.UsageSource = "provider"
    if usage is not None and not complete:
        # Before ``message_delta`` the output count is a placeholder: estimate it from the text.
        usage = extract.with_estimated_output(usage, text, model)
        source = "estimate"
    return StreamOutcome(
        usage=usage,
        response_model=response_model if isinstance(response_model, str) else None,
        response_id=response_id if isinstance(response_id, str) else None,
        finish_reasons=(stop_reason,) if isinstance(stop_reason, str) else (),
        output_text=text,
        source=source,
    )


def finish_message(telemetry: Telemetry, call: Call, message: object) -> None:
    """Finish a non-streamed call from the ``Message`` it returned."""
    try:
        outcome = message_outcome(message, call.request_model)
        if call.content is not None and message is not None:
            outcome.output = content.message_output(message)
    except Exception as exc:
        report_failure("anthropic.message", exc)
        outcome = StreamOutcome()
    finish_with_outcome(telemetry, call, outcome)


class _EventHandler:
    """Feeds raw stream events to an accumulator."""

    __slots__ = ("_accumulator", "_model")

    def __init__(self, model: str | None) -> None:
        self._accumulator = extract.StreamAccumulator()
        self._model = model

    def on_chunk(self, chunk: Any) -> None:
        self._accumulator.apply(chunk)

    def outcome(self) -> StreamOutcome:
        accumulator = self._accumulator
        usage, complete = accumulator.usage(self._model)
        stop_reason = accumulator.stop_reason
        return StreamOutcome(
            usage=usage,
            response_model=accumulator.response_model,
            response_id=accumulator.response_id,
            finish_reasons=(stop_reason,) if stop_reason else (),
            output_text="".join(accumulator.text),
            source="provider" if complete else "estimate",
        )


class _SnapshotHandler:
    """Reads the message a ``MessageStream`` accumulated; events need no work of ours."""

    __slots__ = ("_capture", "_model", "_stream")

    def __init__(self, stream: Any, call: Call) -> None:
        self._stream = stream
        self._model = call.request_model
        self._capture = call.content is not None

    def on_chunk(self, chunk: Any) -> None:
        return None

    def outcome(self) -> StreamOutcome:
        try:
            snapshot = self._stream.current_message_snapshot
        except AssertionError:
            # The SDK asserts that ``message_start`` arrived; nothing did.
            snapshot = None
        outcome = message_outcome(snapshot, self._model)
        if self._capture and snapshot is not None:
            outcome.output = content.message_output(snapshot)
        return outcome


class RawStreamProxy(SyncStreamProxy):
    """A ``Stream`` of raw message events."""

    def __init__(self, wrapped: Any, telemetry: Telemetry, call: Call, model: str | None) -> None:
        super().__init__(wrapped, telemetry, call, _EventHandler(model))


class AsyncRawStreamProxy(AsyncStreamProxy):
    """An ``AsyncStream`` of raw message events."""

    def __init__(self, wrapped: Any, telemetry: Telemetry, call: Call, model: str | None) -> None:
        super().__init__(wrapped, telemetry, call, _EventHandler(model))


class MessageStreamProxy(SyncStreamProxy):
    """The ``MessageStream`` yielded by a ``messages.stream()`` manager."""

    def __init__(self, wrapped: Any, telemetry: Telemetry, call: Call) -> None:
        super().__init__(wrapped, telemetry, call, _SnapshotHandler(wrapped, call))

    @property
    def text_stream(self) -> Iterator[str]:
        return self._self_texts()

    def _self_texts(self) -> Iterator[str]:
        state = self._self_state
        try:
            for text in self.__wrapped__.text_stream:
                state.on_chunk(text)
                yield text
                if state.halted is not None:
                    # A hard limit closed the stream underneath (``_stop``).
                    raise state.halted
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._self_state.finish(exc)
            raise
        self._self_state.finish()

    def until_done(self) -> None:
        self._self_finishing(self.__wrapped__.until_done)

    def get_final_message(self) -> Any:
        return self._self_finishing(self.__wrapped__.get_final_message)

    def get_final_text(self) -> str:
        return self._self_finishing(self.__wrapped__.get_final_text)  # type: ignore[no-any-return]

    def _self_finishing(self, method: Any) -> Any:
        try:
            result = method()
        except BaseException as exc:
            self._self_state.finish(exc)
            raise
        self._self_state.finish()
        return result


class AsyncMessageStreamProxy(AsyncStreamProxy):
    """The ``AsyncMessageStream`` yielded by an async ``messages.stream()`` manager."""

    def __init__(self, wrapped: Any, telemetry: Telemetry, call: Call) -> None:
        super().__init__(wrapped, telemetry, call, _SnapshotHandler(wrapped, call))

    @property
    def text_stream(self) -> AsyncIterator[str]:
        return self._self_texts()

    async def _self_texts(self) -> AsyncIterator[str]:
        state = self._self_state
        try:
            async for text in self.__wrapped__.text_stream:
                state.on_chunk(text)
                if state.halted is not None:
                    await self._self_close_halted()
                yield text
                if state.halted is not None:
                    raise state.halted
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._self_state.finish(exc)
            raise
        self._self_state.finish()

    async def until_done(self) -> None:
        await self._self_finishing(self.__wrapped__.until_done)

    async def get_final_message(self) -> Any:
        return await self._self_finishing(self.__wrapped__.get_final_message)

    async def get_final_text(self) -> str:
        return await self._self_finishing(self.__wrapped__.get_final_text)  # type: ignore[no-any-return]

    async def _self_finishing(self, method: Any) -> Any:
        try:
            result = await method()
        except BaseException as exc:
            self._self_state.finish(exc)
            raise
        self._self_state.finish()
        return result


class _Runner(Protocol):
    """The parts of ``AnthropicPatch`` a manager needs to make its request."""

    telemetry: Telemetry

    def running(self, pending: Any, instance: Any) -> Any: ...

    def failed(self, pending: Any, error: BaseException) -> None: ...


class MessageStreamManagerProxy(AnyProxy):
    """Sends the request under tollmeter's call when entered, and meters the stream it yields."""

    def __init__(self, wrapped: Any, runner: _Runner, pending: Any, instance: Any) -> None:
        super().__init__(wrapped)
        self._self_runner = runner
        self._self_pending = pending
        self._self_instance = instance
        self._self_stream: MessageStreamProxy | None = None

    def __enter__(self) -> Any:
        runner, pending = self._self_runner, self._self_pending
        try:
            with runner.running(pending, self._self_instance):
                stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            runner.failed(pending, exc)
            raise
        call = pending.call
        if call is None:
            return stream
        proxy = MessageStreamProxy(stream, runner.telemetry, call)
        self._self_stream = proxy
        return proxy

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            if self._self_stream is not None:
                self._self_stream._self_state.finish()


class AsyncMessageStreamManagerProxy(AnyProxy):
    """The async counterpart of ``MessageStreamManagerProxy``."""

    def __init__(self, wrapped: Any, runner: _Runner, pending: Any, instance: Any) -> None:
        super().__init__(wrapped)
        self._self_runner = runner
        self._self_pending = pending
        self._self_instance = instance
        self._self_stream: AsyncMessageStreamProxy | None = None

    async def __aenter__(self) -> Any:
        runner, pending = self._self_runner, self._self_pending
        try:
            with runner.running(pending, self._self_instance):
                stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            runner.failed(pending, exc)
            raise
        call = pending.call
        if call is None:
            return stream
        proxy = AsyncMessageStreamProxy(stream, runner.telemetry, call)
        self._self_stream = proxy
        return proxy

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            if self._self_stream is not None:
                self._self_stream._self_state.finish()
