"""Amazon Bedrock runtime: ``POST /model/{modelId}/converse`` and ``/converse-stream``.

Bedrock serves many vendors' models; this server answers every one of them with the
Anthropic rules (``_anthropic``): the request is translated to a Messages request, counted
with the same tokenizer stand-in and prompt cache (``cachePoint`` blocks are the
breakpoints), and the reply is translated back. Converse reports ``inputTokens`` without the
cache reads and writes, which it reports apart, as Bedrock does; ``totalTokens`` counts
everything. Streams use AWS event-stream framing (``_eventstream``).

Converse has no response id: the journal keys such exchanges by the request id, which the
server also sends as ``x-amzn-requestid`` (``ResponseMetadata.RequestId`` in boto3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tollmeter.fakellm._anthropic import messages
from tollmeter.fakellm._eventstream import event_message
from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._reply import BadRequest, Call, Prepared, chunk_text

__all__ = [
    "EVENT_STREAM",
    "anthropic_blocks",
    "as_messages_call",
    "converse",
    "converse_stream",
    "converse_usage",
    "reply_body",
    "text_pieces",
]

EVENT_STREAM = "application/vnd.amazon.eventstream"
_DEFAULT_MAX_TOKENS = 1024
_CACHE_MARK = {"type": "ephemeral"}
_MEDIA = ("image", "document", "video", "audio")


def text_pieces(text: str) -> list[str]:
    """A reply's text as the word pieces a stream sends (they join back to ``text``)."""
    return re.findall(r"\s*\S+", text) or [text]


def anthropic_blocks(content: Any) -> list[dict[str, Any]]:
    """Converse content blocks as Messages blocks; a ``cachePoint`` marks the block before."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, Sequence):
        raise BadRequest("content must be an array of content blocks", "messages")
    out: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, Mapping):
            raise BadRequest("each content block must be an object", "messages")
        if "cachePoint" in block:
            if out:
                out[-1]["cache_control"] = _CACHE_MARK
        elif "text" in block:
            out.append({"type": "text", "text": str(block["text"])})
        elif "json" in block:
            out.append({"type": "text", "text": json.dumps(block["json"], sort_keys=True)})
        elif "toolUse" in block:
            use = block["toolUse"]
            out.append({"type": "tool_use", "name": use.get("name"), "input": use.get("input")})
        elif "toolResult" in block:
            inner = anthropic_blocks(block["toolResult"].get("content", []))
            out.append({"type": "tool_result", "content": inner})
        elif any(kind in block for kind in _MEDIA):
            out.append({"type": "image"})
    return out


def _tools(config: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if not isinstance(config, Mapping):
        return [], None
    tools: list[dict[str, Any]] = []
    for item in config.get("tools") or ():
        if not isinstance(item, Mapping):
            continue
        if "cachePoint" in item and tools:
            tools[-1]["cache_control"] = _CACHE_MARK
        spec = item.get("toolSpec")
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            schema = spec.get("inputSchema")
            tools.append(
                {
                    "name": spec["name"],
                    "input_schema": schema.get("json", {}) if isinstance(schema, Mapping) else {},
                }
            )
    choice = config.get("toolChoice")
    if not isinstance(choice, Mapping):
        return tools, None
    if "tool" in choice:
        return tools, {"type": "tool", "name": choice["tool"].get("name")}
    return tools, {"type": "any" if "any" in choice else "auto"}


def as_messages_call(
    call: Call,
    history: Any,
    *,
    system: Any = None,
    max_tokens: Any = None,
    tool_config: Any = None,
) -> Call:
    """A Messages request for the same prompt, to be answered by ``_anthropic.messages``."""
    if not isinstance(history, list) or not history:
        raise BadRequest("messages must be a non-empty array", "messages")
    converted = []
    for message in history:
        if not isinstance(message, Mapping):
            raise BadRequest("each message must be an object", "messages")
        converted.append(
            {"role": message.get("role"), "content": anthropic_blocks(message.get("content"))}
        )
    body: dict[str, Any] = {
        "model": call.model,
        "messages": converted,
        "max_tokens": _DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
    }
    if system is not None:
        body["system"] = anthropic_blocks(system)
    tools, choice = _tools(tool_config)
    if tools:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    return Call(body, call.model, call.directives, call.cache)


def _converse_call(call: Call) -> Call:
    config = call.body.get("inferenceConfig")
    max_tokens = config.get("maxTokens") if isinstance(config, Mapping) else None
    return as_messages_call(
        call,
        call.body.get("messages"),
        system=call.body.get("system"),
        max_tokens=max_tokens,
        tool_config=call.body.get("toolConfig"),
    )


def converse_usage(usage: ReportedUsage) -> dict[str, int]:
    """Bedrock's ``TokenUsage``: ``inputTokens`` without the cache, which is reported apart."""
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    out = {
        "inputTokens": usage.input_tokens - cached,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
    }
    if cached:
        out["cacheReadInputTokens"] = usage.cache_read_tokens
        out["cacheWriteInputTokens"] = usage.cache_write_tokens
    return out


def reply_body(prepared: Prepared) -> dict[str, Any]:
    """The Messages body of a reply prepared without ``stream``."""
    if prepared.body is None:
        raise RuntimeError("a Messages request without stream must be answered with a body")
    return prepared.body


def _content(block: Mapping[str, Any]) -> dict[str, Any]:
    if block["type"] == "tool_use":
        use = {"toolUseId": block["id"], "name": block["name"], "input": block["input"]}
        return {"toolUse": use}
    return {"text": block["text"]}


def _answer(call: Call) -> tuple[Prepared, dict[str, Any]]:
    """The Messages reply to ``call`` (never streamed) and its Converse output."""
    prepared = messages(_converse_call(call))
    reply = reply_body(prepared)
    message = {"role": "assistant", "content": [_content(b) for b in reply["content"]]}
    return prepared, {"message": message, "stopReason": reply["stop_reason"]}


def converse(call: Call) -> Prepared:
    prepared, answer = _answer(call)
    usage = None if call.directives.omit_usage else converse_usage(prepared.usage)
    body: dict[str, Any] = {
        "output": {"message": answer["message"]},
        "stopReason": answer["stopReason"],
        "metrics": {"latencyMs": 1},
    }
    if usage is not None:
        body["usage"] = usage
    return Prepared(None, prepared.usage, usage, body=body)


def converse_stream(call: Call) -> Prepared:
    prepared, answer = _answer(call)
    events = [event_message("messageStart", {"role": "assistant"})]
    for index, block in enumerate(answer["message"]["content"]):
        if "toolUse" in block:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            events.append(
                event_message("contentBlockStart", {"start": start, "contentBlockIndex": index})
            )
            pieces = chunk_text(json.dumps(use["input"]))
            deltas: list[dict[str, Any]] = [{"toolUse": {"input": p}} for p in pieces]
        else:
            deltas = [{"text": piece} for piece in text_pieces(block["text"])]
        for delta in deltas:
            event = {"delta": delta, "contentBlockIndex": index}
            events.append(event_message("contentBlockDelta", event))
        events.append(event_message("contentBlockStop", {"contentBlockIndex": index}))
    events.append(event_message("messageStop", {"stopReason": answer["stopReason"]}))
    usage = None if call.directives.omit_usage else converse_usage(prepared.usage)
    if usage is not None:
        events.append(event_message("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
    return Prepared(None, prepared.usage, usage, events=events, media_type=EVENT_STREAM)
