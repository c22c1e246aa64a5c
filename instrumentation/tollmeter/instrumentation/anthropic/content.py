"""Anthropic requests and replies as GenAI messages, for opt-in content capture (``_content``).

Called only when a capture mode is on. ``system`` becomes the system instructions; content
blocks map to parts: ``text``, ``tool_use`` (a tool call, its ``input`` as JSON),
``tool_result`` (a tool call response), ``thinking`` (reasoning); other blocks (images,
documents) keep their type only. Also used for the Anthropic body of Bedrock's ``invoke_model``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tollmeter.instrumentation._content import (
    Message,
    Part,
    RequestContent,
    message,
    text_part,
    tool_call_part,
    tool_response_part,
)
from tollmeter.instrumentation._fields import field

__all__ = ["message_output", "messages_request", "request_content"]


def _block(block: Any) -> Part:
    kind = field(block, "type")
    if kind == "text":
        return text_part(field(block, "text") or "")
    if kind == "tool_use":
        return tool_call_part(field(block, "id"), field(block, "name"), field(block, "input"))
    if kind == "tool_result":
        result = field(block, "content")
        if not isinstance(result, str) and result is not None:
            result = "".join(field(item, "text") or "" for item in result)
        return tool_response_part(field(block, "tool_use_id"), result)
    if kind in ("thinking", "redacted_thinking"):
        return {"type": "reasoning", "content": field(block, "thinking") or ""}
    return {"type": kind if isinstance(kind, str) else "unknown"}


def _parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [text_part(content)]
    return [_block(block) for block in content or ()]


def request_content(messages: Any, system: Any) -> RequestContent:
    """The content of a Messages request (from its ``messages`` and ``system``)."""
    converted = [message(field(item, "role"), _parts(field(item, "content"))) for item in messages]
    instructions = _parts(system) if system else None
    return RequestContent(converted, instructions)


def messages_request(kwargs: Mapping[str, Any]) -> Callable[[], RequestContent]:
    messages, system = kwargs.get("messages") or (), kwargs.get("system")
    return lambda: request_content(messages, system)


def message_output(reply: Any) -> Callable[[], list[Message]]:
    """The output of a whole or partial ``Message`` (or its dict form)."""

    def output() -> list[Message]:
        if reply is None:
            return []
        reason = field(reply, "stop_reason")
        parts = _parts(field(reply, "content"))
        return [message("assistant", parts, reason if isinstance(reason, str) else "")]

    return output
