"""Wrapper factories for ``google.genai.models.Models`` and ``AsyncModels``.

``ENDPOINTS`` lists every metered method with the names it may have, per-request method first
(see ``package``). Each wrapper:

1. calls straight through when instrumentation is suppressed;
2. runs the budgets and the guard (which may refuse the call by raising), then opens the call
   (``Telemetry.start``) with the provider (``gcp.gen_ai``, or ``gcp.vertex_ai`` for a Vertex
   AI client), the model id, ``server.*`` and an input estimate evaluated only if needed;
3. makes the span current for the request itself, records an SDK exception and re-raises it
   unchanged;
4. finishes at once for a complete response, or hands the call to a stream proxy.

Failures of tollmeter in steps 2 and 4 are contained: the application gets the SDK's result
as if tollmeter were absent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._guard import before_call
from tollmeter.instrumentation._peers import beneath
from tollmeter.instrumentation._safety import contained, report_failure
from tollmeter.instrumentation._streams import StreamOutcome, finish_with_outcome
from tollmeter.instrumentation._telemetry import Call, Telemetry
from tollmeter.instrumentation.google_genai import content, extract
from tollmeter.instrumentation.google_genai.wrappers import wrap_stream

__all__ = ["ENDPOINTS", "MODULE", "Endpoint", "async_wrapper", "sync_wrapper"]

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

MODULE = "google.genai.models"


@dataclass(frozen=True)
class Endpoint:
    """One metered SDK method, by the names it may have (the first one found is wrapped)."""

    cls: str
    methods: tuple[str, ...]
    is_async: bool
    operation: str
    streams: bool
    outcome: Callable[[Any], StreamOutcome]


def _endpoints() -> tuple[Endpoint, ...]:
    endpoints: list[Endpoint] = []
    for cls, is_async in (("Models", False), ("AsyncModels", True)):
        endpoints += [
            Endpoint(
                cls,
                ("_generate_content", "generate_content"),
                is_async,
                "generate_content",
                False,
                extract.generate_outcome,
            ),
            Endpoint(
                cls,
                ("_generate_content_stream", "generate_content_stream"),
                is_async,
                "generate_content",
                True,
                extract.generate_outcome,
            ),
            Endpoint(
                cls,
                ("_embed_content", "embed_content"),
                is_async,
                "embeddings",
                False,
                extract.embed_outcome,
            ),
        ]
    return tuple(endpoints)


ENDPOINTS = _endpoints()


def _start(
    telemetry: Telemetry,
    endpoint: Endpoint,
    instance: Any,
    kwargs: Mapping[str, Any],
    enforcement: Mapping[str, AttributeValue],
) -> Call:
    model = extract.model_id(kwargs.get("model"))
    attributes = extract.server_attributes(instance)
    attributes.update(extract.request_attributes(kwargs, stream=endpoint.streams))
    attributes.update(enforcement)
    return telemetry.start(
        operation=endpoint.operation,
        provider=extract.provider(instance),
        request_model=model,
        attributes=attributes,
        input_estimate=extract.contents_input_estimate(kwargs, model),
        hidden_input=(
            extract.hidden_input_counter(kwargs, model)
            if endpoint.operation == "generate_content"
            else None
        ),
        content=(
            content.generate_request(kwargs)
            if telemetry.content is not None and endpoint.operation == "generate_content"
            else None
        ),
    )


def _prepare(
    telemetry: Telemetry, endpoint: Endpoint, instance: Any, kwargs: dict[str, Any]
) -> tuple[Call | None, dict[str, Any]]:
    enforcement: dict[str, AttributeValue] = {}
    model = extract.model_id(kwargs.get("model"))
    estimate = extract.contents_input_estimate(kwargs, model)
    # The output limit sits in ``config``: hand the guard a flat view of the request.
    view = {"model": model, "max_output_tokens": extract.max_output_tokens(kwargs)}
    # Budgets and the guard may refuse the call (raising) before anything is sent.
    checked = before_call(model, estimate, view, enforcement, telemetry.guard_url)
    if checked.get("model") != model:
        kwargs = {**kwargs, "model": checked["model"]}
    call: Call | None = None
    with contained("google_genai.start"):
        call = _start(telemetry, endpoint, instance, kwargs, enforcement)
    return call, kwargs


def _observe(telemetry: Telemetry, endpoint: Endpoint, call: Call, result: Any) -> Any:
    """The result to hand back: ``result`` itself, or a metering proxy around a stream."""
    try:
        if endpoint.streams:
            stream = wrap_stream(result, telemetry, call)
            if stream is not None:
                return stream
        outcome = endpoint.outcome(result)
        if call.content is not None and not endpoint.streams:
            outcome.output = content.generate_output(result)
        finish_with_outcome(telemetry, call, outcome)
    except Exception as exc:
        report_failure("google_genai.observe", exc)
        telemetry.finish(call, usage=None)
    return result


def sync_wrapper(telemetry: Telemetry, endpoint: Endpoint) -> Wrapper:
    """The ``wrapt`` wrapper metering a synchronous SDK method."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        call, kwargs = _prepare(telemetry, endpoint, instance, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        try:
            with call.activate():
                result = beneath(wrapped)(*args, **kwargs)
        except BaseException as exc:
            telemetry.finish(call, usage=None, error=exc)
            raise
        return _observe(telemetry, endpoint, call, result)

    return wrapper


def async_wrapper(telemetry: Telemetry, endpoint: Endpoint) -> Wrapper:
    """The ``wrapt`` wrapper metering an ``async`` SDK method."""

    async def wrapper(
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        call, kwargs = _prepare(telemetry, endpoint, instance, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        try:
            with call.activate():
                result = await beneath(wrapped)(*args, **kwargs)
        except BaseException as exc:
            telemetry.finish(call, usage=None, error=exc)
            raise
        return _observe(telemetry, endpoint, call, result)

    return wrapper
