"""Attribution: who a model call is made for.

``attribute(tenant=..., project=..., ...)`` is a context manager and a decorator
for plain and ``async`` functions (a generator's body runs after the decorated
call returns, so use a ``with`` block inside generators instead). Inside it,
every model call made through an instrumented SDK carries the attribution as
span attributes. The values are kept in two places at once:

- a context variable, read by tollmeter's instrumentors at request start;
- W3C baggage in the OpenTelemetry context (keys are the attribute names, for
  example ``tollmeter.tenant.id``), so that a configured baggage propagator
  carries them to downstream services.

``AttributionSpanProcessor`` copies the attribution onto every GenAI span
started in its scope, including spans of other instrumentations (OpenTelemetry's
GenAI instrumentations, OpenLLMetry, OpenInference, SDK-native spans): a span
counts as GenAI when, at start, it carries an attribute in the ``gen_ai.``,
``llm.`` or ``traceloop.`` namespaces or its instrumentation scope names an LLM
library. Attributes already on the span are kept.

``current_attribution()`` returns the effective attribution as a mapping from
attribute name to value: baggage received from an upstream service, overlaid by
values set locally with ``attribute()`` (the innermost block wins per key).

Values are validated when ``attribute()`` is called: each must be a ``str`` of
1 to ``MAX_VALUE_LENGTH`` characters without control characters; anything else
raises ``ValueError`` naming the argument. Baggage entries received from the
network that fail the same check are ignored.

A single ``attribute(...)`` object may be reused as a decorator from many
threads or tasks. Used as a ``with`` block, one object should be entered by one
thread or task at a time.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tollmeter.instrumentation._peers import note_started
from tollmeter.instrumentation._safety import report_failure
from tollmeter.semconv import attributes as attrs

__all__ = ["MAX_VALUE_LENGTH", "AttributionSpanProcessor", "attribute", "current_attribution"]

MAX_VALUE_LENGTH: Final = 256
"""Longest accepted attribution value, in characters."""

# Keyword argument of ``attribute()`` -> span attribute / baggage key.
_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "tenant": attrs.TOLLMETER_TENANT_ID,
        "project": attrs.TOLLMETER_PROJECT_ID,
        "feature": attrs.TOLLMETER_FEATURE,
        "workflow": attrs.TOLLMETER_WORKFLOW_ID,
        "user": attrs.USER_ID,
        "api_key_id": attrs.TOLLMETER_API_KEY_ID,
        "environment": attrs.TOLLMETER_ENVIRONMENT,
        "request_id": attrs.TOLLMETER_REQUEST_ID,
    }
)
_ATTRIBUTE_NAMES: Final = frozenset(_KEYS.values())

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
_local: ContextVar[Mapping[str, str]] = ContextVar("tollmeter_attribution", default=_EMPTY)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable attribution value, or ``None`` when it is."""
    if not isinstance(value, str):
        return f"must be a str, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_VALUE_LENGTH:
        return f"must be at most {MAX_VALUE_LENGTH} characters, got {len(value)}"
    if not value.isprintable():
        return "must not contain control or other non-printable characters"
    return None


def _validated(arguments: Mapping[str, object]) -> dict[str, str]:
    values: dict[str, str] = {}
    for argument, value in arguments.items():
        if value is None:
            continue
        problem = _problem(value)
        if problem is not None:
            raise ValueError(f"attribute({argument}=...): {problem}")
        values[_KEYS[argument]] = cast(str, value)
    return values


def current_attribution(context: Context | None = None) -> Mapping[str, str]:
    """The attribution in effect: baggage (of ``context``, default the current one) overlaid
    by the ``attribute()`` blocks around the caller."""
    local = _local.get()
    entries = baggage.get_all(context)
    if not entries:
        return local
    merged = {
        key: value
        for key, value in entries.items()
        if key in _ATTRIBUTE_NAMES and _problem(value) is None
    }
    if not merged:
        return local
    merged.update(local)
    return MappingProxyType(cast(dict[str, str], merged))


class attribute:
    """Attribute every model call in a block or function to a tenant, project, feature..."""

    __slots__ = ("_stack", "_values")

    def __init__(
        self,
        *,
        tenant: str | None = None,
        project: str | None = None,
        feature: str | None = None,
        workflow: str | None = None,
        user: str | None = None,
        api_key_id: str | None = None,
        environment: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self._values: Mapping[str, str] = MappingProxyType(
            _validated(
                {
                    "tenant": tenant,
                    "project": project,
                    "feature": feature,
                    "workflow": workflow,
                    "user": user,
                    "api_key_id": api_key_id,
                    "environment": environment,
                    "request_id": request_id,
                }
            )
        )
        self._stack: list[tuple[Token[Mapping[str, str]], object]] = []

    @property
    def values(self) -> Mapping[str, str]:
        """The attributes this block sets, keyed by attribute name."""
        return self._values

    def _enter(self) -> tuple[Token[Mapping[str, str]], object]:
        merged = dict(_local.get())
        merged.update(self._values)
        local_token = _local.set(MappingProxyType(merged))
        ctx = otel_context.get_current()
        for key, value in self._values.items():
            ctx = baggage.set_baggage(key, value, context=ctx)
        return local_token, otel_context.attach(ctx)

    @staticmethod
    def _exit(tokens: tuple[Token[Mapping[str, str]], object]) -> None:
        local_token, context_token = tokens
        otel_context.detach(cast(Any, context_token))
        _local.reset(local_token)

    def __enter__(self) -> attribute:
        self._stack.append(self._enter())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(self._stack.pop())

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        """Decorate ``func`` (plain or ``async``) so that each call runs inside this block."""
        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[_P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def run_async(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                tokens = self._enter()
                try:
                    return await async_func(*args, **kwargs)
                finally:
                    self._exit(tokens)

            return cast(Callable[_P, _R], run_async)

        @functools.wraps(func)
        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            tokens = self._enter()
            try:
                return func(*args, **kwargs)
            finally:
                self._exit(tokens)

        return run

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in self._values.items())
        return f"attribute({inner})"


_GENAI_PREFIXES: Final = ("gen_ai.", "llm.", "traceloop.")
_GENAI_SCOPE_WORDS: Final = ("openai", "anthropic", "genai", "gen_ai", "llm", "openinference")


def _is_genai(span: Span) -> bool:
    attributes = span.attributes or {}
    if any(key.startswith(_GENAI_PREFIXES) for key in attributes):
        return True
    scope = span.instrumentation_scope
    name = scope.name.lower() if scope is not None else ""
    return any(word in name for word in _GENAI_SCOPE_WORDS)


_OWN_SCOPES: Final = "tollmeter.instrumentation."


class AttributionSpanProcessor(SpanProcessor):
    """Adds the attribution in effect to every GenAI span when it starts (and shows
    tollmeter's wrappers a peer's span that is never made current: ``_peers.note_started``)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            note_started(span)
            scope = span.instrumentation_scope
            if scope is not None and scope.name.startswith(_OWN_SCOPES):
                # tollmeter's wrappers set the same attribution, read from the same context.
                return
            attribution = current_attribution(parent_context)
            if not attribution or not _is_genai(span):
                return
            present = span.attributes or {}
            missing = {key: value for key, value in attribution.items() if key not in present}
            if missing:
                span.set_attributes(missing)
        except Exception as exc:
            report_failure("attribution.span_processor", exc)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
