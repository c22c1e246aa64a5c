"""Stream handling for the OpenAI SDK.

- ``ChatStreamHandler``, ``CompletionStreamHandler``, ``ResponsesStreamHandler``
  accumulate ``Stream``/``AsyncStream`` chunks (see ``_streams.StreamHandler``):
  the latest usage object (assigned, never summed), response id and model,
  finish reasons and the output text for the estimate.
- ``SyncStreamManagerProxy``/``AsyncStreamManagerProxy`` wrap the managers
  returned by ``chat.completions.stream()`` and ``responses.stream()``. The SDK
  builds them on top of ``create(stream=True)``, which is already metered; the
  proxies only make sure that leaving the manager (or closing the helper stream
  it yields) finishes the call at once, because the helper closes the HTTP
  response underneath the metered stream.
- ``RawResponseProxy`` wraps what ``with_raw_response``/``with_streaming_response``
  return for a stream (or an unread body): the call finishes when ``parse()``
  yields the result. A caller that reads the body another way (``iter_lines()``,
  ``json()``) gets an input-only estimate when it closes the response, or, if it
  never does, when the proxy is dropped (then marked abandoned).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tollmeter.instrumentation._proxy import AnyProxy
from tollmeter.instrumentation._safety import report_failure
from tollmeter.instrumentation._streams import (
    AsyncStreamProxy,
    MeteredProxy,
    StreamHandler,
    StreamOutcome,
    SyncStreamProxy,
    finish_stream,
    finish_with_outcome,
)
from tollmeter.instrumentation._telemetry import Call, Telemetry
from tollmeter.instrumentation.openai.extract import (
    responses_outcome,
    usage_from_completion,
)

__all__ = [
    "AsyncStreamManagerProxy",
    "ChatStreamHandler",
    "CompletionStreamHandler",
    "RawResponseProxy",
    "ResponsesStreamHandler",
    "SyncStreamManagerProxy",
    "wrap_stream",
]


class _ChoicesHandler:
    """Shared state of the chat and legacy completion handlers.

    ``on_chunk`` runs for every chunk, so it reads the SDK's typed fields directly and
    keeps the last chunk (for id and model) instead of copying fields out of each one.
    """

    __slots__ = ("finish_reasons", "last", "texts", "usage")

    def __init__(self) -> None:
        self.last: Any = None
        self.usage: Any = None
        self.finish_reasons: dict[int, str] = {}
        self.texts: list[str] = []

    def _reason(self, choice: Any) -> None:
        self.finish_reasons[getattr(choice, "index", 0) or 0] = choice.finish_reason

    def outcome(self) -> StreamOutcome:
        last = self.last
        return StreamOutcome(
            usage=usage_from_completion(self.usage),
            response_model=getattr(last, "model", None),
            response_id=getattr(last, "id", None),
            finish_reasons=[self.finish_reasons[i] for i in sorted(self.finish_reasons)],
            output_text="".join(self.texts),
        )


class ChatStreamHandler(_ChoicesHandler):
    """Accumulates ``ChatCompletionChunk`` objects."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> None:
        self.last = chunk
        usage = chunk.usage
        if usage is not None:
            # Cumulative: the latest report replaces any earlier one.
            self.usage = usage
        for choice in chunk.choices:
            delta = choice.delta
            content = delta.content
            if content:
                self.texts.append(content)
            else:
                self._rare_delta(delta)
            if choice.finish_reason:
                self._reason(choice)

    def _rare_delta(self, delta: Any) -> None:
        refusal = getattr(delta, "refusal", None)
        if refusal:
            self.texts.append(refusal)
        for call in delta.tool_calls or ():
            function = call.function
            if function is not None:
                self.texts.extend(part for part in (function.name, function.arguments) if part)


