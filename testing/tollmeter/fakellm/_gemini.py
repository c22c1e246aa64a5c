"""The Gemini API (``google-genai``'s developer mode): generate, stream and batch-embed.

Routes, with the model in the path as the SDK sends it (``/v1/models/{model}:...``, or
``/v1beta/...`` for clients that choose that API version): ``:generateContent``,
``:streamGenerateContent?alt=sse`` and ``:batchEmbedContents`` (the only embedding call the
SDK makes against the Gemini API). Vertex AI's express mode (``vertexai=True`` with an API key)
generates through ``/v1beta1/publishers/google/models/{model}:...`` with the same bodies.

Counting rules, with ``o200k_base`` standing in for Gemini's own tokenizer: the tools' function
declarations as compact JSON, the system instruction, then every part of every content: text,
a function call's name and compact arguments, a function response's name and compact response,
and a flat ``MEDIA_PART_TOKENS`` per inline or file media part. Gemini shows no per-message
overhead, so none is charged. Implicit caching follows OpenAI's rule (see ``_cache``).

Usage as Gemini reports it: ``promptTokenCount`` includes ``cachedContentTokenCount``;
``candidatesTokenCount`` leaves out ``thoughtsTokenCount``; ``totalTokenCount`` is their sum.
Models named ``gemini-2.5-*`` or ``gemini-3*`` (but not ``*-lite``) think unless
``thinkingConfig.thinkingBudget`` is 0; a positive budget makes any model think, up to it.
``maxOutputTokens`` covers thoughts and reply together. A stream carries the usage so far in
every chunk, cumulative, and the final counts in the last one.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._reply import (
    BadRequest,
    Call,
    Prepared,
    Text,
    new_id,
    plan_output,
    reply,
)
from tollmeter.fakellm._sse import sse_event
from tollmeter.fakellm._text import Seed, json_instance
from tollmeter.fakellm._tokens import encode

__all__ = [
    "ENCODING",
    "GEMINI_ROUTES",
    "MEDIA_PART_TOKENS",
    "batch_embed_contents",
    "generate_content",
    "stream_generate_content",
]

ENCODING = "o200k_base"
MEDIA_PART_TOKENS = 258
"""Gemini's documented flat cost of an image up to 384 pixels on both sides."""

_ROLES = ("user", "model", "function")
_THINKING_PREFIXES = ("gemini-2.5", "gemini-3")
_PIECES_PER_CHUNK = 4
_DIMENSIONS = 768
_MAX_DIMENSIONS = 3072
_MAX_EMBED_REQUESTS = 250


