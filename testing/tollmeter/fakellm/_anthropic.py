"""``POST /v1/messages`` in Anthropic's wire format, with prompt caching and thinking."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._openai_chat import ToolCall
from tollmeter.fakellm._reply import (
    BadRequest,
    Call,
    Prepared,
    chunk_text,
    new_id,
    optional_int,
    plan_output,
    reply,
    require_list,
)
from tollmeter.fakellm._sse import sse_event
from tollmeter.fakellm._text import Seed, json_instance
from tollmeter.fakellm._tokens import count, encoding_name, render_anthropic

__all__ = ["messages"]

_ROLES = ("user", "assistant")
_DEFAULT_THINKING = (32, 96)


def _after_tool_result(messages: Sequence[Mapping[str, Any]]) -> bool:
    content = messages[-1].get("content")
    return isinstance(content, list) and any(
        isinstance(block, Mapping) and block.get("type") == "tool_result" for block in content
    )


def _choose_tool(body: Mapping[str, Any], seed: Seed) -> ToolCall | None:
    """Same rule as for OpenAI: use a tool unless told not to or just given a tool result."""
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping) and "name" in t]
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type", "auto") if isinstance(choice, Mapping) else "auto"
    if not tools or kind == "none":
        return None
    if kind == "auto" and _after_tool_result(body["messages"]):
        return None
    chosen = tools[0]
    if kind == "tool":
        wanted = choice.get("name") if isinstance(choice, Mapping) else None
        named = next((t for t in tools if t.get("name") == wanted), None)
        if named is None:
            raise BadRequest(f"tool_choice names an unknown tool {wanted!r}", "tool_choice")
        chosen = named
    arguments = json.dumps(json_instance(chosen.get("input_schema", {}), seed.child("args")))
    return ToolCall(new_id("toolu_")[:30], str(chosen["name"]), arguments)


def _thinking_budget(body: Mapping[str, Any]) -> int | None:
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, Mapping) or not isinstance(thinking.get("type"), str):
        raise BadRequest("thinking must be an object with a type", "thinking")
    if thinking["type"] == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if budget is None:
        return _DEFAULT_THINKING[1]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise BadRequest("thinking.budget_tokens must be a positive integer", "thinking")
    return budget


def _validate(body: Mapping[str, Any]) -> tuple[Sequence[Mapping[str, Any]], int]:
    messages = require_list(body, "messages")
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            raise BadRequest("messages: each role must be 'user' or 'assistant'", "messages")
    max_tokens = optional_int(body, "max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required", "max_tokens")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("tools must be an array", "tools")
    return messages, max_tokens


@dataclass(frozen=True)
class _Block:
    kind: str
    pieces: tuple[str, ...]
    tool: ToolCall | None = None

    def start(self) -> dict[str, Any]:
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": "", "signature": ""}
        if self.tool is not None:
            return {
                "type": "tool_use",
                "id": self.tool.call_id,
                "name": self.tool.name,
                "input": {},
            }
        return {"type": "text", "text": ""}

    def final(self, signature: str) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": text, "signature": signature}
        if self.tool is not None:
            return {**self.start(), "input": json.loads(self.tool.arguments)}
        return {"type": "text", "text": text, "citations": None}

    def deltas(self, signature: str) -> list[dict[str, Any]]:
        if self.kind == "thinking":
            out = [{"type": "thinking_delta", "thinking": piece} for piece in self.pieces]
            return [*out, {"type": "signature_delta", "signature": signature}]
        if self.tool is not None:
            return [{"type": "input_json_delta", "partial_json": piece} for piece in self.pieces]
        return [{"type": "text_delta", "text": piece} for piece in self.pieces]


def messages(call: Call) -> Prepared:
    body = call.body
    history, max_tokens = _validate(body)
    budget = _thinking_budget(body)
    enc = encoding_name(call.model, "anthropic")
    rendered = render_anthropic(body.get("system"), history, body.get("tools"), enc)
    cache = call.cache.anthropic(call.model, rendered.tokens, rendered.breakpoints)
    seed = call.seed()
    blocks: list[_Block] = []
    thinking_tokens = 0
    room = max_tokens
    if budget is not None:
        want = min(seed.between(*_DEFAULT_THINKING), budget, max(max_tokens - 1, 1))
        thought = reply(seed.child("thinking"), want)
        blocks.append(_Block("thinking", thought.pieces))
        thinking_tokens = count(thought.text, enc)
        room = max(max_tokens - thinking_tokens, 1)
    tool = _choose_tool(body, seed)
    if tool is not None:
        blocks.append(_Block("tool_use", tuple(chunk_text(tool.arguments)), tool))
        stop, visible = "tool_use", tool.tokens(enc)
    else:
        n_reply, _, truncated = plan_output(seed, call.directives, room, reasoning=False)
        text = reply(seed, n_reply)
        blocks.append(_Block("text", text.pieces))
        stop, visible = ("max_tokens" if truncated else "end_turn"), count(text.text, enc)
    output = visible + thinking_tokens
    uncached = len(rendered.tokens) - cache.read - cache.written
    usage = ReportedUsage(
        len(rendered.tokens),
        output,
        cache_read_tokens=cache.read,
        cache_write_tokens=cache.written,
        reasoning_tokens=thinking_tokens,
    )
    usage_json: dict[str, Any] = {
        "input_tokens": uncached,
        "cache_creation_input_tokens": cache.written,
        "cache_read_input_tokens": cache.read,
        "output_tokens": output,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.written - cache.written_1h,
            "ephemeral_1h_input_tokens": cache.written_1h,
        },
        "service_tier": "standard",
    }
    if budget is not None:
        usage_json["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    omit = call.directives.omit_usage
    message_id = new_id("msg_")
    signature = new_id("sig_")
    head = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "stop_sequence": None,
    }
    if not call.stream:
        out: dict[str, Any] = {
            **head,
            "content": [block.final(signature) for block in blocks],
            "stop_reason": stop,
        }
        if not omit:
            out["usage"] = usage_json
        return Prepared(message_id, usage, None if omit else usage_json, body=out)
    events = _events(head, blocks, signature, stop, None if omit else usage_json)
    return Prepared(message_id, usage, None if omit else usage_json, events=events)


def _events(
    head: dict[str, Any],
    blocks: list[_Block],
    signature: str,
    stop: str,
    usage: dict[str, Any] | None,
) -> list[bytes]:
    """The stream: input usage up front in ``message_start``, final usage in ``message_delta``."""
    start: dict[str, Any] = {**head, "content": [], "stop_reason": None}
    if usage is not None:
        start["usage"] = {**usage, "output_tokens": 1}
    events = [sse_event({"type": "message_start", "message": start}, "message_start")]
    events.append(sse_event({"type": "ping"}, "ping"))
    for index, block in enumerate(blocks):
        begin = {"type": "content_block_start", "index": index, "content_block": block.start()}
        events.append(sse_event(begin, "content_block_start"))
        for delta in block.deltas(signature):
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            events.append(sse_event(event, "content_block_delta"))
        stop_block = {"type": "content_block_stop", "index": index}
        events.append(sse_event(stop_block, "content_block_stop"))
    final: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
    }
    if usage is not None:
        final["usage"] = {
            k: v for k, v in usage.items() if k not in ("cache_creation", "service_tier")
        }
    events.append(sse_event(final, "message_delta"))
    events.append(sse_event({"type": "message_stop"}, "message_stop"))
    return events