class CompletionStreamHandler(_ChoicesHandler):
    """Accumulates legacy ``Completion`` chunks."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> None:
        self.last = chunk
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
        for choice in chunk.choices:
            text = choice.text
            if text:
                self.texts.append(text)
            if choice.finish_reason:
                self._reason(choice)


_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
    }
)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamHandler:
    """Accumulates Responses API stream events; the final event carries the usage."""

    __slots__ = ("final", "response_id", "response_model", "texts")

    def __init__(self) -> None:
        self.final: Any = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.texts: list[str] = []

    def on_chunk(self, chunk: Any) -> None:
        kind = getattr(chunk, "type", None)
        if kind in _TEXT_DELTAS:
            delta = chunk.delta
            if isinstance(delta, str):
                self.texts.append(delta)
        elif kind in _FINAL_EVENTS:
            self.final = chunk.response
        elif kind == "response.created":
            response = chunk.response
            self.response_id = getattr(response, "id", None)
            self.response_model = getattr(response, "model", None)

    def outcome(self) -> StreamOutcome:
        text = "".join(self.texts)
        if self.final is None:
            return StreamOutcome(
                response_model=self.response_model,
                response_id=self.response_id,
                output_text=text,
            )
        outcome = responses_outcome(self.final)
        outcome.output_text = text
        return outcome


@functools.cache
def _stream_types() -> tuple[type[Any], type[Any]]:
    """(``openai.Stream``, ``openai.AsyncStream``), imported on first use."""
    import openai

    return openai.Stream, openai.AsyncStream


def wrap_stream(
    stream: Any, telemetry: Telemetry, call: Call, handler: Callable[[], StreamHandler]
) -> Any:
    """``stream`` behind the matching metering proxy, or ``None`` if it is not a stream."""
    sync_type, async_type = _stream_types()
    if isinstance(stream, sync_type):
        return SyncStreamProxy(stream, telemetry, call, handler())
    if isinstance(stream, async_type):
        return AsyncStreamProxy(stream, telemetry, call, handler())
    return None


class _SyncHelperStream(AnyProxy):
    """The helper stream a sync manager yields; closing it finishes the metered stream."""

    def __iter__(self) -> Any:
        return iter(self.__wrapped__)

    def __next__(self) -> Any:
        return next(self.__wrapped__)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            finish_stream(getattr(self.__wrapped__, "_raw_stream", None))

    def __enter__(self) -> _SyncHelperStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _AsyncHelperStream(AnyProxy):
    """The helper stream an async manager yields; closing it finishes the metered stream."""

    def __aiter__(self) -> Any:
        return self.__wrapped__.__aiter__()

    async def __anext__(self) -> Any:
        return await self.__wrapped__.__anext__()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            finish_stream(getattr(self.__wrapped__, "_raw_stream", None))

    async def __aenter__(self) -> _AsyncHelperStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class SyncStreamManagerProxy(AnyProxy):
    """Wraps ``ChatCompletionStreamManager``/``ResponseStreamManager``."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._self_stream: Any = None

    def __enter__(self) -> Any:
        stream = self.__wrapped__.__enter__()
        self._self_stream = stream
        return _SyncHelperStream(stream)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            finish_stream(getattr(self._self_stream, "_raw_stream", None))


class AsyncStreamManagerProxy(AnyProxy):
    """Wraps ``AsyncChatCompletionStreamManager``/``AsyncResponseStreamManager``."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._self_stream: Any = None

    async def __aenter__(self) -> Any:
        stream = await self.__wrapped__.__aenter__()
        self._self_stream = stream
        return _AsyncHelperStream(stream)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            finish_stream(getattr(self._self_stream, "_raw_stream", None))


class _NoOutcome:
    """Handler of a raw response nobody parsed: only the input can be estimated."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> None:
        return None

    def outcome(self) -> StreamOutcome:
        return StreamOutcome()


class RawResponseProxy(MeteredProxy):
    """Wraps an unparsed raw SDK response; ``parse()`` hands the call to the parsed result."""

    def __init__(
        self,
        wrapped: Any,
        telemetry: Telemetry,
        call: Call,
        *,
        handler: Callable[[], StreamHandler],
        outcome: Callable[[Any], StreamOutcome],
    ) -> None:
        super().__init__(wrapped, telemetry, call, _NoOutcome())
        self._self_telemetry = telemetry
        self._self_call = call
        self._self_handler = handler
        self._self_outcome = outcome
        self._self_parsed: dict[int, Any] = {}

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        result = self.__wrapped__.parse(*args, **kwargs)
        if inspect.isawaitable(result):
            return self._self_parse_later(result)
        return self._self_observe(result)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        """Close the response; a call whose body was never parsed finishes here (estimated)."""
        result = self.__wrapped__.close(*args, **kwargs)
        if inspect.isawaitable(result):
            return self._self_close_later(result)
        self._self_closed()
        return result

    async def _self_close_later(self, pending: Any) -> Any:
        result = await pending
        self._self_closed()
        return result

    def _self_closed(self) -> None:
        if self._self_owner:
            self._self_detach()
            self._self_state.finish()

    async def _self_parse_later(self, pending: Any) -> Any:
        return self._self_observe(await pending)

    def _self_observe(self, result: Any) -> Any:
        key = id(result)
        if key in self._self_parsed:
            return self._self_parsed[key]
        observed = result
        try:
            stream = wrap_stream(result, self._self_telemetry, self._self_call, self._self_handler)
            if stream is not None:
                observed = stream
            else:
                outcome = self._self_outcome(result)
                finish_with_outcome(self._self_telemetry, self._self_call, outcome)
        except Exception as exc:
            report_failure("openai.raw_response", exc)
            self._self_telemetry.finish(self._self_call, usage=None)
        finally:
            self._self_detach()
        # Keep the parsed object alive with its key, so that a repeated parse() (the SDK
        # caches it) returns the same metered proxy.
        self._self_parsed[key] = observed
        self._self_parsed[id(observed)] = observed
        return observed
