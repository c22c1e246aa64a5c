"""Wrapper factories for the OpenAI SDK's resource methods.

``ENDPOINTS`` lists every metered method: the class is found through the
package that re-exports it in every supported SDK layout, and a method missing
from the installed SDK is skipped. ``STREAM_HELPERS`` lists the ``.stream()``
helpers, which are not metered themselves (they call ``create(stream=True)``)
but get their managers wrapped (see ``wrappers``).

Each metered wrapper:

1. calls straight through when instrumentation is suppressed;
2. opens the call (``Telemetry.start``) with the request attributes and an
   input estimate evaluated only if the provider reports no usage;
3. makes the span current for the request itself, records an SDK exception
   and re-raises it unchanged;
4. finishes at once for a complete response, or hands the call to a stream
   proxy / raw-response proxy that finishes it later.

Any failure in steps 2 and 4 is contained: the application gets the SDK's
result as if tollmeter were absent.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._content import Message, RequestContent
from tollmeter.instrumentation._estimate import prefetch_encoding
from tollmeter.instrumentation._guard import before_call
from tollmeter.instrumentation._peers import beneath
from tollmeter.instrumentation._safety import report_failure
from tollmeter.instrumentation._streams import StreamHandler, StreamOutcome, finish_with_outcome
from tollmeter.instrumentation._telemetry import Call, Telemetry
from tollmeter.instrumentation.openai import content, extract
from tollmeter.instrumentation.openai.providers import ProviderResolver
from tollmeter.instrumentation.openai.wrappers import (
    AsyncStreamManagerProxy,
    ChatStreamHandler,
    CompletionStreamHandler,
    RawResponseProxy,
    ResponsesStreamHandler,
    SyncStreamManagerProxy,
    wrap_stream,
)

__all__ = [
    "ENDPOINTS",
    "STREAM_HELPERS",
    "Endpoint",
    "Options",
    "async_wrapper",
    "stream_helper_wrapper",
    "sync_wrapper",
]

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
InputEstimate = Callable[[Mapping[str, Any], "str | None"], Callable[[], int]]
HiddenInput = Callable[[Mapping[str, Any], "str | None"], "Callable[[], int] | None"]


@dataclass(frozen=True)
class Endpoint:
    """One metered SDK method."""

    module: str
    method: str  # "Class.method"
    is_async: bool
    operation: str
    input_estimate: InputEstimate
    outcome: Callable[[Any], StreamOutcome]
    handler: Callable[[], StreamHandler]
    injects_usage: bool = False
    content: Callable[[Mapping[str, Any]], Callable[[], RequestContent]] | None = None
    """The request's content, for content capture (``None``: nothing to capture)."""
    output: Callable[[Any], Callable[[], list[Message]]] | None = None
    """A complete result's output messages, for content capture."""
    content_handler: Callable[[], StreamHandler] | None = None
    """``handler`` assembling the reply's messages too, for content capture."""
    hidden_input: HiddenInput | None = None
    """Counts the request's instructions and tool definitions (``_hidden``)."""


@dataclass(frozen=True)
class Options:
    """What ``instrument()`` was asked for, shared by every wrapper."""

    inject_stream_usage: bool
    providers: ProviderResolver


def _prompt(key: str) -> InputEstimate:
    return lambda kwargs, model: extract.prompt_input_estimate(kwargs.get(key), model)


def _endpoints() -> tuple[Endpoint, ...]:
    chat = "openai.resources.chat.completions"
    # Older SDKs have ``parse`` only under ``beta``, posting the request itself; newer ones
    # have no such module (``client.beta.chat`` is the stable ``Chat`` there).
    beta_chat = "openai.resources.beta.chat.completions"
    responses = "openai.resources.responses"
    endpoints: list[Endpoint] = []
    for cls, is_async in (("Completions", False), ("AsyncCompletions", True)):
        for module, method in ((chat, "create"), (chat, "parse"), (beta_chat, "parse")):
            endpoints.append(
                Endpoint(
                    module,
                    f"{cls}.{method}",
                    is_async,
                    "chat",
                    extract.chat_input_estimate,
                    extract.chat_outcome,
                    ChatStreamHandler,
                    injects_usage=method == "create",
                    content=content.chat_request,
                    output=content.chat_output,
                    content_handler=content.ChatContentStreamHandler,
                    hidden_input=extract.chat_hidden_input,
                )
            )
        endpoints.append(
            Endpoint(
                "openai.resources.completions",
                f"{cls}.create",
                is_async,
                "text_completion",
                _prompt("prompt"),
                extract.completion_outcome,
                CompletionStreamHandler,
                injects_usage=True,
                content=content.prompt_request,
            )
        )
    for cls, is_async in (("Responses", False), ("AsyncResponses", True)):
        for method in ("create", "parse"):
            endpoints.append(
                Endpoint(
                    responses,
                    f"{cls}.{method}",
                    is_async,
                    "chat",
                    extract.responses_input_estimate,
                    extract.responses_outcome,
                    ResponsesStreamHandler,
                    content=content.responses_request,
                    output=content.responses_output,
                    content_handler=content.ResponsesContentStreamHandler,
                    hidden_input=extract.responses_hidden_input,
                )
            )
    for cls, is_async in (("Embeddings", False), ("AsyncEmbeddings", True)):
        endpoints.append(
            Endpoint(
                "openai.resources.embeddings",
                f"{cls}.create",
                is_async,
                "embeddings",
                _prompt("input"),
                extract.embedding_outcome,
                _EmptyHandler,
            )
        )
    return tuple(endpoints)


