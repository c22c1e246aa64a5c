"""Pure helpers that read requests, messages and stream events of the Anthropic SDK.

Usage convention: Anthropic's ``usage.input_tokens`` counts only the input that was neither
read from nor written to the prompt cache, while OpenTelemetry's ``gen_ai.usage.input_tokens``
counts all input. So the OTel input is ``input_tokens + cache_read_input_tokens +
cache_creation_input_tokens``; the two cache counts are also reported as their own attributes.
``output_tokens`` already includes thinking (reasoning) tokens.

Everything here reads SDK objects by attribute with defaults, so a field that an SDK version
lacks degrades to "not reported" rather than an error; usage fields newer than the installed
SDK arrive as plain values and dicts, and are read as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._endpoint import client_server_attributes
from tollmeter.instrumentation._estimate import count_text_tokens, estimate_chat_input_tokens
from tollmeter.instrumentation._fields import field
from tollmeter.instrumentation._hidden import hidden_input
from tollmeter.instrumentation._telemetry import Usage, UsageSource
from tollmeter.semconv import attributes as attrs

__all__ = [
    "OPERATION",
    "PROVIDER",
    "StreamAccumulator",
    "UsageSource",
    "hidden_input_counter",
    "input_estimator",
    "message_text",
    "request_attributes",
    "request_model",
    "usage_from",
    "with_estimated_output",
]

PROVIDER: Final = "anthropic"
OPERATION: Final = "chat"


def request_attributes(
    kwargs: Mapping[str, Any], client: object, *, stream: bool
) -> dict[str, AttributeValue]:
    """Span attributes known before the request is sent."""
    values: dict[str, AttributeValue] = {attrs.GEN_AI_REQUEST_STREAM: stream}
    max_tokens = kwargs.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        values[attrs.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    values.update(client_server_attributes(client))
    return values


def request_model(kwargs: Mapping[str, Any]) -> str | None:
    model = kwargs.get("model")
    return model if isinstance(model, str) else None


def hidden_input_counter(kwargs: Mapping[str, Any], model: str | None) -> Callable[[], int] | None:
    """Counts the request's system prompt and tool definitions (``_hidden``)."""
    system, tools = kwargs.get("system"), kwargs.get("tools")
    return hidden_input(
        [system] if isinstance(system, (str, list)) and system else [],
        tools if isinstance(tools, list) else [],
        model,
    )


def input_estimator(kwargs: Mapping[str, Any]) -> Callable[[], int]:
    """A callable that estimates the request's input tokens; called only when no usage arrived."""

    def estimate() -> int:
        model = request_model(kwargs)
        messages = kwargs.get("messages") or ()
        tools = kwargs.get("tools")
        total = estimate_chat_input_tokens(
            messages, model, tools if isinstance(tools, list) else None
        )
        system = kwargs.get("system")
        if isinstance(system, str):
            total += count_text_tokens(system, model)
        elif isinstance(system, list):
            for block in system:
                text = (
                    block.get("text")
                    if isinstance(block, Mapping)
                    else getattr(block, "text", None)
                )
                if isinstance(text, str):
                    total += count_text_tokens(text, model)
        return total

    return estimate


def _count(usage: object, name: str) -> int | None:
    value = field(usage, name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_from(usage: object) -> Usage | None:
    """OTel-convention ``Usage`` from an Anthropic ``Usage``; ``None`` when it has no counts."""
    if usage is None:
        return None
    uncached = _count(usage, "input_tokens")
    output = _count(usage, "output_tokens")
    if uncached is None or output is None:
        return None
    cache_read = _count(usage, "cache_read_input_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens")
    details = field(usage, "output_tokens_details")
    thinking = None if details is None else _count(details, "thinking_tokens")
    return Usage(
        uncached + (cache_read or 0) + (cache_write or 0),
        output,
        cache_read,
        cache_write,
        thinking,
    )


def with_estimated_output(usage: Usage, text: str, model: str | None) -> Usage:
    """``usage`` with the output counted from ``text`` (the provider's input counts are kept)."""
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=count_text_tokens(text, model),
        cache_read_input_tokens=usage.cache_read_input_tokens,
        cache_write_input_tokens=usage.cache_write_input_tokens,
    )


def message_text(message: object) -> str:
    """The text and thinking a (possibly partial) message holds, for an output estimate."""
    parts: list[str] = []
    for block in getattr(message, "content", None) or ():
        for name in ("text", "thinking"):
            value = getattr(block, name, None)
            if isinstance(value, str):
                parts.append(value)
    return "".join(parts)


class StreamAccumulator:
    """What a raw event stream reported so far; each count is the latest reported, never a sum.

    ``message_start`` carries the input counts and a placeholder output count; each
    ``message_delta`` carries cumulative counts (the input ones only on newer API versions).
    """

    __slots__ = (
        "cache_read",
        "cache_write",
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "response_id",
        "response_model",
        "saw_delta",
        "saw_start",
        "stop_reason",
        "text",
    )

    def __init__(self) -> None:
        self.saw_start = False
        self.saw_delta = False
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None
        self.reasoning_tokens: int | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.stop_reason: str | None = None
        self.text: list[str] = []

    def apply(self, event: object) -> None:
        """Fold one event in."""
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            value = getattr(delta, "text", None)
            if value is None:
                value = getattr(delta, "thinking", None)
            if isinstance(value, str):
                self.text.append(value)
        elif kind == "message_start":
            self._start(getattr(event, "message", None))
        elif kind == "message_delta":
            self._delta(event)

    def _start(self, message: object) -> None:
        self.saw_start = True
        response_id = getattr(message, "id", None)
        self.response_id = response_id if isinstance(response_id, str) else None
        model = getattr(message, "model", None)
        self.response_model = model if isinstance(model, str) else None
        self._assign(getattr(message, "usage", None))

    def _delta(self, event: object) -> None:
        self.saw_delta = True
        stop_reason = getattr(getattr(event, "delta", None), "stop_reason", None)
        if isinstance(stop_reason, str):
            self.stop_reason = stop_reason
        self._assign(getattr(event, "usage", None))

    def _assign(self, usage: object) -> None:
        for slot, name in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("cache_write", "cache_creation_input_tokens"),
        ):
            value = _count(usage, name)
            if value is not None:
                setattr(self, slot, value)
        thinking = _count(field(usage, "output_tokens_details"), "thinking_tokens")
        if thinking is not None:
            self.reasoning_tokens = thinking

    def usage(self, model: str | None) -> tuple[Usage | None, bool]:
        """The call's usage and whether it is the provider's own (complete) count.

        A stream cut before ``message_delta`` keeps the provider's input counts from
        ``message_start`` and estimates the output from the text received. ``None`` means
        nothing arrived, so both sides must be estimated.
        """
        if not self.saw_start or self.input_tokens is None:
            return None, False
        cache_read, cache_write = self.cache_read, self.cache_write
        total_input = self.input_tokens + (cache_read or 0) + (cache_write or 0)
        usage = Usage(
            input_tokens=total_input,
            output_tokens=self.output_tokens or 0,
            cache_read_input_tokens=cache_read,
            cache_write_input_tokens=cache_write,
            reasoning_output_tokens=self.reasoning_tokens,
        )
        if self.saw_delta and self.output_tokens is not None:
            return usage, True
        return with_estimated_output(usage, "".join(self.text), model), False
