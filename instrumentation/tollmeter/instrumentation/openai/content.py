"""OpenAI requests and replies as GenAI messages, for opt-in content capture (see ``_content``).

Called only when a capture mode is on. Chat keeps its ``system``/``developer`` messages in
the input (they are part of the history there); the Responses API's ``instructions`` are the
system instructions. Images, audio and files become parts with their type only.
``ChatContentStreamHandler`` assembles a streamed chat reply per choice, text and tool calls.
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
from tollmeter.instrumentation._streams import StreamOutcome
from tollmeter.instrumentation.openai.extract import given
from tollmeter.instrumentation.openai.wrappers import ChatStreamHandler, ResponsesStreamHandler

__all__ = [
    "ChatContentStreamHandler",
    "ResponsesContentStreamHandler",
    "chat_output",
    "chat_request",
    "prompt_request",
    "responses_output",
    "responses_request",
]


def _content_parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [text_part(content)]
    parts: list[Part] = []
    for piece in content or ():
        kind = field(piece, "type")
        text = field(piece, "text")
        if isinstance(text, str):
            parts.append(text_part(text))
        elif isinstance(field(piece, "refusal"), str):
            parts.append(text_part(field(piece, "refusal")))
        elif isinstance(kind, str):
            parts.append({"type": kind})
    return parts


def _chat_message(item: Any) -> Message:
    role = field(item, "role")
    if role == "tool":
        response = tool_response_part(field(item, "tool_call_id"), field(item, "content"))
        return message(role, [response])
    parts = _content_parts(field(item, "content"))
    for call in field(item, "tool_calls") or ():
        function = field(call, "function")
        parts.append(
            tool_call_part(field(call, "id"), field(function, "name"), field(function, "arguments"))
        )
    return message(role, parts)


def chat_request(kwargs: Mapping[str, Any]) -> Callable[[], RequestContent]:
    messages = given(kwargs.get("messages"))
    return lambda: RequestContent([_chat_message(item) for item in messages or ()])


def prompt_request(kwargs: Mapping[str, Any]) -> Callable[[], RequestContent]:
    """A legacy completion's prompt, as one user message per prompt string."""
    prompt = given(kwargs.get("prompt"))

    def content() -> RequestContent:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or ())
        return RequestContent(
            [message("user", [text_part(p)]) for p in prompts if isinstance(p, str)]
        )

    return content


def _choice_message(choice: Any) -> Message:
    reply = _chat_message(field(choice, "message"))
    reply["role"] = "assistant"
    reason = field(choice, "finish_reason")
    reply["finish_reason"] = reason if isinstance(reason, str) else ""
    return reply


def chat_output(completion: Any) -> Callable[[], list[Message]]:
    return lambda: [_choice_message(choice) for choice in field(completion, "choices") or ()]


def _response_item(item: Any) -> Message | None:
    kind = field(item, "type")
    if kind == "function_call":
        call = tool_call_part(field(item, "call_id"), field(item, "name"), field(item, "arguments"))
        return message("assistant", [call])
    if kind == "function_call_output":
        return message("tool", [tool_response_part(field(item, "call_id"), field(item, "output"))])
    if kind == "reasoning":
        summary = "".join(
            text for text in (field(s, "text") for s in field(item, "summary") or ()) if text
        )
        return message("assistant", [{"type": "reasoning", "content": summary}])
    content = field(item, "content")
    if content is None:
        return None
    return message(field(item, "role") or "assistant", _content_parts(content))


def responses_request(kwargs: Mapping[str, Any]) -> Callable[[], RequestContent]:
    raw_input = given(kwargs.get("input"))
    instructions = given(kwargs.get("instructions"))

    def content() -> RequestContent:
        if isinstance(raw_input, str):
            messages = [message("user", [text_part(raw_input)])]
        else:
            items = (_response_item(item) for item in raw_input or ())
            messages = [item for item in items if item is not None]
        system = [text_part(instructions)] if isinstance(instructions, str) else None
        return RequestContent(messages, system)

    return content


def responses_output(response: Any) -> Callable[[], list[Message]]:
    def output() -> list[Message]:
        parts: list[Part] = []
        for item in field(response, "output") or ():
            converted = _response_item(item)
            if converted is not None:
                parts.extend(converted["parts"])
        reason = field(field(response, "incomplete_details"), "reason") or field(response, "status")
        return [message("assistant", parts, reason if isinstance(reason, str) else "")]

    return output


class ChatContentStreamHandler(ChatStreamHandler):
    """``ChatStreamHandler`` that also keeps each choice's text and tool calls apart."""

    __slots__ = ("_choices",)

    def __init__(self) -> None:
        super().__init__()
        # choice index -> (texts, tool call index -> [id, name, argument pieces])
        self._choices: dict[int, tuple[list[str], dict[int, list[Any]]]] = {}

    def on_chunk(self, chunk: Any) -> None:
        super().on_chunk(chunk)
        for choice in chunk.choices:
            texts, calls = self._choices.setdefault(choice.index or 0, ([], {}))
            delta = choice.delta
            if delta.content:
                texts.append(delta.content)
            for call in delta.tool_calls or ():
                entry = calls.setdefault(call.index or 0, [None, None, []])
                entry[0] = entry[0] or call.id
                function = call.function
                if function is not None:
                    entry[1] = entry[1] or function.name
                    if function.arguments:
                        entry[2].append(function.arguments)

    def outcome(self) -> StreamOutcome:
        outcome = super().outcome()
        outcome.output = self._output
        return outcome

    def _output(self) -> list[Message]:
        messages: list[Message] = []
        for index in sorted(self._choices):
            texts, calls = self._choices[index]
            parts = [text_part("".join(texts))] if texts else []
            parts += [
                tool_call_part(calls[i][0], calls[i][1], "".join(calls[i][2]))
                for i in sorted(calls)
            ]
            messages.append(message("assistant", parts, self.finish_reasons.get(index, "")))
        return messages


class ResponsesContentStreamHandler(ResponsesStreamHandler):
    """``ResponsesStreamHandler`` whose outcome has the final response's output messages."""

    __slots__ = ()

    def outcome(self) -> StreamOutcome:
        outcome = super().outcome()
        if self.final is not None:
            outcome.output = responses_output(self.final)
        return outcome
