"""Opt-in capture of prompts and replies, the way OpenTelemetry's GenAI instrumentations do it.

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is read once, when an instrumentor is
enabled (``tollmeter.configure(capture_message_content=...)`` or the instrumentor option of the
same name wins over it). Its values are those of ``opentelemetry-util-genai``, case-insensitive:

- ``NO_CONTENT`` (default): no text leaves the process; nothing is collected, not even for a
  stream.
- ``SPAN_ONLY``: tollmeter's span (or the peer span it adopted) gets ``gen_ai.input.messages``,
  ``gen_ai.system_instructions`` (at request start) and ``gen_ai.output.messages`` (when the
  call is finished), each a JSON string.
- ``EVENT_ONLY``: the same content, as structured attributes of one log record
  ``gen_ai.client.inference.operation.details`` emitted through the OpenTelemetry logs API in
  the span's context when the call is finished (with the call's operation, provider, models,
  response id, finish reasons and usage). Without a ``LoggerProvider`` the API drops it.
- ``SPAN_AND_EVENT``: both.

Anything else logs a warning and means ``NO_CONTENT`` (as upstream; ``true`` included, which
only openai-v2's older code path accepts).

Messages follow the GenAI conventions: ``{"role", "parts": [...]}`` with parts
``{"type": "text", "content"}``, ``{"type": "tool_call", "id", "name", "arguments"}``,
``{"type": "tool_call_response", "id", "response"}``, ``{"type": "reasoning", "content"}`` or
``{"type": "<kind>"}`` alone for media tollmeter does not copy (images, audio, files); outputs
add ``finish_reason``. System instructions are a list of parts.

Bounded: at most ``MAX_MESSAGES`` messages per attribute (the latest of a long history) and
``MAX_CHARS`` characters of text in each attribute altogether; a string cut short ends with
``…``. Building the content never raises into the application (see ``_safety``).
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "MAX_CHARS",
    "MAX_MESSAGES",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    "CaptureMode",
    "Message",
    "Part",
    "RequestContent",
    "bounded",
    "capture_mode",
    "capture_mode_from_env",
    "dumps",
    "message",
    "reply",
    "text_part",
    "tool_call_part",
    "tool_response_part",
]

_log = logging.getLogger(__name__)

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: Final = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
)
"""``NO_CONTENT`` (default), ``SPAN_ONLY``, ``EVENT_ONLY`` or ``SPAN_AND_EVENT``."""

MAX_MESSAGES: Final = 64
"""Most messages kept in one attribute; a longer history keeps its latest messages."""
MAX_CHARS: Final = 32_768
"""Most characters of text kept in one attribute, all its strings together."""

Part = dict[str, Any]
Message = dict[str, Any]


class CaptureMode(enum.Enum):
    """Where captured content goes; see the module docstring."""

    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def captures(self) -> bool:
        return self is not CaptureMode.NO_CONTENT

    @property
    def on_span(self) -> bool:
        return self in (CaptureMode.SPAN_ONLY, CaptureMode.SPAN_AND_EVENT)

    @property
    def as_event(self) -> bool:
        return self in (CaptureMode.EVENT_ONLY, CaptureMode.SPAN_AND_EVENT)


def capture_mode_from_env() -> CaptureMode:
    """The mode the variable asks for; an unknown value warns and means ``NO_CONTENT``."""
    value = os.environ.get(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, "").strip()
    if not value:
        return CaptureMode.NO_CONTENT
    try:
        return CaptureMode[value.upper()]
    except KeyError:
        _log.warning(
            "ignoring %s=%r: expected one of %s; not capturing message content",
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
            value,
            ", ".join(mode.name for mode in CaptureMode),
        )
        return CaptureMode.NO_CONTENT


def capture_mode(value: object) -> CaptureMode:
    """The mode of an explicit option (``None``: the variable's); a bad value raises."""
    if value is None:
        return capture_mode_from_env()
    if isinstance(value, CaptureMode):
        return value
    if isinstance(value, str) and value.strip().upper() in CaptureMode.__members__:
        return CaptureMode[value.strip().upper()]
    raise ValueError(
        f"capture_message_content must be one of {[mode.name for mode in CaptureMode]}, "
        f"got {value!r}"
    )


class RequestContent:
    """The captured (already bounded) content of a request."""

    __slots__ = ("input_messages", "system_instructions")

    def __init__(
        self, input_messages: list[Message], system_instructions: list[Part] | None = None
    ) -> None:
        self.input_messages = bounded(input_messages)
        self.system_instructions = _bounded_parts(system_instructions or [])


def text_part(text: str) -> Part:
    return {"type": "text", "content": text}


def tool_call_part(call_id: object, name: object, arguments: object) -> Part:
    return {
        "type": "tool_call",
        "id": call_id if isinstance(call_id, str) else None,
        "name": name if isinstance(name, str) else "",
        "arguments": _as_text(arguments),
    }


def tool_response_part(call_id: object, response: object) -> Part:
    return {
        "type": "tool_call_response",
        "id": call_id if isinstance(call_id, str) else None,
        "response": _as_text(response),
    }


def message(role: object, parts: Iterable[Part], finish_reason: str | None = None) -> Message:
    """A message; ``finish_reason`` makes it an output message."""
    value: Message = {"role": role if isinstance(role, str) else "user", "parts": list(parts)}
    if finish_reason is not None:
        value["finish_reason"] = finish_reason
    return value


def reply(text: str, finish_reasons: Sequence[str]) -> list[Message]:
    """The output of a call known only by its text (what a stream handler assembled)."""
    if not text and not finish_reasons:
        return []
    reason = finish_reasons[0] if finish_reasons else ""
    return [message("assistant", [text_part(text)] if text else [], reason)]


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_CHARS

    def clip(self, text: str) -> str:
        if len(text) <= self.left:
            self.left -= len(text)
            return text
        kept = max(self.left - 1, 0)
        self.left = 0
        return text[:kept] + "…"


# Keys whose values are short identifiers, not content: never clipped.
_LABELS: Final = frozenset({"type", "role", "id", "name", "finish_reason", "mime_type"})


def _bounded_part(part: Mapping[str, Any], budget: _Budget) -> Part:
    return {
        key: budget.clip(value) if isinstance(value, str) and key not in _LABELS else value
        for key, value in part.items()
    }


def bounded(messages: Sequence[Message]) -> list[Message]:
    """``messages`` within ``MAX_MESSAGES`` and ``MAX_CHARS``."""
    budget = _Budget()
    kept = list(messages[-MAX_MESSAGES:])
    return [
        {**item, "parts": [_bounded_part(part, budget) for part in item.get("parts", ())]}
        for item in kept
    ]


def _bounded_parts(parts: Sequence[Part]) -> list[Part]:
    budget = _Budget()
    return [_bounded_part(part, budget) for part in parts[:MAX_MESSAGES]]


def dumps(value: object) -> str:
    """The JSON text of a span attribute."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
