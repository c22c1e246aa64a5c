"""Gemini requests and replies as GenAI messages, for opt-in content capture (``_content``).

Called only when a capture mode is on. ``contents`` may be a string, a list of strings, or
``Content`` objects (or their dict form) with roles ``user`` and ``model`` (reported as
``assistant``); ``config.system_instruction`` becomes the system instructions. Parts map to
``text`` (``reasoning`` when marked as a thought), ``function_call`` (a tool call) and
``function_response`` (a tool call response); media keep their kind only.
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
from tollmeter.instrumentation.google_genai.extract import finish_reason

__all__ = ["generate_output", "generate_request"]


def _get(item: Any, key: str, camel: str | None = None) -> Any:
    if isinstance(item, Mapping):
        value = item.get(key)
        return item.get(camel) if value is None and camel else value
    return getattr(item, key, None)


def _part(part: Any) -> Part:
    if isinstance(part, str):
        return text_part(part)
    text = _get(part, "text")
    if isinstance(text, str):
        return {"type": "reasoning", "content": text} if _get(part, "thought") else text_part(text)
    call = _get(part, "function_call", "functionCall")
    if call is not None:
        return tool_call_part(_get(call, "id"), _get(call, "name"), _get(call, "args"))
    response = _get(part, "function_response", "functionResponse")
    if response is not None:
        return tool_response_part(_get(response, "id"), _get(response, "response"))
    return {"type": "blob"}


def _role(role: Any) -> str:
    return "assistant" if role == "model" else role if isinstance(role, str) else "user"


def _content(item: Any) -> Message:
    if isinstance(item, str):
        return message("user", [text_part(item)])
    parts = _get(item, "parts")
    if parts is None:
        # A bare part (or list of them) stands for one user message.
        return message("user", [_part(item)])
    return message(_role(_get(item, "role")), [_part(part) for part in parts])


def _instructions(value: Any) -> list[Part] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [text_part(value)]
    parts = _get(value, "parts")
    items = parts if parts is not None else value if isinstance(value, list) else [value]
    return [_part(part) for part in items]


def generate_request(kwargs: Mapping[str, Any]) -> Callable[[], RequestContent]:
    contents, config = kwargs.get("contents"), kwargs.get("config")

    def content() -> RequestContent:
        items = contents if isinstance(contents, list) else [contents]
        messages = [_content(item) for item in items if item is not None]
        system = _instructions(_get(config, "system_instruction", "systemInstruction"))
        return RequestContent(messages, system)

    return content


def generate_output(response: Any) -> Callable[[], list[Message]]:
    def output() -> list[Message]:
        messages: list[Message] = []
        for candidate in _get(response, "candidates") or ():
            parts = _get(_get(candidate, "content"), "parts") or ()
            reason = finish_reason(candidate) or ""
            messages.append(message("assistant", [_part(part) for part in parts], reason))
        return messages

    return output