class _EmptyHandler:
    """Embeddings never stream; this only satisfies the ``Endpoint`` shape."""

    __slots__ = ()

    def on_chunk(self, chunk: Any) -> None:
        return None

    def outcome(self) -> StreamOutcome:
        return StreamOutcome()


ENDPOINTS = _endpoints()

# Set while a metered method runs, so that an SDK method implemented on top of another
# metered one (in some SDK versions) yields one span, not two.
_in_call: ContextVar[bool] = ContextVar("tollmeter_openai_in_call", default=False)

STREAM_HELPERS: tuple[tuple[str, str, bool], ...] = (
    ("openai.resources.chat.completions", "Completions.stream", False),
    ("openai.resources.chat.completions", "AsyncCompletions.stream", True),
    ("openai.resources.responses", "Responses.stream", False),
    ("openai.resources.responses", "AsyncResponses.stream", True),
    # Older SDKs keep these helpers under ``beta`` (their ``parse`` calls ``create``).
    ("openai.resources.beta.chat.completions", "Completions.stream", False),
    ("openai.resources.beta.chat.completions", "AsyncCompletions.stream", True),
)
"""(module, "Class.method", returns an async manager)."""


def _with_stream_usage(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` asking for a final usage chunk on a streamed request (opt-in)."""
    if kwargs.get("stream") is not True:
        return kwargs
    options = extract.given(kwargs.get("stream_options"))
    if options is None:
        return {**kwargs, "stream_options": {"include_usage": True}}
    if isinstance(options, Mapping) and "include_usage" not in options:
        return {**kwargs, "stream_options": {**options, "include_usage": True}}
    return kwargs


def _model(kwargs: Mapping[str, Any]) -> str | None:
    model = kwargs.get("model")
    return model if isinstance(model, str) else None


def _start(
    telemetry: Telemetry,
    endpoint: Endpoint,
    resolver: ProviderResolver,
    instance: Any,
    kwargs: dict[str, Any],
    model: str | None,
    enforcement: Mapping[str, AttributeValue],
) -> Call:
    client = resolver.facts(getattr(instance, "_client", None), extract.server_attributes, instance)
    attributes = extract.request_attributes(kwargs)
    attributes.update(client.server)
    if endpoint.injects_usage and extract.needs_stream_estimate(kwargs):
        prefetch_encoding(model)
    if enforcement:
        attributes.update(enforcement)
    hidden = endpoint.hidden_input
    content = None
    if telemetry.content is not None and endpoint.content is not None:
        content = endpoint.content(kwargs)
    return telemetry.start(
        operation=endpoint.operation,
        provider=client.provider,
        request_model=client.request_model(model),
        attributes=attributes,
        input_estimate=endpoint.input_estimate(kwargs, model),
        content=content,
        hidden_input=None if hidden is None else hidden(kwargs, model),
    )


def _observe(
    telemetry: Telemetry,
    endpoint: Endpoint,
    call: Call,
    result: Any,
    streamed: bool,
) -> Any:
    """The result to hand back: ``result`` itself, or a metering proxy around it."""
    try:
        handler, outcome_of = endpoint.handler, endpoint.outcome
        if call.content is not None:
            handler, outcome_of = _capturing(endpoint)
        result_object = result
        if type(result) not in _COMPLETE_TYPES:
            stream = wrap_stream(result, telemetry, call, handler)
            if stream is not None:
                return stream
            if _is_raw(result):
                if streamed or not _is_legacy(result):
                    return RawResponseProxy(
                        result, telemetry, call, handler=handler, outcome=outcome_of
                    )
                # ``with_raw_response`` already read the body: parsing is cheap and cached,
                # so the caller's own ``parse()`` returns the very same object.
                result_object = result.parse()
            elif len(_COMPLETE_TYPES) < _MAX_COMPLETE_TYPES:
                _COMPLETE_TYPES.add(type(result))
        finish_with_outcome(telemetry, call, outcome_of(result_object))
    except Exception as exc:
        report_failure("openai.observe", exc)
        telemetry.finish(call, usage=None)
    return result


# Result types seen to be complete results (neither a stream nor a raw response), so that
# later results of the same type skip those checks. A few per SDK, one per structured output
# model with ``parse()``; bounded all the same.
_COMPLETE_TYPES: set[type[Any]] = set()
_MAX_COMPLETE_TYPES = 256


def _capturing(
    endpoint: Endpoint,
) -> tuple[Callable[[], StreamHandler], Callable[[Any], StreamOutcome]]:
    """The stream handler and outcome of ``endpoint`` that also build the output messages."""
    output = endpoint.output
    if output is None:
        return endpoint.handler, endpoint.outcome

    def outcome_of(result: Any) -> StreamOutcome:
        outcome = endpoint.outcome(result)
        outcome.output = output(result)
        return outcome

    return endpoint.content_handler or endpoint.handler, outcome_of


@functools.cache
def _raw_types() -> tuple[tuple[type[Any], ...], type[Any]]:
    """(every raw response type, the already-read legacy one), imported on first use."""
    from openai import _legacy_response, _response

    legacy = _legacy_response.LegacyAPIResponse
    return (legacy, _response.BaseAPIResponse), legacy


def _is_raw(result: Any) -> bool:
    return isinstance(result, _raw_types()[0])


def _is_legacy(result: Any) -> bool:
    return isinstance(result, _raw_types()[1])


def _prepare(
    telemetry: Telemetry,
    endpoint: Endpoint,
    options: Options,
    instance: Any,
    kwargs: dict[str, Any],
) -> tuple[Call | None, dict[str, Any]]:
    # Budgets and the guard may refuse the call (raising) before anything is sent.
    enforcement: dict[str, AttributeValue] = {}
    model = _model(kwargs)
    estimate = endpoint.input_estimate
    checked = before_call(
        model, lambda: estimate(kwargs, model)(), kwargs, enforcement, telemetry.guard_url
    )
    if checked is not kwargs:  # the guard downgraded the model
        kwargs = dict(checked)
        model = _model(kwargs)
    try:
        request = kwargs
        if options.inject_stream_usage and endpoint.injects_usage:
            request = _with_stream_usage(kwargs)
        call = _start(telemetry, endpoint, options.providers, instance, request, model, enforcement)
    except Exception as exc:
        report_failure("openai.start", exc)
        return None, kwargs
    return call, request


def sync_wrapper(telemetry: Telemetry, endpoint: Endpoint, options: Options) -> Wrapper:
    """The ``wrapt`` wrapper metering a synchronous SDK method."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if _in_call.get() or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        call, kwargs = _prepare(telemetry, endpoint, options, instance, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        token = _in_call.set(True)
        try:
            with call.activate():
                result = beneath(wrapped)(*args, **kwargs)
        except BaseException as exc:
            telemetry.finish(call, usage=None, error=exc)
            raise
        finally:
            _in_call.reset(token)
        return _observe(telemetry, endpoint, call, result, kwargs.get("stream") is True)

    return wrapper


def async_wrapper(telemetry: Telemetry, endpoint: Endpoint, options: Options) -> Wrapper:
    """The ``wrapt`` wrapper metering an ``async`` SDK method."""

    async def wrapper(
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if _in_call.get() or not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        call, kwargs = _prepare(telemetry, endpoint, options, instance, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        token = _in_call.set(True)
        try:
            with call.activate():
                result = await beneath(wrapped)(*args, **kwargs)
        except BaseException as exc:
            telemetry.finish(call, usage=None, error=exc)
            raise
        finally:
            _in_call.reset(token)
        return _observe(telemetry, endpoint, call, result, kwargs.get("stream") is True)

    return wrapper


def stream_helper_wrapper(returns_async: bool) -> Wrapper:
    """The ``wrapt`` wrapper giving a ``.stream()`` helper's manager a finishing proxy."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        manager = wrapped(*args, **kwargs)
        try:
            if returns_async:
                return AsyncStreamManagerProxy(manager)
            return SyncStreamManagerProxy(manager)
        except Exception as exc:
            report_failure("openai.stream_helper", exc)
            return manager

    return wrapper
