"""Amazon Bedrock runtime: ``POST /model/{modelId}/invoke`` and ``/invoke-with-response-stream``.

The body is the model vendor's own format, recognised by its keys:

- Anthropic (``anthropic_version``): the Messages API, answered by ``_anthropic``;
- Meta Llama (``prompt``): ``generation``, ``prompt_token_count``, ``generation_token_count``;
- Amazon Nova (``messages``): Converse-like content, ``usage.inputTokens``/``outputTokens``;
- Amazon Titan Text (``inputText``): ``inputTextTokenCount`` and ``results[].tokenCount``;
- Amazon Titan Embeddings (``inputText`` to a model whose id has ``embed``).

Every reply also carries Bedrock's own counts: ``X-Amzn-Bedrock-Input-Token-Count`` and
``-Output-Token-Count`` headers on a plain reply, ``amazon-bedrock-invocationMetrics`` in
the last chunk of a stream (input without the cache, whose reads and writes come apart).
Stream chunks are event-stream ``chunk`` events whose ``bytes`` are the vendor's JSON.
The ``no-usage`` fault drops all of these counts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from tollmeter.fakellm._anthropic import messages
from tollmeter.fakellm._bedrock import (
    EVENT_STREAM,
    as_messages_call,
    reply_body,
    text_pieces,
)
from tollmeter.fakellm._eventstream import event_message
from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._reply import BadRequest, Call, Prepared
from tollmeter.fakellm._text import Seed
from tollmeter.fakellm._tokens import count, encoding_name

__all__ = ["invoke", "invoke_stream"]

_DEFAULT_DIMENSIONS = 256
_MAX_DIMENSIONS = 8192
_STOPS = {"end_turn": "stop", "tool_use": "stop", "max_tokens": "length"}
_TITAN_STOPS = {"end_turn": "FINISH", "tool_use": "FINISH", "max_tokens": "LENGTH"}


def _uncached(usage: ReportedUsage) -> int:
    return usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens


def _metrics(usage: ReportedUsage) -> dict[str, int]:
    out = {
        "inputTokenCount": _uncached(usage),
        "outputTokenCount": usage.output_tokens,
        "invocationLatency": 1,
        "firstByteLatency": 1,
    }
    if usage.cache_read_tokens or usage.cache_write_tokens:
        out["cacheReadInputTokenCount"] = usage.cache_read_tokens
        out["cacheWriteInputTokenCount"] = usage.cache_write_tokens
    return out


def _count_headers(usage: ReportedUsage) -> dict[str, str]:
    return {
        "x-amzn-bedrock-input-token-count": str(_uncached(usage)),
        "x-amzn-bedrock-output-token-count": str(usage.output_tokens),
    }


class _Answer:
    """A vendor-format reply: the plain body, or the stream's chunk payloads."""

    def __init__(
        self,
        prepared: Prepared,
        body: dict[str, Any],
        chunks: Callable[[], list[dict[str, Any]]],
        usage_json: dict[str, Any] | None,
    ) -> None:
        self.prepared = prepared
        self.body = body
        self.chunks = chunks
        self.usage_json = usage_json


def _anthropic(call: Call, stream: bool) -> _Answer:
    body = {k: v for k, v in call.body.items() if k != "anthropic_version"}
    body["model"] = call.model
    if stream:
        body["stream"] = True
    prepared = messages(Call(body, call.model, call.directives, call.cache))
    payloads: list[dict[str, Any]] = []
    for event in prepared.events or ():
        data = json.loads(event.decode().split("data: ", 1)[1])
        # ``ping`` keeps an SSE connection alive; Bedrock's event stream has no use for it.
        if data.get("type") != "ping":
            payloads.append(data)
    return _Answer(prepared, prepared.body or {}, lambda: payloads, prepared.provider_usage)


def _llama(call: Call, stream: bool) -> _Answer:
    prompt = call.body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string", "prompt")
    history = [{"role": "user", "content": prompt}]
    prepared = messages(as_messages_call(call, history, max_tokens=call.body.get("max_gen_len")))
    reply = reply_body(prepared)
    text, stop = reply["content"][0]["text"], _STOPS[reply["stop_reason"]]
    usage, omit = prepared.usage, call.directives.omit_usage
    counts = {
        "prompt_token_count": usage.input_tokens,
        "generation_token_count": usage.output_tokens,
    }
    body: dict[str, Any] = {"generation": text, "stop_reason": stop}
    if not omit:
        body.update(counts)

    def chunks() -> list[dict[str, Any]]:
        pieces, enc, out = text_pieces(text), encoding_name(call.model, "anthropic"), []
        for index, piece in enumerate(pieces):
            so_far = count("".join(pieces[: index + 1]), enc)
            out.append(
                {
                    "generation": piece,
                    "prompt_token_count": None if omit or index else usage.input_tokens,
                    "generation_token_count": None if omit else so_far,
                    "stop_reason": stop if index == len(pieces) - 1 else None,
                }
            )
        return out

    return _Answer(prepared, body, chunks, None if omit else counts)


