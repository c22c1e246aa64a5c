"""The wrapper of ``botocore.client.BaseClient._make_api_call`` that meters Bedrock calls.

Every boto3 client method goes through ``_make_api_call(operation_name, api_params)`` of
the client's class, which derives from ``BaseClient``: wrapping it there covers clients
created before and after ``instrument()``, and ``uninstrument()`` restores it for all.
Calls of other services, or of bedrock-runtime operations not in ``OPERATIONS``, pass
straight through after one dictionary lookup and one attribute read.

Each metered call:

1. runs the budgets and the guard (which may refuse it, or swap ``modelId`` for a cheaper
   model) before anything is sent;
2. opens the call (``Telemetry.start``) with the model id as request model and an input
   estimate evaluated only if no usage is reported;
3. makes the span current for the request itself (botocore's retries happen inside, and
   the retry number of the attempt that answered becomes ``tollmeter.attempt``), records a
   botocore exception and re-raises it unchanged;
4. finishes at once for a Converse reply, or puts a metering proxy in the response dict
   (the ``stream`` of ``converse_stream``, the ``body`` of the ``invoke_model`` calls)
   that finishes it when the caller is done with it.

Failures of steps 2 and 4 are contained: the application gets botocore's result as if
tollmeter were absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._content import RequestContent
from tollmeter.instrumentation._estimate import prefetch_encoding
from tollmeter.instrumentation._guard import before_call
from tollmeter.instrumentation._peers import beneath
from tollmeter.instrumentation._safety import contained, report_failure
from tollmeter.instrumentation._streams import SyncStreamProxy, finish_with_outcome
from tollmeter.instrumentation._telemetry import Call, Telemetry
from tollmeter.instrumentation.bedrock import content, extract
from tollmeter.instrumentation.bedrock.wrappers import (
    BodyTee,
    ConverseStreamHandler,
    InvokeBodyHandler,
    InvokeStreamHandler,
)
from tollmeter.semconv import attributes as attrs

__all__ = ["OPERATIONS", "Operation", "Request", "make_api_call_wrapper"]

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Request:
    """What a metered call asks for, read from its parameters before it is sent."""

    model: str | None
    operation: str
    max_tokens: int | None
    estimate: Callable[[], int]
    hidden: Callable[[], int] | None = None


@dataclass(frozen=True)
class Operation:
    """One metered bedrock-runtime operation."""

    streamed: bool
    read: Callable[[Mapping[str, Any]], Request]
    observe: Callable[[Telemetry, Call, dict[str, Any], Request], None]
    content: Callable[[Mapping[str, Any]], Callable[[], RequestContent]]
    """The request's content, for content capture."""


def _model(params: Mapping[str, Any]) -> str | None:
    model = params.get("modelId")
    return model if isinstance(model, str) else None


def _read_converse(params: Mapping[str, Any]) -> Request:
    model = _model(params)
    counted = extract.estimate_model(model)
    return Request(
        model,
        attrs.GenAiOperationNameValues.CHAT,
        extract.request_max_tokens(params, {}),
        lambda: extract.converse_input_estimate(params, counted),
        extract.converse_hidden_input(params, counted),
    )


def _read_invoke(params: Mapping[str, Any]) -> Request:
    model = _model(params)
    body = extract.parse_body(params.get("body"))
    counted = extract.estimate_model(model)
    return Request(
        model,
        extract.invoke_operation(model, body),
        extract.request_max_tokens(params, body),
        lambda: extract.invoke_input_estimate(body, counted),
    )


def _observe_converse(
    telemetry: Telemetry, call: Call, result: dict[str, Any], request: Request
) -> None:
    outcome = extract.converse_outcome(result)
    if call.content is not None:
        outcome.output = content.converse_output(result)
    finish_with_outcome(telemetry, call, outcome)


def _observe_converse_stream(
    telemetry: Telemetry, call: Call, result: dict[str, Any], request: Request
) -> None:
    handler = ConverseStreamHandler(extract.estimate_model(request.model))
    result["stream"] = SyncStreamProxy(result["stream"], telemetry, call, handler)


