"""``POST /v1/chat/completions`` in OpenAI's wire format."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._reply import (
    BadRequest,
    Call,
    Prepared,
    check_volume,
    chunk_text,
    is_reasoning_model,
    new_id,
    now,
    optional_int,
    plan_output,
    reply,
    require_list,
)
from tollmeter.fakellm._sse import sse_event
from tollmeter.fakellm._text import Seed, json_instance
from tollmeter.fakellm._tokens import count, encoding_name, render_chat

__all__ = ["ToolCall", "chat_completions", "choose_tool", "structured_text"]

_MAX_CHOICES = 128
_FINGERPRINT = "fp_fake"


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str

    def tokens(self, enc: str) -> int:
        return count(self.name, enc) + count(self.arguments, enc)


def _function(tool: Any) -> Mapping[str, Any] | None:
    """The function definition of a chat tool (nested) or a Responses tool (flat)."""
    if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
        return None
    nested = tool.get("function")
    return nested if isinstance(nested, Mapping) else tool


def choose_tool(
    tools: Sequence[Any], tool_choice: Any, after_tool_result: bool, seed: Seed
) -> ToolCall | None:
    """Deterministic tool use: call a tool unless ``tool_choice`` forbids it, or unless the
    last input is a tool result and the choice is ``auto`` (so agent loops terminate)."""
    functions = [f for f in map(_function, tools) if f is not None]
    if not functions or tool_choice == "none":
        return None
    forced = tool_choice == "required" or isinstance(tool_choice, Mapping)
    if after_tool_result and not forced:
        return None
    chosen = functions[0]
    named = _function(tool_choice) if isinstance(tool_choice, Mapping) else None
    if named is not None:
        wanted = named.get("name")
        match = next((f for f in functions if f.get("name") == wanted), None)
        if match is None:
            raise BadRequest(f"tool_choice names an unknown function {wanted!r}", "tool_choice")
        chosen = match
    arguments = json.dumps(json_instance(chosen.get("parameters", {}), seed.child("args")))
    return ToolCall(new_id("call_")[:29], str(chosen.get("name", "")), arguments)


def structured_text(response_format: Any, seed: Seed) -> str | None:
    """The JSON reply that ``response_format`` asks for (``.parse()`` validates it)."""
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or response_format
        schema = spec.get("schema", {}) if isinstance(spec, Mapping) else {}
        return json.dumps(json_instance(schema, seed.child("json")))
    if kind == "json_object":
        return json.dumps({"answer": json_instance({"type": "string"}, seed.child("json"))})
    return None


def _usage_json(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": cached,
            "cache_write_tokens": 0,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


@dataclass(frozen=True)
class _Choice:
    pieces: tuple[str, ...]
    tool: ToolCall | None
    finish: str
    tokens: int
    reasoning: int

    @property
    def text(self) -> str | None:
        return None if self.tool else "".join(self.pieces)


def _plan_choice(call: Call, index: int, enc: str, cap: int | None) -> _Choice:
    body = call.body
    seed = call.seed().child(f"choice-{index}")
    messages = body["messages"]
    last_role = messages[-1].get("role") if isinstance(messages[-1], Mapping) else None
    tools = body.get("tools") or []
    reasoning_model = is_reasoning_model(call.model)
    n_reply, reasoning, truncated = plan_output(
        seed, call.directives, cap, reasoning=reasoning_model
    )
    tool = choose_tool(tools, body.get("tool_choice"), last_role == "tool", seed)
    if tool is not None:
        return _Choice((), tool, "tool_calls", tool.tokens(enc) + reasoning, reasoning)
    structured = structured_text(body.get("response_format"), seed)
    if structured is not None:
        pieces = tuple(chunk_text(structured))
        return _Choice(pieces, None, "stop", count(structured, enc) + reasoning, reasoning)
    text = reply(seed, n_reply)
    finish = "length" if truncated else "stop"
    return _Choice(text.pieces, None, finish, count(text.text, enc) + reasoning, reasoning)


def _message(choice: _Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text,
        "refusal": None,
        "annotations": [],
    }
    if choice.tool:
        message["tool_calls"] = [_tool_call_json(choice.tool, choice.tool.arguments)]
    return message


def _tool_call_json(tool: ToolCall, arguments: str) -> dict[str, Any]:
    return {
        "id": tool.call_id,
        "type": "function",
        "function": {"name": tool.name, "arguments": arguments},
    }


def _stream_deltas(choice: _Choice) -> list[dict[str, Any]]:
    if choice.tool:
        head = _tool_call_json(choice.tool, "")
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **head}]}
        ]
        deltas += [
            {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
            for part in chunk_text(choice.tool.arguments)
        ]
        return deltas
    return [{"role": "assistant", "content": "", "refusal": None}] + [
        {"content": piece} for piece in choice.pieces
    ]


def chat_completions(call: Call) -> Prepared:
    body = call.body
    messages = require_list(body, "messages")
    if not all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("every message needs a string role", "messages")
    n = optional_int(body, "n") or 1
    if n > _MAX_CHOICES:
        raise BadRequest(f"n must be at most {_MAX_CHOICES}", "n")
    check_volume(n, call.directives)
    cap = optional_int(body, "max_completion_tokens", "max_tokens")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("tools must be an array", "tools")
    enc = encoding_name(call.model, "chat")
    rendered = render_chat(messages, tools, enc)
    prompt = len(rendered.tokens)
    cached = call.cache.openai(call.model, rendered.tokens).read
    choices = [_plan_choice(call, i, enc, cap) for i in range(n)]
    completion = sum(c.tokens for c in choices)
    reasoning = sum(c.reasoning for c in choices)
    usage = ReportedUsage(prompt, completion, cache_read_tokens=cached, reasoning_tokens=reasoning)
    usage_json = _usage_json(prompt, completion, cached, reasoning)
    omit = call.directives.omit_usage
    response_id = new_id("chatcmpl-")
    head = {"id": response_id, "created": now(), "model": call.model}
    common = {"system_fingerprint": _FINGERPRINT, "service_tier": "default"}
    if not call.stream:
        out: dict[str, Any] = {
            **head,
            "object": "chat.completion",
            "choices": [
                {"index": i, "message": _message(c), "logprobs": None, "finish_reason": c.finish}
                for i, c in enumerate(choices)
            ],
            **common,
        }
        if not omit:
            out["usage"] = usage_json
        return Prepared(response_id, usage, None if omit else usage_json, body=out)
    options = body.get("stream_options")
    include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    extra = {"usage": None} if include_usage else {}
    chunk = {**head, "object": "chat.completion.chunk", **common}
    events: list[bytes] = []
    for index, choice in enumerate(choices):
        deltas = _stream_deltas(choice)
        for delta in deltas:
            item = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
            events.append(sse_event({**chunk, "choices": [item], **extra}))
        item = {"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.finish}
        events.append(sse_event({**chunk, "choices": [item], **extra}))
    sent = include_usage and not omit
    if sent:
        events.append(sse_event({**chunk, "choices": [], "usage": usage_json}))
    events.append(sse_event("[DONE]"))
    return Prepared(response_id, usage, usage_json if sent else None, events=events)
