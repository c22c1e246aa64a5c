"""Pure functions from OpenAI SDK requests and responses to telemetry values.

Nothing here performs I/O or keeps state. Requests are the keyword arguments
given to the SDK method; responses are SDK objects (pydantic models), read
defensively with ``getattr`` so that fields missing from older or newer SDK
versions yield ``None`` instead of an error (and fields newer than the SDK, which
it keeps as plain dicts, are still read).

Usage mapping (OpenAI already counts cached tokens inside the input and
reasoning tokens inside the output, as OpenTelemetry does):

==========================================  ======================================
OpenTelemetry                               Chat / Completions      Responses
==========================================  ======================================
``gen_ai.usage.input_tokens``               ``prompt_tokens``       ``input_tokens``
``gen_ai.usage.output_tokens``              ``completion_tokens``   ``output_tokens``
``gen_ai.usage.cache_read.input_tokens``    ``prompt_tokens_details.cached_tokens`` /
                                            ``input_tokens_details.cached_tokens``
``gen_ai.usage.cache_write.input_tokens``   ``..._details.cache_write_tokens``
``gen_ai.usage.reasoning.output_tokens``    ``completion_tokens_details.reasoning_tokens`` /
                                            ``output_tokens_details.reasoning_tokens``
==========================================  ======================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._endpoint import server_attributes as endpoint_attributes
from tollmeter.instrumentation._estimate import (
    estimate_chat_input_tokens,
    estimate_prompt_tokens,
)
from tollmeter.instrumentation._fields import field
from tollmeter.instrumentation._hidden import INSTRUCTION_ROLES, hidden_input
from tollmeter.instrumentation._streams import StreamOutcome
from tollmeter.instrumentation._telemetry import Usage
from tollmeter.semconv import attributes as attrs

__all__ = [
    "chat_hidden_input",
    "chat_input_estimate",
    "chat_outcome",
    "completion_outcome",
    "completion_text",
    "embedding_outcome",
    "given",
    "needs_stream_estimate",
    "prompt_input_estimate",
    "request_attributes",
    "response_text",
    "responses_hidden_input",
    "responses_input_estimate",
    "responses_outcome",
    "responses_usage",
    "server_attributes",
    "usage_from_completion",
]


def given(value: Any) -> Any:
    """``value``, or ``None`` for the SDK's "not given"/"omit" sentinels (which are falsy)."""
    if value is None or (not value and type(value).__name__ in ("NotGiven", "Omit")):
        return None
    return value


def server_attributes(resource: Any) -> dict[str, AttributeValue]:
    """``server.address``/``server.port`` from the client's ``base_url``."""
    return endpoint_attributes(getattr(getattr(resource, "_client", None), "base_url", None))