def _observe_invoke(
    telemetry: Telemetry, call: Call, result: dict[str, Any], request: Request
) -> None:
    headers = result.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    body = result["body"]
    # Under the StreamingBody, so that its own reads, length check and errors stay as they are.
    body._raw_stream = BodyTee(body._raw_stream, telemetry, call, InvokeBodyHandler(headers))


def _observe_invoke_stream(
    telemetry: Telemetry, call: Call, result: dict[str, Any], request: Request
) -> None:
    handler = InvokeStreamHandler(extract.estimate_model(request.model))
    result["body"] = SyncStreamProxy(result["body"], telemetry, call, handler)


OPERATIONS: Mapping[str, Operation] = {
    "Converse": Operation(False, _read_converse, _observe_converse, content.converse_request),
    "ConverseStream": Operation(
        True, _read_converse, _observe_converse_stream, content.converse_request
    ),
    "InvokeModel": Operation(False, _read_invoke, _observe_invoke, content.invoke_request),
    "InvokeModelWithResponseStream": Operation(
        True, _read_invoke, _observe_invoke_stream, content.invoke_request
    ),
}
"""botocore operation name -> how to read its request and observe its result."""


def _service(client: Any) -> str | None:
    try:
        return str(client.meta.service_model.service_name)
    except AttributeError:
        return None


def _prepare(
    telemetry: Telemetry, operation: Operation, client: Any, params: dict[str, Any]
) -> tuple[Call | None, Request | None, dict[str, Any]]:
    request: Request | None = None
    with contained("bedrock.read"):
        request = operation.read(params)
    if request is None:
        return None, None, params
    enforcement: dict[str, AttributeValue] = {}
    view = {"model": request.model, "max_tokens": request.max_tokens}
    # Budgets and the guard may refuse the call (raising) before anything is sent.
    checked = before_call(request.model, request.estimate, view, enforcement, telemetry.guard_url)
    if checked.get("model") != request.model:
        params = {**params, "modelId": checked["model"]}
        with contained("bedrock.read"):
            request = operation.read(params)
    call: Call | None = None
    with contained("bedrock.start"):
        attributes = extract.server_attributes(client)
        if operation.streamed:
            attributes[attrs.GEN_AI_REQUEST_STREAM] = True
            prefetch_encoding(extract.estimate_model(request.model))
        if request.max_tokens is not None:
            attributes[attrs.GEN_AI_REQUEST_MAX_TOKENS] = request.max_tokens
        attributes.update(enforcement)
        call = telemetry.start(
            operation=request.operation,
            provider=extract.PROVIDER,
            request_model=request.model,
            attributes=attributes,
            input_estimate=request.estimate,
            hidden_input=request.hidden,
            content=None if telemetry.content is None else operation.content(params),
        )
    return call, request, params


def _note_retries(call: Call, response: Any) -> None:
    """The retry number of the attempt that answered, as botocore reports it in the response
    (or a ``ClientError``'s) metadata: its retry loop runs inside ``_make_api_call``."""
    with contained("bedrock.retries"):
        if isinstance(response, Mapping):
            retries = response.get("ResponseMetadata", {}).get("RetryAttempts")
            if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
                call.attempts.retries = retries


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    if len(args) == 2:
        return args[0], args[1]
    return kwargs.get("operation_name", args[0] if args else None), kwargs.get("api_params")


def make_api_call_wrapper(telemetry: Telemetry) -> Wrapper:
    """The ``wrapt`` wrapper of ``BaseClient._make_api_call``."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        name, params = _arguments(args, kwargs)
        operation = OPERATIONS.get(name) if isinstance(name, str) else None
        if (
            operation is None
            or not isinstance(params, dict)
            or _service(instance) != extract.SERVICE
            or not is_instrumentation_enabled()
        ):
            return wrapped(*args, **kwargs)
        call, request, params = _prepare(telemetry, operation, instance, params)
        if call is None or request is None:
            return wrapped(name, params)
        try:
            with call.activate():
                result = beneath(wrapped)(name, params)
        except BaseException as exc:
            _note_retries(call, getattr(exc, "response", None))
            telemetry.finish(call, usage=None, error=exc)
            raise
        _note_retries(call, result)
        try:
            operation.observe(telemetry, call, result, request)
        except Exception as exc:
            report_failure("bedrock.observe", exc)
            telemetry.finish(call, usage=None)
        return result

    return wrapper
