"""Wrapper factories for ``Messages.create`` and ``Messages.stream`` (sync and async).

One span per call, whichever of two sources it comes from:

- The Anthropic SDK starts its own CLIENT span (``anthropic.messages.create``) for every API
  call when its tracing is on (the default; ``ANTHROPIC_OPEN_TELEMETRY=false`` or the client
  option ``open_telemetry=False`` turn it off) and the tracer provider records. tollmeter then
  starts no span of its own: a wrapper around the SDK's ``start_api_call_span`` adopts the native
  span, adds the attribution at once and, when the call is over, ``tollmeter.usage.source``,
  the finish reasons and the usage in OpenTelemetry's convention. The SDK ends its span before
  ``create`` returns (or when a stream's body ends), which is earlier than tollmeter has seen the
  response, so the SDK gets a stand-in span whose ``end()`` only records the end time; the real
  span ends, with that time, when tollmeter has finished the call (which it always does, even
  for a stream the application dropped).
- Otherwise (SDK tracing off, or no recording span) tollmeter starts its own span, named
  ``"chat {model}"``.
- When another GenAI instrumentation enabled after tollmeter has started a span for the call
  (see ``_peers``), that span is the call's: tollmeter enriches it, and the SDK's own span is
  not started at all (the hook answers ``None``, which the SDK takes as "no span").
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, cast

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._attempts import Attempts, unwatching, watching
from tollmeter.instrumentation._content import RequestContent
from tollmeter.instrumentation._guard import before_call
from tollmeter.instrumentation._peers import PeerSpan, beneath, peer_above
from tollmeter.instrumentation._proxy import SpanProxy
from tollmeter.instrumentation._safety import report_failure
from tollmeter.instrumentation._telemetry import Call, Telemetry
from tollmeter.instrumentation.anthropic import content, extract
from tollmeter.instrumentation.anthropic.wrappers import (
    AsyncMessageStreamManagerProxy,
    AsyncRawStreamProxy,
    MessageStreamManagerProxy,
    RawStreamProxy,
    finish_message,
)
from tollmeter.semconv import attributes as attrs

__all__ = ["AnthropicPatch"]

_MESSAGES_SPAN = "anthropic.messages.create"


class _SpanGate:
    """Ends a native span when tollmeter is done with it, at the SDK's end time if it has one.

    The SDK may end its span before tollmeter has seen the response (a non-streamed call) or
    only when the garbage collector drops a response body (an abandoned stream); tollmeter's
    own finish always comes, so it is the one that ends the span. What the SDK does to the span
    after that is dropped.
    """

    __slots__ = ("_end_time", "_lock", "closed", "sdk_done", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._lock = threading.Lock()
        self.sdk_done = False
        self.closed = False
        self._end_time: int | None = None

    def sdk_ended(self, end_time: int | None) -> None:
        with self._lock:
            if self.sdk_done:
                return
            self.sdk_done = True
            self._end_time = end_time if end_time is not None else time.time_ns()

    def ours_ended(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            end_time = self._end_time
        self.span.end(end_time)


class _SdkSideSpan(SpanProxy):
    """What the SDK holds: ending it records the end time; after tollmeter ends it, a no-op."""

    def __init__(self, gate: _SpanGate) -> None:
        super().__init__(gate.span)
        self._self_gate = gate

    def end(self, end_time: int | None = None) -> None:
        self._self_gate.sdk_ended(end_time)

    def is_recording(self) -> bool:
        gate = self._self_gate
        return not (gate.sdk_done or gate.closed) and bool(self.__wrapped__.is_recording())

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._self_gate.closed:
            self.__wrapped__.set_attribute(key, value)

    def set_attributes(self, attributes: Any) -> None:
        if not self._self_gate.closed:
            self.__wrapped__.set_attributes(attributes)

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        if not self._self_gate.closed:
            self.__wrapped__.set_status(*args, **kwargs)

    def add_event(self, *args: Any, **kwargs: Any) -> None:
        if not self._self_gate.closed:
            self.__wrapped__.add_event(*args, **kwargs)

    def record_exception(self, *args: Any, **kwargs: Any) -> None:
        if not self._self_gate.closed:
            self.__wrapped__.record_exception(*args, **kwargs)


class _OurSideSpan(SpanProxy):
    """What tollmeter's call holds: ending it ends the native span through the gate."""

    def __init__(self, gate: _SpanGate) -> None:
        super().__init__(gate.span)
        self._self_gate = gate

    def end(self, end_time: int | None = None) -> None:
        self._self_gate.ours_ended()


