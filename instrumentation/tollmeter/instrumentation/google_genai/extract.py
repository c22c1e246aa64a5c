"""Pure functions from ``google-genai`` requests and responses to telemetry values.

Nothing here performs I/O or keeps state. Requests are the keyword arguments of the SDK
method (``model``, ``contents``, ``config``: the config a pydantic object or a plain dict);
responses are SDK objects, read with ``getattr`` so that fields missing from one SDK release
yield ``None`` instead of an error.

Usage mapping. Gemini counts cached tokens inside ``prompt_token_count``, as OpenTelemetry
does, but leaves thinking out of ``candidates_token_count`` and tool-use prompts out of
``prompt_token_count``; its ``total_token_count`` is the sum of all four. So:

==========================================  ==================================================
OpenTelemetry                               ``usage_metadata``
==========================================  ==================================================
``gen_ai.usage.input_tokens``               ``prompt_token_count + tool_use_prompt_token_count``
``gen_ai.usage.output_tokens``              ``candidates_token_count + thoughts_token_count``
``gen_ai.usage.cache_read.input_tokens``    ``cached_content_token_count``
``gen_ai.usage.reasoning.output_tokens``    ``thoughts_token_count``
==========================================  ==================================================

Embeddings report ``usage_metadata.prompt_token_count`` when the service sends it, or (Vertex
AI) a ``statistics.token_count`` per embedding; otherwise the input is estimated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._endpoint import server_attributes as endpoint_attributes
from tollmeter.instrumentation._estimate import IMAGE_PART_TOKENS, count_text_tokens
from tollmeter.instrumentation._hidden import hidden_input
from tollmeter.instrumentation._streams import StreamOutcome
from tollmeter.instrumentation._telemetry import Usage
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.attributes import GenAiProviderNameValues

__all__ = [
    "GEMINI_API",
    "VERTEX_AI",
    "contents_input_estimate",
    "embed_outcome",
    "finish_reason",
    "generate_outcome",
    "hidden_input_counter",
    "max_output_tokens",
    "model_id",
    "part_texts",
    "provider",
    "request_attributes",
    "server_attributes",
    "usage_from_metadata",
]

GEMINI_API = GenAiProviderNameValues.GCP_GEN_AI
VERTEX_AI = GenAiProviderNameValues.GCP_VERTEX_AI


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _get(item: Any, name: str, camel: str | None = None) -> Any:
    """``item.name`` of an SDK object, or ``item[name]`` / ``item[camel]`` of a plain dict."""
    if isinstance(item, Mapping):
        value = item.get(name)
        return item.get(camel) if value is None and camel else value
    return getattr(item, name, None)


def _compact(value: Any) -> str:
    return json.dumps(value or {}, separators=(",", ":"), sort_keys=True, default=str)


def _api_client(resource: Any) -> Any:
    return getattr(resource, "_api_client", None)


def provider(resource: Any) -> str:
    """``gcp.vertex_ai`` for a Vertex AI client, else ``gcp.gen_ai`` (the Gemini API)."""
    return VERTEX_AI if getattr(_api_client(resource), "vertexai", False) is True else GEMINI_API


def server_attributes(resource: Any) -> dict[str, AttributeValue]:
    """``server.address``/``server.port`` from the client's base URL."""
    options = getattr(_api_client(resource), "_http_options", None)
    base_url = getattr(options, "base_url", None)
    return endpoint_attributes(base_url) if isinstance(base_url, str) else {}


def model_id(model: Any) -> str | None:
    """The model's id as price lists know it: ``models/gemini-2.5-flash`` and Vertex AI's
    ``projects/.../publishers/google/models/gemini-2.5-flash`` both become
    ``gemini-2.5-flash``; other names (tuned models) are kept as given."""
    if not isinstance(model, str) or not model:
        return None
    _, found, rest = model.rpartition("models/")
    return rest if found and rest and not model.startswith("tunedModels/") else model


def max_output_tokens(kwargs: Mapping[str, Any]) -> int | None:
    """The request's output limit (``config.max_output_tokens``), if it sets one."""
    return _int(_get(kwargs.get("config"), "max_output_tokens", "maxOutputTokens"))


def request_attributes(kwargs: Mapping[str, Any], *, stream: bool) -> dict[str, AttributeValue]:
    """Request attributes beyond operation/provider/model: stream flag and output limit."""
    values: dict[str, AttributeValue] = {}
    if stream:
        values[attrs.GEN_AI_REQUEST_STREAM] = True
    limit = max_output_tokens(kwargs)
    if limit is not None:
        values[attrs.GEN_AI_REQUEST_MAX_TOKENS] = limit
    return values