def _nova(call: Call, stream: bool) -> _Answer:
    config = call.body.get("inferenceConfig")
    max_tokens = config.get("maxTokens") if isinstance(config, Mapping) else None
    prepared = messages(
        as_messages_call(
            call,
            call.body.get("messages"),
            system=call.body.get("system"),
            max_tokens=max_tokens,
            tool_config=call.body.get("toolConfig"),
        )
    )
    reply = reply_body(prepared)
    text = "".join(block.get("text", "") for block in reply["content"])
    usage = prepared.usage
    usage_json = {
        "inputTokens": _uncached(usage),
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
        "cacheReadInputTokenCount": usage.cache_read_tokens,
        "cacheWriteInputTokenCount": usage.cache_write_tokens,
    }
    omit = call.directives.omit_usage
    message = {"role": "assistant", "content": [{"text": text}]}
    body: dict[str, Any] = {"output": {"message": message}, "stopReason": reply["stop_reason"]}
    if not omit:
        body["usage"] = usage_json

    def chunks() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
        for piece in text_pieces(text):
            out.append({"contentBlockDelta": {"delta": {"text": piece}, "contentBlockIndex": 0}})
        out.append({"contentBlockStop": {"contentBlockIndex": 0}})
        out.append({"messageStop": {"stopReason": reply["stop_reason"]}})
        if not omit:
            out.append({"metadata": {"usage": usage_json, "metrics": {}, "trace": {}}})
        return out

    return _Answer(prepared, body, chunks, None if omit else usage_json)


def _titan_text(call: Call, stream: bool) -> _Answer:
    text_in = call.body.get("inputText")
    config = call.body.get("textGenerationConfig")
    max_tokens = config.get("maxTokenCount") if isinstance(config, Mapping) else None
    history = [{"role": "user", "content": text_in}]
    prepared = messages(as_messages_call(call, history, max_tokens=max_tokens))
    reply = reply_body(prepared)
    text, stop = reply["content"][0]["text"], _TITAN_STOPS[reply["stop_reason"]]
    usage, omit = prepared.usage, call.directives.omit_usage
    result: dict[str, Any] = {"outputText": text, "completionReason": stop}
    body: dict[str, Any] = {"results": [result]}
    if not omit:
        body["inputTextTokenCount"] = usage.input_tokens
        result["tokenCount"] = usage.output_tokens

    def chunks() -> list[dict[str, Any]]:
        pieces, enc, out = text_pieces(text), encoding_name(call.model, "anthropic"), []
        for index, piece in enumerate(pieces):
            chunk: dict[str, Any] = {
                "outputText": piece,
                "index": 0,
                "completionReason": stop if index == len(pieces) - 1 else None,
            }
            if not omit:
                chunk["totalOutputTextTokenCount"] = count("".join(pieces[: index + 1]), enc)
                if index == 0:
                    chunk["inputTextTokenCount"] = usage.input_tokens
            out.append(chunk)
        return out

    counts = {"inputTextTokenCount": usage.input_tokens, "tokenCount": usage.output_tokens}
    return _Answer(prepared, body, chunks, None if omit else counts)


def _titan_embed(call: Call) -> Prepared:
    text = call.body.get("inputText")
    if not isinstance(text, str) or not text:
        raise BadRequest("inputText must be a non-empty string", "inputText")
    dimensions = call.body.get("dimensions", _DEFAULT_DIMENSIONS)
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise BadRequest("dimensions must be an integer", "dimensions")
    if not 1 <= dimensions <= _MAX_DIMENSIONS:
        raise BadRequest(f"dimensions must be between 1 and {_MAX_DIMENSIONS}", "dimensions")
    tokens = count(text, encoding_name(call.model, "anthropic"))
    seed = Seed(call.model, text)
    body: dict[str, Any] = {
        "embedding": [round(seed.next(2001) / 1000 - 1, 3) for _ in range(dimensions)]
    }
    usage = ReportedUsage(tokens, 0)
    omit = call.directives.omit_usage
    if not omit:
        body["inputTextTokenCount"] = tokens
    headers = {} if omit else _count_headers(usage)
    counts = None if omit else {"inputTextTokenCount": tokens}
    return Prepared(None, usage, counts, body=body, headers=headers)


def _answer(call: Call, stream: bool) -> _Answer:
    body = call.body
    if "anthropic_version" in body:
        return _anthropic(call, stream)
    if "prompt" in body:
        return _llama(call, stream)
    if "inputText" in body:
        return _titan_text(call, stream)
    if "messages" in body:
        return _nova(call, stream)
    raise BadRequest("the body matches no model format this server knows", "body")


def _is_embedding(call: Call) -> bool:
    return "inputText" in call.body and "embed" in call.model.lower()


def invoke(call: Call) -> Prepared:
    if _is_embedding(call):
        return _titan_embed(call)
    answer = _answer(call, stream=False)
    prepared = answer.prepared
    omit = call.directives.omit_usage
    headers = {} if omit else _count_headers(prepared.usage)
    return Prepared(
        prepared.response_id, prepared.usage, answer.usage_json, body=answer.body, headers=headers
    )


def invoke_stream(call: Call) -> Prepared:
    if _is_embedding(call):
        raise BadRequest("embedding models do not stream", "modelId")
    answer = _answer(call, stream=True)
    prepared = answer.prepared
    payloads = answer.chunks()
    if not call.directives.omit_usage and payloads:
        payloads[-1] = {
            **payloads[-1],
            "amazon-bedrock-invocationMetrics": _metrics(prepared.usage),
        }
    events = [
        event_message("chunk", {"bytes": base64.b64encode(json.dumps(p).encode()).decode()})
        for p in payloads
    ]
    return Prepared(
        prepared.response_id,
        prepared.usage,
        answer.usage_json,
        events=events,
        media_type=EVENT_STREAM,
        headers={"x-amzn-bedrock-content-type": "application/json"},
    )