class _Pending:
    """One call being made: how to start its span, and the span once there is one."""

    __slots__ = (
        "attributes",
        "call",
        "content",
        "estimate",
        "hidden",
        "model",
        "native_seen",
        "peer",
        "quiet_native",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        model: str | None,
        attributes: dict[str, AttributeValue],
        estimate: Callable[[], int],
        content: Callable[[], RequestContent] | None,
        hidden: Callable[[], int] | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.hidden = hidden
        self.content = content
        self.model = model
        self.attributes = attributes
        self.estimate = estimate
        self.call: Call | None = None
        self.native_seen = False
        """Set when the SDK made a recording span, so that no second span is started."""
        self.quiet_native = False
        """Set when a peer's span stands for the call, so that the SDK starts none."""
        self.peer: PeerSpan | None = None
        """A peer's span found when ``stream()`` was called (it may no longer be current when
        the manager sends the request)."""

    def checked(self, kwargs: Any) -> Any:
        """``kwargs`` to call the SDK with, after the budgets and the guard (which raise when
        they refuse the call, before any request is sent)."""
        return before_call(
            self.model, self.estimate, kwargs, self.attributes, self.telemetry.guard_url
        )

    def start_own(self) -> Call:
        return self.telemetry.start(
            operation=extract.OPERATION,
            provider=extract.PROVIDER,
            request_model=self.model,
            attributes=self.attributes,
            input_estimate=self.estimate,
            content=self.content,
            peer=self.peer,
            hidden_input=self.hidden,
        )

    def adopt(self, native: Span) -> Span:
        """Adopt the SDK's span; returns the stand-in the SDK must use instead."""
        gate = _SpanGate(native)
        call = self.telemetry.adopt(
            cast(Span, _OurSideSpan(gate)),
            operation=extract.OPERATION,
            provider=extract.PROVIDER,
            request_model=self.model,
            input_estimate=self.estimate,
            content=self.content,
            hidden_input=self.hidden,
        )
        # The SDK marks only streaming calls and knows nothing of a guard's reservation id.
        native.set_attributes(self.attributes)
        # ``finish`` ends only spans the call owns; ending our stand-in ends the native span.
        call.owns_span = True
        self.call = call
        return cast(Span, _SdkSideSpan(gate))


_PENDING: ContextVar[_Pending | None] = ContextVar("tollmeter_anthropic_pending", default=None)


class _Running:
    """``with patch.running(pending, instance):`` (a class rather than a generator-based
    context manager: it runs on every call, and this form costs a fraction of one).

    With the SDK's tracing possible and no peer's span for the call, the SDK's span is
    adopted when the SDK starts it (``start_api_call_span``), and the call's retries are
    watched from here; a call whose SDK started no recording span gets its own span
    afterwards. Otherwise the call's own span (or a peer's) is current inside the block, and
    the SDK is kept from starting one of its own.
    """

    __slots__ = ("_activation", "_attempts", "_native", "_pending", "_token", "_watched")

    def __init__(self, pending: _Pending, native: bool) -> None:
        self._pending = pending
        self._native = native
        self._attempts: Attempts | None = None
        self._token: Token[_Pending | None] | None = None
        self._watched: Token[Attempts | None] | None = None
        self._activation: AbstractContextManager[Span] | None = None

    def __enter__(self) -> None:
        pending = self._pending
        peer = pending.peer
        if peer is not None and not peer.span.is_recording():
            # The peer's span covered ``stream()`` only and has ended: it is not the call's.
            peer = pending.peer = None
        if self._native and peer is None and peer_above(take=False) is None:
            # The call is made inside the request here, so its retries are watched from outside.
            self._attempts = Attempts()
            self._token = _PENDING.set(pending)
            self._watched = watching(self._attempts)
            return
        pending.call = _start_own(pending)
        if pending.call is None:
            return
        pending.quiet_native = self._native
        if self._native:
            self._token = _PENDING.set(pending)
        activation = pending.call.activate()
        try:
            activation.__enter__()
        except BaseException:
            self._reset()
            raise
        self._activation = activation

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        attempts = self._attempts
        if attempts is None:
            try:
                if self._activation is not None:
                    self._activation.__exit__(exc_type, exc, tb)
            finally:
                self._reset()
            return
        if self._watched is not None:
            unwatching(self._watched)
        self._reset()
        pending = self._pending
        if pending.call is None and not pending.native_seen:
            pending.call = _start_own(pending)
        if pending.call is not None:
            pending.call.attempts = attempts

    def _reset(self) -> None:
        if self._token is not None:
            _PENDING.reset(self._token)
            self._token = None


def _start_own(pending: _Pending) -> Call | None:
    try:
        return pending.start_own()
    except Exception as exc:
        report_failure("anthropic.start", exc)
        return None


class AnthropicPatch:
    """The wrappers installed by ``AnthropicInstrumentor``, bound to one ``Telemetry``."""

    def __init__(self, telemetry: Telemetry, *, native_hook: bool) -> None:
        self.telemetry = telemetry
        self.native_hook = native_hook

    # -- shared steps ---------------------------------------------------------------------

    def _prepare(
        self, instance: Any, kwargs: Mapping[str, Any], *, stream: bool
    ) -> _Pending | None:
        """The call's request side, or ``None`` (reported) if reading it failed."""
        try:
            client = getattr(instance, "_client", None)
            model = extract.request_model(kwargs)
            return _Pending(
                self.telemetry,
                model,
                extract.request_attributes(kwargs, client, stream=stream),
                extract.input_estimator(kwargs),
                None if self.telemetry.content is None else content.messages_request(kwargs),
                extract.hidden_input_counter(kwargs, model),
            )
        except Exception as exc:
            report_failure("anthropic.prepare", exc)
            return None

    def _native_possible(self, instance: Any) -> bool:
        if not self.native_hook:
            return False
        try:
            return getattr(getattr(instance, "_client", None), "_tracer", None) is not None
        except Exception:
            return False

    def running(self, pending: _Pending, instance: Any) -> _Running:
        """Around the SDK call: let the hook adopt a native span, or run under our own (or a
        peer's, and then keep the SDK from starting one)."""
        return _Running(pending, self._native_possible(instance))

    def failed(self, pending: _Pending, error: BaseException) -> None:
        if pending.call is not None:
            self.telemetry.finish(pending.call, usage=None, error=error)

    def _wrap_result(self, pending: _Pending, result: Any, *, is_async: bool) -> Any:
        """What the application gets: ``result`` itself, or a proxy metering its stream."""
        call = pending.call
        if call is None:
            return result
        try:
            if _is_raw_event_stream(result):
                proxy = AsyncRawStreamProxy if is_async else RawStreamProxy
                return proxy(result, self.telemetry, call, pending.model)
            if pending.attributes.get(attrs.GEN_AI_REQUEST_STREAM):
                # A raw response to a streaming request: the events are parsed by the caller,
                # later.
                finish_message(self.telemetry, call, None)
            else:
                finish_message(self.telemetry, call, _message_of(result))
        except Exception as exc:
            report_failure("anthropic.result", exc)
        return result

    # -- wrappers ---------------------------------------------------------------------------

    def create(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        pending = self._prepare(instance, kwargs, stream=bool(kwargs.get("stream")))
        if pending is None:
            return wrapped(*args, **kwargs)
        kwargs = pending.checked(kwargs)
        try:
            with self.running(pending, instance):
                result = beneath(wrapped)(*args, **kwargs)
        except BaseException as exc:
            self.failed(pending, exc)
            raise
        return self._wrap_result(pending, result, is_async=False)

    async def acreate(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        if not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        pending = self._prepare(instance, kwargs, stream=bool(kwargs.get("stream")))
        if pending is None:
            return await wrapped(*args, **kwargs)
        kwargs = pending.checked(kwargs)
        try:
            with self.running(pending, instance):
                result = await beneath(wrapped)(*args, **kwargs)
        except BaseException as exc:
            self.failed(pending, exc)
            raise
        return self._wrap_result(pending, result, is_async=True)

    def stream(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        pending = self._prepare(instance, kwargs, stream=True)
        if pending is None:
            return wrapped(*args, **kwargs)
        pending.peer = peer_above()
        kwargs = pending.checked(kwargs)
        return MessageStreamManagerProxy(beneath(wrapped)(*args, **kwargs), self, pending, instance)

    def astream(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        pending = self._prepare(instance, kwargs, stream=True)
        if pending is None:
            return wrapped(*args, **kwargs)
        pending.peer = peer_above()
        kwargs = pending.checked(kwargs)
        return AsyncMessageStreamManagerProxy(
            beneath(wrapped)(*args, **kwargs), self, pending, instance
        )

    def start_api_call_span(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        """Wraps the SDK's span creation so the span of an instrumented call is adopted."""
        pending = _PENDING.get()
        options = args[2] if len(args) > 2 else kwargs.get("options")
        ours = pending is not None and getattr(options, "span_name", None) == _MESSAGES_SPAN
        if ours and pending is not None and pending.quiet_native:
            return None
        span = wrapped(*args, **kwargs)
        if not ours or pending is None or pending.call is not None:
            return span
        try:
            if span is not None and span.is_recording():
                pending.native_seen = True
                return pending.adopt(span)
            pending.call = pending.start_own()
        except Exception as exc:
            report_failure("anthropic.adopt", exc)
        return span


def _is_raw_event_stream(result: object) -> bool:
    return isinstance(result, _stream_types())


@functools.cache
def _stream_types() -> tuple[type, ...]:
    # Imported on first use: this module loads through the entry point even without the SDK.
    from anthropic import AsyncStream, Stream

    return (Stream, AsyncStream)


def _message_of(result: object) -> object:
    """The ``Message`` behind ``result``.

    A raw response whose body was already read is parsed (the SDK caches the parse). One the
    application has yet to read (``with_streaming_response``) is left alone, so its usage is
    estimated: reading it here would change what the application sees.
    """
    if type(result) in _MESSAGE_TYPES:
        return result
    http_response = getattr(result, "http_response", None)
    if http_response is None:
        if len(_MESSAGE_TYPES) < _MAX_MESSAGE_TYPES:
            _MESSAGE_TYPES.add(type(result))
        return result
    parse = getattr(result, "parse", None)
    if callable(parse) and getattr(http_response, "is_closed", False):
        return parse()
    return None


# Types seen to be results themselves rather than raw responses, so that later results of the
# same type skip the ``http_response`` lookup (on a ``Message`` it fails, raising inside
# pydantic). A few per SDK; bounded all the same.
_MESSAGE_TYPES: set[type[Any]] = set()
_MAX_MESSAGE_TYPES = 256
