"""``POST /v1/responses`` (OpenAI Responses API), with its full streaming event sequence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._openai_chat import ToolCall, choose_tool, structured_text
from tollmeter.fakellm._reply import (
    BadRequest,
    Call,
    Prepared,
    chunk_text,
    is_reasoning_model,
    new_id,
    now,
    optional_int,
    plan_output,
    reply,
)
from tollmeter.fakellm._sse import sse_event
from tollmeter.fakellm._tokens import count, encoding_name, render_responses

__all__ = ["responses"]


def _usage_json(prompt: int, output: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output,
    }


def _after_tool_result(items: Any) -> bool:
    return (
        isinstance(items, Sequence)
        and not isinstance(items, str)
        and bool(items)
        and isinstance(items[-1], Mapping)
        and items[-1].get("type") == "function_call_output"
    )


def _text_format(body: Mapping[str, Any]) -> Any:
    """``text.format`` of the Responses API, reshaped as a chat ``response_format``."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    return fmt if isinstance(fmt, Mapping) else None


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _call_item(item_id: str, tool: ToolCall, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": tool.call_id,
        "name": tool.name,
        "arguments": arguments,
        "status": status,
    }


def responses(call: Call) -> Prepared:
    body = call.body
    items = body.get("input")
    if not isinstance(items, (str, list)) or not items:
        raise BadRequest("input must be a non-empty string or array", "input")
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise BadRequest("tools must be an array", "tools")
    instructions = body.get("instructions")
    instructions = instructions if isinstance(instructions, str) else None
    cap = optional_int(body, "max_output_tokens")
    enc = encoding_name(call.model, "chat")
    rendered = render_responses(instructions, items, tools, enc)
    prompt = len(rendered.tokens)
    cached = call.cache.openai(call.model, rendered.tokens).read
    seed = call.seed()
    n_reply, reasoning, truncated = plan_output(
        seed, call.directives, cap, reasoning=is_reasoning_model(call.model)
    )
    tool = choose_tool(tools, body.get("tool_choice"), _after_tool_result(items), seed)
    pieces: tuple[str, ...] = ()
    if tool is not None:
        visible = tool.tokens(enc)
    else:
        structured = structured_text(_text_format(body), seed)
        if structured is not None:
            pieces, truncated = tuple(chunk_text(structured)), False
        else:
            pieces = reply(seed, n_reply).pieces
        visible = count("".join(pieces), enc)
    output = visible + reasoning
    usage = ReportedUsage(prompt, output, cache_read_tokens=cached, reasoning_tokens=reasoning)
    usage_json = _usage_json(prompt, output, cached, reasoning)
    omit = call.directives.omit_usage
    response_id = new_id("resp_")
    status = "incomplete" if truncated else "completed"
    output_items: list[dict[str, Any]] = []
    if reasoning:
        output_items.append({"id": new_id("rs_"), "type": "reasoning", "summary": []})
    main_id = new_id("fc_" if tool else "msg_")
    text = "".join(pieces)
    final_item = (
        _call_item(main_id, tool, tool.arguments, "completed")
        if tool
        else _message_item(main_id, text, status)
    )
    output_items.append(final_item)
    envelope: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": now(),
        "model": call.model,
        "instructions": instructions,
        "max_output_tokens": cap,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "metadata": body.get("metadata") or {},
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": body.get("truncation", "disabled"),
        "store": body.get("store", True),
    }
    done = {
        **envelope,
        "status": status,
        "output": output_items,
        "usage": None if omit else usage_json,
    }
    if not call.stream:
        return Prepared(response_id, usage, None if omit else usage_json, body=done)
    stream = _Stream()
    pending = {**envelope, "status": "in_progress", "output": [], "usage": None}
    stream.emit("response.created", response=pending)
    stream.emit("response.in_progress", response=pending)
    for index, item in enumerate(output_items):
        if item["type"] == "function_call" and tool is not None:
            stream.function_call(index, item, tool)
        elif item["type"] == "message":
            stream.message(index, item, pieces)
        else:
            stream.emit("response.output_item.added", output_index=index, item=item)
        stream.emit("response.output_item.done", output_index=index, item=item)
    stream.emit("response.incomplete" if truncated else "response.completed", response=done)
    return Prepared(response_id, usage, None if omit else usage_json, events=stream.events)


class _Stream:
    """The Responses API event sequence, numbered as the API numbers it."""

    def __init__(self) -> None:
        self.events: list[bytes] = []

    def emit(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "sequence_number": len(self.events), **fields}
        self.events.append(sse_event(event, kind))

    def function_call(self, index: int, item: dict[str, Any], tool: ToolCall) -> None:
        pending = _call_item(item["id"], tool, "", "in_progress")
        self.emit("response.output_item.added", output_index=index, item=pending)
        place = {"item_id": item["id"], "output_index": index}
        for part in chunk_text(tool.arguments):
            self.emit("response.function_call_arguments.delta", **place, delta=part)
        self.emit(
            "response.function_call_arguments.done",
            **place,
            arguments=tool.arguments,
            name=tool.name,
        )

    def message(self, index: int, item: dict[str, Any], pieces: tuple[str, ...]) -> None:
        pending = {**_message_item(item["id"], "", "in_progress"), "content": []}
        self.emit("response.output_item.added", output_index=index, item=pending)
        place = {"item_id": item["id"], "output_index": index, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self.emit("response.content_part.added", **place, part=part)
        for piece in pieces:
            self.emit("response.output_text.delta", **place, delta=piece, logprobs=[])
        text = "".join(pieces)
        self.emit("response.output_text.done", **place, text=text, logprobs=[])
        self.emit("response.content_part.done", **place, part={**part, "text": text})
