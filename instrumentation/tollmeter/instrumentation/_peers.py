"""One span per model call when other GenAI instrumentations wrap the same SDK.

OpenTelemetry's GenAI instrumentations (openai-v2 and the ``opentelemetry-util-genai``
handler behind it, botocore's Bedrock extension), OpenLLMetry and OpenInference all wrap the
SDK methods tollmeter wraps, with ``wrapt``, so the wrappers nest in the order the
instrumentors were enabled. tollmeter handles each side of its own wrapper:

- **A peer above** (enabled after tollmeter): its wrapper has already started a span for this
  call when tollmeter's runs. When that span is current, ``peer_above()`` returns it and
  ``Telemetry.start`` adopts it (attribution, request attributes, usage) instead of opening a
  second one. A peer that records the GenAI token and duration metrics itself keeps doing so,
  and tollmeter records none for that call, so each metric is recorded once.
- **A peer below** (enabled before tollmeter): ``beneath(wrapped)`` skips the peer's wrappers
  and calls what they wrap, so the peer neither starts a span nor records a metric. Skipping,
  not OpenTelemetry's suppression key, because openai-v2 honours no key and the others honour
  only the global one, which would silence HTTP client instrumentations as well.
- **Wrappers tollmeter cannot see**: OpenInference's OpenAI instrumentation wraps the
  client's ``request`` method, below every resource method. ``quiet(context)`` marks the
  context of tollmeter's call with OpenLLMetry's own switch
  (``suppress_language_model_instrumentation``) always, and with OpenTelemetry's global
  suppression key only when that OpenInference wrapper is installed, since it honours nothing
  else.

OpenLLMetry's Anthropic instrumentation starts its span without making it current. Enabled
after tollmeter, its span is found another way: tollmeter's span processor (on every SDK
tracer provider tollmeter reports through) calls ``note_started`` as each span starts, which
keeps a span of such a peer in a context variable of the context that started it; the
wrapper below, which runs next in that very context, takes it (``peer_above``) if it is still
open and has the parent the call's own span would have. That peer writes its own counts on
its span after tollmeter has finished the call (and sums a stream's, where tollmeter assigns
the provider's cumulative ones): ``keep_attributes`` makes its later writes of the keys
tollmeter set no-ops on that one span. Enabled before tollmeter, it is skipped like any peer
below.

A peer may also end its span before tollmeter has finished the call: botocore ends a
``converse_stream`` span, and OpenInference a ``messages.stream()`` span, on the last event,
before the proxy below sees the end of the stream. ``hold_end`` turns the peer's ``end()`` of
an adopted span into a note of its end time; tollmeter ends the span with that time once it
has written its counts (it always finishes a call: see ``_streams``).
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

__all__ = [
    "PeerSpan",
    "beneath",
    "hold_end",
    "keep_attributes",
    "note_started",
    "peer_above",
    "quiet",
]

# (module or scope name prefix, records the GenAI token and duration metrics itself)
_PEERS: Final = (
    ("opentelemetry.util.genai", True),
    ("opentelemetry.instrumentation.openai_v2", True),
    ("opentelemetry.instrumentation.openai", True),
    ("opentelemetry.instrumentation.anthropic", True),
    ("opentelemetry.instrumentation.botocore", True),
    ("openinference.instrumentation", False),
)

# Peers whose span is never made current (scope names).
_NOT_CURRENT: Final = frozenset({"opentelemetry.instrumentation.anthropic"})

_started: ContextVar[Span | None] = ContextVar("tollmeter_peer_started", default=None)

# OpenLLMetry's switch (opentelemetry-semantic-conventions-ai), read with ``get_value``.
_SUPPRESS_LANGUAGE_MODEL: Final = "suppress_language_model_instrumentation"
_OPENLLMETRY_SWITCH_MODULE: Final = "opentelemetry.semconv_ai"
_OPENINFERENCE: Final = "openinference.instrumentation"


def _peer(name: str | None) -> tuple[str, bool] | None:
    if not name:
        return None
    for prefix, records_metrics in _PEERS:
        if name == prefix or name.startswith(prefix + "."):
            return prefix, records_metrics
    return None


class PeerSpan:
    """A span another instrumentation started for the call tollmeter is about to meter."""

    __slots__ = ("overwrites", "records_metrics", "span")

    def __init__(self, span: Span, records_metrics: bool, *, overwrites: bool = False) -> None:
        self.span = span
        self.records_metrics = records_metrics
        self.overwrites = overwrites
        """Whether the peer writes its own counts after tollmeter's (see ``keep_attributes``)."""


