"""``POST /v1/completions`` (legacy) and ``POST /v1/embeddings``."""

from __future__ import annotations

import base64
import math
import random
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._reply import (
    BadRequest,
    Call,
    Prepared,
    check_volume,
    new_id,
    now,
    optional_int,
    plan_output,
    reply,
)
from tollmeter.fakellm._sse import sse_event
from tollmeter.fakellm._text import Seed
from tollmeter.fakellm._tokens import count, encoding_name, render_texts

__all__ = ["completions", "embeddings"]

_MAX_CHOICES = 128
_MAX_INPUTS = 2048
_DIMENSIONS = {"text-embedding-3-large": 3072}
_DEFAULT_DIMENSIONS = 1536
_MAX_DIMENSIONS = 4096


def _inputs(value: Any, name: str) -> list[str | list[int]]:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [list(value)]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [list(v) for v in value]
    raise BadRequest(f"{name} must be a string, an array of strings or of token ids", name)


def completions(call: Call) -> Prepared:
    body = call.body
    prompts = _inputs(body.get("prompt"), "prompt")
    n = optional_int(body, "n") or 1
    if n * len(prompts) > _MAX_CHOICES:
        raise BadRequest(f"at most {_MAX_CHOICES} choices per request", "n")
    check_volume(n * len(prompts), call.directives)
    cap = optional_int(body, "max_tokens")
    if cap is None:
        cap = 16  # the legacy API's documented default
    enc = encoding_name(call.model, "completions")
    prompt_tokens = sum(len(tokens) for tokens in render_texts(prompts, enc))
    seed = call.seed()
    choices: list[tuple[tuple[str, ...], str]] = []
    for index in range(n * len(prompts)):
        choice_seed = seed.child(f"choice-{index}")
        n_reply, _, truncated = plan_output(choice_seed, call.directives, cap, reasoning=False)
        text = reply(choice_seed, n_reply)
        choices.append((text.pieces, "length" if truncated else "stop"))
    completion = sum(count("".join(pieces), enc) for pieces, _ in choices)
    usage = ReportedUsage(prompt_tokens, completion)
    usage_json = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    omit = call.directives.omit_usage
    response_id = new_id("cmpl-")
    head = {"id": response_id, "object": "text_completion", "created": now(), "model": call.model}
    if not call.stream:
        out: dict[str, Any] = {
            **head,
            "choices": [
                {"text": "".join(p), "index": i, "logprobs": None, "finish_reason": f}
                for i, (p, f) in enumerate(choices)
            ],
        }
        if not omit:
            out["usage"] = usage_json
        return Prepared(response_id, usage, None if omit else usage_json, body=out)
    options = body.get("stream_options")
    include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    extra = {"usage": None} if include_usage else {}
    events: list[bytes] = []
    for index, (pieces, finish) in enumerate(choices):
        for position, piece in enumerate(pieces):
            last = position == len(pieces) - 1
            item = {
                "text": piece,
                "index": index,
                "logprobs": None,
                "finish_reason": finish if last else None,
            }
            events.append(sse_event({**head, "choices": [item], **extra}))
    sent = include_usage and not omit
    if sent:
        events.append(sse_event({**head, "choices": [], "usage": usage_json}))
    events.append(sse_event("[DONE]"))
    return Prepared(response_id, usage, usage_json if sent else None, events=events)


def _vector(tokens: Sequence[int], dimensions: int) -> list[float]:
    """A unit vector that depends only on the input tokens."""
    rng = random.Random(Seed(",".join(map(str, tokens))).next(2**63))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def embeddings(call: Call) -> Prepared:
    body = call.body
    inputs = _inputs(body.get("input"), "input")
    if len(inputs) > _MAX_INPUTS:
        raise BadRequest(f"at most {_MAX_INPUTS} inputs per request", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise BadRequest("encoding_format must be 'float' or 'base64'", "encoding_format")
    dimensions = optional_int(body, "dimensions") or _DIMENSIONS.get(
        call.model, _DEFAULT_DIMENSIONS
    )
    if dimensions > _MAX_DIMENSIONS:
        raise BadRequest(f"dimensions must be at most {_MAX_DIMENSIONS}", "dimensions")
    enc = encoding_name(call.model, "embeddings")
    token_lists = render_texts(inputs, enc)
    prompt = sum(len(tokens) for tokens in token_lists)
    data = []
    for index, tokens in enumerate(token_lists):
        vector = _vector(tokens, dimensions)
        embedding: list[float] | str = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            if fmt == "base64"
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = ReportedUsage(prompt, 0)
    usage_json = {"prompt_tokens": prompt, "total_tokens": prompt}
    omit = call.directives.omit_usage
    out: dict[str, Any] = {"object": "list", "data": data, "model": call.model}
    if not omit:
        out["usage"] = usage_json
    return Prepared(None, usage, None if omit else usage_json, body=out)
