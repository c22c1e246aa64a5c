"""Bedrock requests and replies as GenAI messages, for opt-in content capture (``_content``).

Called only when a capture mode is on. Converse (and ``converse_stream``): ``messages`` and
``system`` blocks map to parts (``text``, ``toolUse`` as a tool call, ``toolResult`` as a
tool call response, ``reasoningContent`` as reasoning; images and documents keep their kind
only), and a Converse reply becomes the output message with its ``stopReason``.

``invoke_model`` bodies are each vendor's own: the Anthropic Messages body is read like the
Anthropic API's, Amazon Nova's ``messages`` like Converse, and Meta's ``prompt`` and Titan's
``inputText`` become one user message. Replies of ``invoke_model`` and of the streams are
captured as the text tollmeter reads from them (tool calls in those replies are not split out).
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
from tollmeter.instrumentation.anthropic.content import request_content as anthropic_request
from tollmeter.instrumentation.bedrock.extract import parse_body

__all__ = ["converse_output", "converse_request", "invoke_request"]


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _block(block: Any) -> Part:
    block = _map(block)
    if isinstance(block.get("text"), str):
        return text_part(block["text"])
    if "toolUse" in block:
        use = _map(block["toolUse"])
        return tool_call_part(use.get("toolUseId"), use.get("name"), use.get("input"))
    if "toolResult" in block:
        result = _map(block["toolResult"])
        texts = [_block(item).get("content") for item in result.get("content") or ()]
        response = "".join(text for text in texts if isinstance(text, str))
        return tool_response_part(result.get("toolUseId"), response)
    if "reasoningContent" in block:
        reasoning = _map(_map(block["reasoningContent"]).get("reasoningText"))
        return {"type": "reasoning", "content": reasoning.get("text") or ""}
    return {"type": next(iter(block), "unknown")}


def _converse(messages: Any, system: Any) -> RequestContent:
    converted = [
        message(item.get("role"), [_block(block) for block in item.get("content") or ()])
        for item in map(_map, messages or ())
    ]
    instructions = [_block(block) for block in system] if isinstance(system, list) else None
    return RequestContent(converted, instructions)


def converse_request(params: Mapping[str, Any]) -> Callable[[], RequestContent]:
    return lambda: _converse(params.get("messages"), params.get("system"))


def invoke_request(params: Mapping[str, Any]) -> Callable[[], RequestContent]:
    def content() -> RequestContent:
        body = parse_body(params.get("body"))
        if "anthropic_version" in body:
            return anthropic_request(body.get("messages") or (), body.get("system"))
        if "messages" in body:
            return _converse(body.get("messages"), body.get("system"))
        prompt = body.get("prompt", body.get("inputText"))
        return RequestContent([message("user", [text_part(prompt)])] if prompt else [])

    return content


def converse_output(response: Mapping[str, Any]) -> Callable[[], list[Message]]:
    def output() -> list[Message]:
        reply = _map(_map(response.get("output")).get("message"))
        reason = response.get("stopReason")
        parts = [_block(block) for block in reply.get("content") or ()]
        return [message("assistant", parts, reason if isinstance(reason, str) else "")]

    return output