def usage_from_metadata(usage: Any) -> Usage | None:
    """OpenTelemetry usage from a ``usage_metadata`` (see the module docstring)."""
    prompt = _int(getattr(usage, "prompt_token_count", None))
    if prompt is None:
        return None
    tool_prompt = _int(getattr(usage, "tool_use_prompt_token_count", None)) or 0
    visible = _int(getattr(usage, "candidates_token_count", None))
    if visible is None:
        # Embeddings name it differently; a generate response may leave it out when empty.
        visible = _int(getattr(usage, "response_token_count", None)) or 0
    thoughts = _int(getattr(usage, "thoughts_token_count", None))
    return Usage(
        input_tokens=prompt + tool_prompt,
        output_tokens=visible + (thoughts or 0),
        cache_read_input_tokens=_int(getattr(usage, "cached_content_token_count", None)),
        reasoning_output_tokens=thoughts,
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def finish_reason(candidate: Any) -> str | None:
    """The candidate's finish reason in lower case (``stop``, ``max_tokens``), if it has one."""
    reason = getattr(candidate, "finish_reason", None)
    value = getattr(reason, "value", reason)
    return value.lower() if isinstance(value, str) and value else None


def part_texts(parts: Any) -> Iterator[str]:
    """The generated text of response parts: text (thoughts included) and function calls."""
    for part in parts or ():
        text = getattr(part, "text", None)
        if isinstance(text, str):
            yield text
        call = getattr(part, "function_call", None)
        if call is not None:
            yield str(getattr(call, "name", "") or "") + _compact(getattr(call, "args", None))


def generate_outcome(response: Any) -> StreamOutcome:
    """Outcome of a ``GenerateContentResponse``."""
    candidates = getattr(response, "candidates", None) or ()
    reasons = (finish_reason(candidate) for candidate in candidates)
    texts = (
        text
        for candidate in candidates
        for text in part_texts(getattr(getattr(candidate, "content", None), "parts", None))
    )
    return StreamOutcome(
        usage=usage_from_metadata(getattr(response, "usage_metadata", None)),
        response_model=_str(getattr(response, "model_version", None)),
        response_id=_str(getattr(response, "response_id", None)),
        finish_reasons=tuple(reason for reason in reasons if reason),
        output_text="".join(texts),
    )


def embed_outcome(response: Any) -> StreamOutcome:
    """Outcome of an ``EmbedContentResponse`` (no output tokens)."""
    usage = usage_from_metadata(getattr(response, "usage_metadata", None))
    if usage is None:
        counts: list[float] = []
        for embedding in getattr(response, "embeddings", None) or ():
            count = getattr(getattr(embedding, "statistics", None), "token_count", None)
            if not isinstance(count, (int, float)):
                counts = []
                break
            counts.append(count)
        if counts:
            usage = Usage(input_tokens=round(sum(counts)))
    return StreamOutcome(usage=None if usage is None else Usage(input_tokens=usage.input_tokens))


def _walk(value: Any, depth: int = 0) -> Iterator[str | None]:
    """Text in request contents (``None`` for each media part), whatever shape they take:
    a string, a ``Part`` or ``Content`` object or dict, or lists of those."""
    if depth > 8 or value is None:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item, depth + 1)
    elif _get(value, "parts") is not None:
        yield from _walk(_get(value, "parts"), depth + 1)
    else:
        text = _get(value, "text")
        if isinstance(text, str):
            yield text
        call = _get(value, "function_call", "functionCall")
        if call is not None:
            yield str(_get(call, "name") or "") + _compact(_get(call, "args"))
        answer = _get(value, "function_response", "functionResponse")
        if answer is not None:
            yield str(_get(answer, "name") or "") + _compact(_get(answer, "response"))
        media = ("inline_data", "inlineData"), ("file_data", "fileData")
        if any(_get(value, name, camel) is not None for name, camel in media):
            yield None
        elif not isinstance(value, Mapping) and not hasattr(type(value), "model_fields"):
            # Anything else the SDK accepts as a part (an image object, a file): media.
            yield None


def _declarations(tools: Any) -> list[Any]:
    declared: list[Any] = []
    for tool in tools if isinstance(tools, (list, tuple)) else ():
        found = _get(tool, "function_declarations", "functionDeclarations")
        for declaration in found or ():
            if hasattr(declaration, "model_dump"):
                declaration = declaration.model_dump(exclude_none=True, by_alias=True)
            declared.append(declaration)
    return declared


def hidden_input_counter(kwargs: Mapping[str, Any], model: str | None) -> Callable[[], int] | None:
    """Counts the request's system instruction and function declarations (``_hidden``)."""
    config = kwargs.get("config")
    system = _get(config, "system_instruction", "systemInstruction")
    return hidden_input([system] if system else [], _declarations(_get(config, "tools")), model)


def contents_input_estimate(kwargs: Mapping[str, Any], model: str | None) -> Callable[[], int]:
    """A callable estimating a generate or embed request's input tokens, run only if needed.

    Text of the system instruction and of every part, function declarations as compact JSON,
    and ``IMAGE_PART_TOKENS`` per media part; Gemini adds no visible per-message overhead.
    """
    contents = kwargs.get("contents")
    config = kwargs.get("config")
    system = _get(config, "system_instruction", "systemInstruction")
    tools = _get(config, "tools")

    def estimate() -> int:
        total = 0
        declarations = _declarations(tools)
        if declarations:
            total += count_text_tokens(_compact(declarations), model)
        for piece in (*_walk(system), *_walk(contents)):
            total += IMAGE_PART_TOKENS if piece is None else count_text_tokens(piece, model)
        return total

    return estimate