def note_started(span: Span) -> None:
    """Keep ``span`` for the call about to be made if a peer that never makes its span
    current started it (called by the span processor on every span start)."""
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None and getattr(scope, "name", None) in _NOT_CURRENT:
        _started.set(span)


def _started_for(current: Span, take: bool) -> Span | None:
    """The span ``note_started`` kept (taken once, unless ``take`` is false), if it belongs to
    the call starting now."""
    span = _started.get()
    if span is None:
        return None
    if take:
        _started.set(None)
    if not span.is_recording():
        return None
    parent = getattr(span, "parent", None)
    current_context = current.get_span_context()
    if parent is None:
        return None if current_context.is_valid else span
    return span if parent.span_id == current_context.span_id else None


def peer_above(*, take: bool = True) -> PeerSpan | None:
    """The span a peer enabled after tollmeter started for this call, if still open.

    ``take=False`` only looks: the next call still finds a span ``note_started`` kept.
    """
    span = trace.get_current_span()
    # Recording first: the usual current span, the invalid one, has no scope to look up.
    if span.is_recording():
        scope = getattr(span, "instrumentation_scope", None)
        peer = None if scope is None else _peer(getattr(scope, "name", None))
        if peer is not None:
            return PeerSpan(span, peer[1])
    started = _started_for(span, take)
    if started is None:
        return None
    return PeerSpan(started, True, overwrites=True)


def keep_attributes(span: Span, keys: frozenset[str]) -> None:
    """Ignore later writes of ``keys`` to this one ``span`` object (the peer's own writes)."""
    set_attribute, set_attributes = span.set_attribute, span.set_attributes

    def set_one(key: str, value: Any) -> None:
        if key not in keys:
            set_attribute(key, value)

    def set_many(attributes: Any) -> None:
        set_attributes({k: v for k, v in dict(attributes).items() if k not in keys})

    # An instance attribute hides the method for this span only.
    span.set_attribute = set_one  # type: ignore[method-assign]
    span.set_attributes = set_many  # type: ignore[method-assign]


def hold_end(span: Span) -> Callable[[], None]:
    """Until the returned function is called, ``span.end()`` only notes the time it was asked.

    The returned function ends the span at that time if its owner asked already, and lets a
    later ``end()`` through.
    """
    end = span.end
    lock = threading.Lock()
    asked: list[int] = []
    released = False

    def noted_end(end_time: int | None = None) -> None:
        with lock:
            if not released:
                if not asked:
                    asked.append(end_time if end_time is not None else time.time_ns())
                return
        end(end_time)

    def release() -> None:
        nonlocal released
        with lock:
            if released:
                return
            released = True
        if asked:
            end(asked[0])

    span.end = noted_end  # type: ignore[method-assign]
    return release


def _wrapper_module(wrapped: Any) -> str | None:
    if type(wrapped) in _UNWRAPPED:  # the usual case: no lookup that fails and raises
        return None
    wrapper = getattr(wrapped, "_self_wrapper", None)
    if wrapper is None:
        return None
    module = getattr(wrapper, "__module__", None)
    return module if isinstance(module, str) else type(wrapper).__module__


# Plain functions and bound methods are never a ``wrapt`` wrapper.
_UNWRAPPED: Final = frozenset({types.FunctionType, types.MethodType})


def beneath(wrapped: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapped`` without the peers' ``wrapt`` wrappers on top of it.

    A wrapper of anyone else (the application's own, say) stops the descent: what is
    under it runs as it would without tollmeter.
    """
    if type(wrapped) in _UNWRAPPED:  # the usual case: nobody else wraps the method
        return wrapped
    while _peer(_wrapper_module(wrapped)) is not None:
        inner = getattr(wrapped, "__wrapped__", None)
        if not callable(inner):
            break
        wrapped = inner
    return wrapped


def _openinference_on_requests() -> bool:
    openai = sys.modules.get("openai")
    request = getattr(getattr(openai, "OpenAI", None), "request", None)
    return (_wrapper_module(request) or "").startswith("openinference.")


def quiet(context: Context) -> Context:
    """``context`` with the switches that keep the peers below tollmeter's call silent.

    Each switch is set only when code that reads it is imported: OpenLLMetry's comes from
    its conventions package, which every OpenLLMetry instrumentation imports.
    """
    if _OPENLLMETRY_SWITCH_MODULE in sys.modules:
        context = otel_context.set_value(_SUPPRESS_LANGUAGE_MODEL, True, context)
    if _OPENINFERENCE in sys.modules and _openinference_on_requests():
        context = otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True, context)
    return context