def _get(item: Mapping[str, Any], name: str) -> Any:
    """``item[name]`` under its camelCase name or its snake_case one: like the real service
    (protobuf's JSON mapping), the fake takes both, and the SDK sends nested settings in the
    latter."""
    value = item.get(name)
    if value is None:
        value = item.get(re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _part_tokens(part: Any) -> list[int]:
    if not isinstance(part, Mapping):
        raise BadRequest("each part must be an object", "contents")
    tokens: list[int] = []
    if isinstance(part.get("text"), str):
        tokens += encode(part["text"], ENCODING)
    call = _get(part, "functionCall")
    if isinstance(call, Mapping):
        tokens += encode(str(call.get("name", "")) + _compact(call.get("args", {})), ENCODING)
    answer = _get(part, "functionResponse")
    if isinstance(answer, Mapping):
        text = str(answer.get("name", "")) + _compact(answer.get("response", {}))
        tokens += encode(text, ENCODING)
    if _get(part, "inlineData") is not None or _get(part, "fileData") is not None:
        # Token ids that stand for the media; their values only matter to the cache.
        tokens += [-1] * MEDIA_PART_TOKENS
    return tokens


def _contents(body: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("contents must be a non-empty array", "contents")
    for content in contents:
        if not isinstance(content, Mapping) or not isinstance(content.get("parts"), list):
            raise BadRequest("each content must be an object with parts", "contents")
        if content.get("role", "user") not in _ROLES:
            raise BadRequest("content role must be 'user', 'model' or 'function'", "contents")
    return contents


def _declarations(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    declared: list[Mapping[str, Any]] = []
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping):
            found = _get(tool, "functionDeclarations") or ()
            declared.extend(d for d in found if isinstance(d, Mapping) and "name" in d)
    return declared


def render(body: Mapping[str, Any]) -> list[int]:
    """The prompt of a generate request as token ids: its length is ``promptTokenCount``."""
    tokens: list[int] = []
    declarations = _declarations(body)
    if declarations:
        tokens += encode(_compact(declarations), ENCODING)
    system = _get(body, "systemInstruction")
    if isinstance(system, Mapping):
        for part in system.get("parts") or ():
            tokens += _part_tokens(part)
    for content in _contents(body):
        for part in content["parts"]:
            tokens += _part_tokens(part)
    return tokens


def _generation(body: Mapping[str, Any]) -> Mapping[str, Any]:
    config = _get(body, "generationConfig") or {}
    if not isinstance(config, Mapping):
        raise BadRequest("generationConfig must be an object", "generationConfig")
    return config


def _positive(config: Mapping[str, Any], name: str, *, minimum: int = 1) -> int | None:
    value = _get(config, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}", name)
    return value


def _thinking(model: str, config: Mapping[str, Any]) -> tuple[bool, int | None, bool]:
    """(whether the model thinks, its budget if capped, whether thoughts are returned)."""
    settings = _get(config, "thinkingConfig") or {}
    if not isinstance(settings, Mapping):
        raise BadRequest("thinkingConfig must be an object", "thinkingConfig")
    budget = _positive(settings, "thinkingBudget", minimum=-1)
    include = _get(settings, "includeThoughts") is True
    name = model.lower()
    default = name.startswith(_THINKING_PREFIXES) and "lite" not in name
    if budget == 0 or (budget is None and not default):
        return False, None, False
    return True, (None if budget in (None, -1) else budget), include


def _choose_call(body: Mapping[str, Any], seed: Seed) -> dict[str, Any] | None:
    """Call the first declared function unless told not to, or just given its response."""
    declarations = _declarations(body)
    config = _get(_get(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = str(config.get("mode", "AUTO")).upper() if isinstance(config, Mapping) else "AUTO"
    if not declarations or mode == "NONE":
        return None
    last = body["contents"][-1]["parts"]
    answered = any(isinstance(p, Mapping) and _get(p, "functionResponse") for p in last)
    if answered and mode != "ANY":
        return None
    chosen = declarations[0]
    schema = _get(chosen, "parametersJsonSchema") or chosen.get("parameters") or {}
    args = json_instance(_lower_types(schema), seed.child("args"))
    return {"name": str(chosen["name"]), "args": args if isinstance(args, dict) else {}}


def _lower_types(schema: Any) -> Any:
    """Gemini's schemas spell types in capitals (``OBJECT``); JSON Schema in lower case."""
    if isinstance(schema, Mapping):
        return {
            key: value.lower() if key == "type" and isinstance(value, str) else _lower_types(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(item) for item in schema]
    return schema


def _usage_json(prompt: int, cached: int, visible: int, thought: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": visible,
        "totalTokenCount": prompt + visible + thought,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if thought:
        usage["thoughtsTokenCount"] = thought
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return usage


def _count(text: str) -> int:
    return len(encode(text, ENCODING))


def _prepare(call: Call, stream: bool) -> Prepared:
    body = call.body
    prompt_tokens = render(body)
    config = _generation(body)
    cap = _positive(config, "maxOutputTokens")
    thinks, budget, include_thoughts = _thinking(call.model, config)
    seed = call.seed()
    n_reply, n_thought, truncated = plan_output(seed, call.directives, cap, reasoning=thinks)
    thought = reply(seed.child("thinking"), n_thought if budget is None else min(n_thought, budget))
    function_call = _choose_call(body, seed)
    if function_call is not None:
        text = Text(())
        visible = _count(function_call["name"] + _compact(function_call["args"]))
        finish = "STOP"
    else:
        text = reply(seed, n_reply)
        visible = _count(text.text)
        finish = "MAX_TOKENS" if truncated else "STOP"
    thought_tokens = _count(thought.text)
    cached = call.cache.openai(call.model, prompt_tokens).read
    prompt = len(prompt_tokens)
    usage = ReportedUsage(
        prompt,
        visible + thought_tokens,
        cache_read_tokens=cached,
        reasoning_tokens=thought_tokens,
    )
    usage_json = _usage_json(prompt, cached, visible, thought_tokens)
    omit = call.directives.omit_usage
    response_id = new_id("")[:22]
    head = {"modelVersion": call.model, "responseId": response_id}
    if not stream:
        parts: list[dict[str, Any]] = []
        if include_thoughts and thought.text:
            parts.append({"text": thought.text, "thought": True})
        if function_call is not None:
            parts.append({"functionCall": function_call})
        else:
            parts.append({"text": text.text})
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish}
        out: dict[str, Any] = {"candidates": [{**candidate, "index": 0}], **head}
        if not omit:
            out["usageMetadata"] = usage_json
        return Prepared(response_id, usage, None if omit else usage_json, body=out)
    events = _events(
        head,
        thought if include_thoughts else Text(()),
        text,
        function_call,
        finish,
        (prompt, cached, thought_tokens) if not omit else None,
    )
    return Prepared(response_id, usage, None if omit else usage_json, events=events)


def _events(
    head: Mapping[str, Any],
    thought: Text,
    text: Text,
    function_call: dict[str, Any] | None,
    finish: str,
    counts: tuple[int, int, int] | None,
) -> list[bytes]:
    """Chunks of a few words each; every one carries the usage so far (unless omitted)."""
    parts: list[tuple[dict[str, Any], bool]] = []
    for start in range(0, len(thought.pieces), _PIECES_PER_CHUNK):
        piece = "".join(thought.pieces[start : start + _PIECES_PER_CHUNK])
        parts.append(({"text": piece, "thought": True}, False))
    for start in range(0, len(text.pieces), _PIECES_PER_CHUNK):
        piece = "".join(text.pieces[start : start + _PIECES_PER_CHUNK])
        parts.append(({"text": piece}, True))
    if function_call is not None:
        parts.append(({"functionCall": function_call}, True))
    events: list[bytes] = []
    sent = ""
    for index, (part, visible) in enumerate(parts):
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
        if index == len(parts) - 1:
            candidate["finishReason"] = finish
        chunk: dict[str, Any] = {"candidates": [candidate], **head}
        if visible:
            call = _get(part, "functionCall")
            sent += part["text"] if call is None else call["name"] + _compact(call["args"])
        if counts is not None:
            prompt, cached, thought_tokens = counts
            chunk["usageMetadata"] = _usage_json(prompt, cached, _count(sent), thought_tokens)
        events.append(sse_event(chunk))
    return events


def generate_content(call: Call) -> Prepared:
    return _prepare(call, stream=False)


def stream_generate_content(call: Call) -> Prepared:
    return _prepare(call, stream=True)


def _vector(tokens: Sequence[int], dimensions: int) -> list[float]:
    """A unit vector that depends only on the input tokens."""
    rng = random.Random(Seed(",".join(map(str, tokens))).next(2**63))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def batch_embed_contents(call: Call) -> Prepared:
    requests = call.body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("requests must be a non-empty array", "requests")
    if len(requests) > _MAX_EMBED_REQUESTS:
        raise BadRequest(f"at most {_MAX_EMBED_REQUESTS} requests per batch", "requests")
    embeddings: list[dict[str, Any]] = []
    prompt = 0
    for item in requests:
        content = item.get("content") if isinstance(item, Mapping) else None
        if not isinstance(content, Mapping) or not isinstance(content.get("parts"), list):
            raise BadRequest("each request needs a content with parts", "requests")
        tokens = [token for part in content["parts"] for token in _part_tokens(part)]
        dimensions = _positive(item, "outputDimensionality") or _DIMENSIONS
        if dimensions > _MAX_DIMENSIONS:
            raise BadRequest(f"outputDimensionality is at most {_MAX_DIMENSIONS}", "requests")
        prompt += len(tokens)
        embeddings.append({"values": _vector(tokens, dimensions)})
    usage_json = {"promptTokenCount": prompt, "totalTokenCount": prompt}
    omit = call.directives.omit_usage
    out: dict[str, Any] = {"embeddings": embeddings}
    if not omit:
        out["usageMetadata"] = usage_json
    return Prepared(None, ReportedUsage(prompt, 0), None if omit else usage_json, body=out)


_GENERATE = (
    ("generateContent", generate_content),
    ("streamGenerateContent", stream_generate_content),
)
GEMINI_ROUTES: dict[str, Callable[[Call], Prepared]] = {
    **{
        f"/{version}/models/{{model_id}}:{method}": handler
        for version in ("v1", "v1beta")
        for method, handler in (*_GENERATE, ("batchEmbedContents", batch_embed_contents))
    },
    # Vertex AI in express mode (an API key, no project): the same bodies and replies.
    **{
        f"/v1beta1/publishers/google/models/{{model_id}}:{method}": handler
        for method, handler in _GENERATE
    },
}
"""Path (with the model as ``model_id``) -> handler."""