def request_attributes(kwargs: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Request attributes beyond operation/provider/model: stream flag and token limit.

    It runs on every call: absent keys, the usual case, cost one dict lookup each, and the
    SDK's "not given" sentinels fail the type checks like any other non-value.
    """
    values: dict[str, AttributeValue] = {}
    if kwargs.get("stream") is True:
        values[attrs.GEN_AI_REQUEST_STREAM] = True
    for key in _TOKEN_LIMITS:
        limit = kwargs.get(key)
        if limit is not None and isinstance(limit, int) and not isinstance(limit, bool):
            values[attrs.GEN_AI_REQUEST_MAX_TOKENS] = limit
            break
    conversation = kwargs.get("conversation")
    if conversation is not None:
        conversation_id = conversation if isinstance(conversation, str) else None
        if conversation_id is None and isinstance(conversation, Mapping):
            conversation_id = conversation.get("id")
        if isinstance(conversation_id, str):
            values[attrs.GEN_AI_CONVERSATION_ID] = conversation_id
    return values


_TOKEN_LIMITS = ("max_completion_tokens", "max_output_tokens", "max_tokens")


def needs_stream_estimate(kwargs: Mapping[str, Any]) -> bool:
    """Whether a chat/completion request streams without asking for a final usage chunk."""
    if kwargs.get("stream") is not True:
        return False
    options = given(kwargs.get("stream_options"))
    return not (isinstance(options, Mapping) and options.get("include_usage") is True)


def _count(value: Any) -> int | None:
    """A token count the SDK parsed from JSON: a plain ``int`` (never a bool), else ``None``."""
    return value if type(value) is int else None


def _usage(
    input_tokens: Any, output_tokens: Any, input_details: Any, output_details: Any
) -> Usage | None:
    if type(input_tokens) is not int:
        return None
    cache_read = cache_write = reasoning = None
    # Absent details objects are the usual case for many providers: no lookups then.
    if input_details is not None:
        cache_read = _count(field(input_details, "cached_tokens"))
        cache_write = _count(field(input_details, "cache_write_tokens"))
    if output_details is not None:
        reasoning = _count(field(output_details, "reasoning_tokens"))
    return Usage(
        input_tokens,
        output_tokens if type(output_tokens) is int else 0,
        cache_read,
        cache_write,
        reasoning,
    )


def usage_from_completion(usage: Any) -> Usage | None:
    """Usage of a chat completion, legacy completion or embedding (``CompletionUsage``-like)."""
    if usage is None:
        return None
    return _usage(
        getattr(usage, "prompt_tokens", None),
        getattr(usage, "completion_tokens", None),
        field(usage, "prompt_tokens_details"),
        field(usage, "completion_tokens_details"),
    )


def responses_usage(usage: Any) -> Usage | None:
    """Usage of a Responses API response (``ResponseUsage``-like)."""
    if usage is None:
        return None
    return _usage(
        getattr(usage, "input_tokens", None),
        getattr(usage, "output_tokens", None),
        field(usage, "input_tokens_details"),
        field(usage, "output_tokens_details"),
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _finish_reasons(choices: Any) -> tuple[str, ...]:
    if type(choices) is not list and not isinstance(choices, Sequence):
        return ()
    reasons = []
    for choice in choices:
        reason = getattr(choice, "finish_reason", None)
        if isinstance(reason, str) and reason:
            reasons.append(reason)
    return tuple(reasons)


def _message_text(message: Any) -> str:
    parts: list[str] = []
    content = getattr(message, "content", None)
    if isinstance(content, str):
        parts.append(content)
    refusal = getattr(message, "refusal", None)
    if isinstance(refusal, str):
        parts.append(refusal)
    for call in getattr(message, "tool_calls", None) or ():
        function = getattr(call, "function", None)
        for value in (getattr(function, "name", None), getattr(function, "arguments", None)):
            if isinstance(value, str):
                parts.append(value)
    return "".join(parts)


def chat_outcome(completion: Any) -> StreamOutcome:
    """Outcome of a (parsed) ``ChatCompletion``.

    The output text is only gathered when the completion reports no usage, for the estimate:
    with content capture on, the reply is read from the completion itself (``content``).
    """
    choices = getattr(completion, "choices", None) or ()
    usage = usage_from_completion(getattr(completion, "usage", None))
    text = ""
    if usage is None:
        text = "".join(_message_text(getattr(c, "message", None)) for c in choices)
    return StreamOutcome(
        usage=usage,
        response_model=_str(getattr(completion, "model", None)),
        response_id=_str(getattr(completion, "id", None)),
        finish_reasons=_finish_reasons(choices),
        output_text=text,
    )


def completion_text(choices: Any) -> str:
    """Text of legacy completion choices."""
    texts = (getattr(choice, "text", None) for choice in choices or ())
    return "".join(text for text in texts if isinstance(text, str))


def completion_outcome(completion: Any) -> StreamOutcome:
    """Outcome of a legacy ``Completion``."""
    choices = getattr(completion, "choices", None) or ()
    return StreamOutcome(
        usage=usage_from_completion(getattr(completion, "usage", None)),
        response_model=_str(getattr(completion, "model", None)),
        response_id=_str(getattr(completion, "id", None)),
        finish_reasons=_finish_reasons(choices),
        output_text=completion_text(choices),
    )


def embedding_outcome(response: Any) -> StreamOutcome:
    """Outcome of a ``CreateEmbeddingResponse`` (no output tokens)."""
    usage = getattr(response, "usage", None)
    prompt = _count(getattr(usage, "prompt_tokens", None))
    return StreamOutcome(
        usage=None if prompt is None else Usage(input_tokens=prompt),
        response_model=_str(getattr(response, "model", None)),
    )


def response_text(response: Any) -> str:
    """Output text of a Responses API response, including function call arguments."""
    parts: list[str] = []
    for item in getattr(response, "output", None) or ():
        for content in getattr(item, "content", None) or ():
            for key in ("text", "refusal"):
                value = getattr(content, key, None)
                if isinstance(value, str):
                    parts.append(value)
        arguments = getattr(item, "arguments", None)
        if isinstance(arguments, str):
            parts.append(arguments)
    return "".join(parts)


def _responses_finish_reasons(response: Any) -> tuple[str, ...]:
    reason = getattr(getattr(response, "incomplete_details", None), "reason", None)
    if isinstance(reason, str) and reason:
        return (reason,)
    status = getattr(response, "status", None)
    return (status,) if isinstance(status, str) and status else ()


def responses_outcome(response: Any) -> StreamOutcome:
    """Outcome of a (parsed) Responses API ``Response``."""
    return StreamOutcome(
        usage=responses_usage(getattr(response, "usage", None)),
        response_model=_str(getattr(response, "model", None)),
        response_id=_str(getattr(response, "id", None)),
        finish_reasons=_responses_finish_reasons(response),
        output_text=response_text(response),
    )


def _listed(value: Any) -> list[Any] | None:
    """A list copy of a request collection, or ``None`` when absent or not re-iterable (the
    SDK's "not given" sentinels included)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _sequence(value: Any) -> list[Any] | tuple[Any, ...]:
    """A request collection to read now (no copy), or ``()`` when absent."""
    return value if isinstance(value, (list, tuple)) else ()


def chat_input_estimate(kwargs: Mapping[str, Any], model: str | None) -> Callable[[], int]:
    """A callable estimating a chat request's input tokens, evaluated only if needed."""
    messages = _listed(kwargs.get("messages")) or []
    tools = _listed(kwargs.get("tools"))
    return lambda: estimate_chat_input_tokens(messages, model, tools)


def _instruction(item: Any) -> bool:
    role = field(item, "role")
    return isinstance(role, str) and role in INSTRUCTION_ROLES


def chat_hidden_input(kwargs: Mapping[str, Any], model: str | None) -> Callable[[], int] | None:
    """Counts a chat request's system/developer messages and tools (``_hidden``)."""
    instructions = []
    for message in _sequence(kwargs.get("messages")):
        # Runs over the whole conversation on every call: plain-dict messages, the usual
        # kind, are read without the helpers' calls.
        if type(message) is dict:
            role = message.get("role")
            if isinstance(role, str) and role in INSTRUCTION_ROLES:
                instructions.append(message.get("content"))
        elif _instruction(message):
            instructions.append(field(message, "content"))
    return hidden_input(instructions, _sequence(kwargs.get("tools")), model)


def responses_hidden_input(
    kwargs: Mapping[str, Any], model: str | None
) -> Callable[[], int] | None:
    """Counts a Responses API request's instructions, system/developer items and tools."""
    instructions: list[Any] = []
    text = kwargs.get("instructions")
    if isinstance(text, str):
        instructions.append(text)
    for item in _sequence(kwargs.get("input")):
        if _instruction(item):
            instructions.append(field(item, "content"))
    return hidden_input(instructions, _sequence(kwargs.get("tools")), model)


def prompt_input_estimate(value: Any, model: str | None) -> Callable[[], int]:
    """A callable estimating a completion prompt or embedding input."""
    if not isinstance(value, (str, list, tuple)):
        value = None
    return lambda: estimate_prompt_tokens(value, model)


def _responses_messages(items: Iterable[Any]) -> list[Any]:
    messages: list[Any] = []
    for item in items:
        content = field(item, "content")
        if content is None:
            # Tool outputs and other non-message items: count their text payloads.
            payload = "".join(
                value
                for value in (field(item, "output"), field(item, "arguments"), field(item, "name"))
                if isinstance(value, str)
            )
            messages.append({"content": payload})
        else:
            messages.append({"role": field(item, "role"), "content": content})
    return messages


def responses_input_estimate(kwargs: Mapping[str, Any], model: str | None) -> Callable[[], int]:
    """A callable estimating a Responses API request's input tokens."""
    raw_input = kwargs.get("input")
    instructions = kwargs.get("instructions")
    tools = _listed(kwargs.get("tools"))
    items = _listed(raw_input)

    def estimate() -> int:
        messages: list[Any] = []
        if isinstance(instructions, str):
            messages.append({"role": "system", "content": instructions})
        if isinstance(raw_input, str):
            messages.append({"role": "user", "content": raw_input})
        elif items is not None:
            messages.extend(_responses_messages(items))
        return estimate_chat_input_tokens(messages, model, tools)

    return estimate
