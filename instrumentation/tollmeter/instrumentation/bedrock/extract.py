"""Pure helpers reading Bedrock runtime requests and replies (plain dicts, as boto3 has them).

Usage, in OpenTelemetry's convention (input includes the cache reads and writes):

- Converse: ``usage.inputTokens`` (without the cache), ``cacheReadInputTokens``,
  ``cacheWriteInputTokens``, ``outputTokens``;
- InvokeModel, by the vendor's body format: Anthropic ``usage`` (``input_tokens`` without
  the cache, ``cache_read_input_tokens``, ``cache_creation_input_tokens``), Meta Llama
  ``prompt_token_count``/``generation_token_count``, Amazon Nova ``usage.inputTokens``/
  ``outputTokens`` (and ``cacheRead/WriteInputTokenCount``), Amazon Titan
  ``inputTextTokenCount`` and ``results[].tokenCount``;
- any other body: Bedrock's own counts, the ``X-Amzn-Bedrock-*-Token-Count`` headers of a
  plain reply or the ``amazon-bedrock-invocationMetrics`` of a stream's last chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from opentelemetry.util.types import AttributeValue

from tollmeter.instrumentation._endpoint import server_attributes as endpoint_attributes
from tollmeter.instrumentation._estimate import (
    estimate_chat_input_tokens,
    estimate_prompt_tokens,
)
from tollmeter.instrumentation._hidden import hidden_input
from tollmeter.instrumentation._streams import StreamOutcome
from tollmeter.instrumentation._telemetry import Usage
from tollmeter.semconv import attributes as attrs

__all__ = [
    "PROVIDER",
    "SERVICE",
    "body_outcome",
    "converse_hidden_input",
    "converse_input_estimate",
    "converse_outcome",
    "converse_texts",
    "converse_usage",
    "estimate_model",
    "invoke_input_estimate",
    "invoke_operation",
    "metrics_usage",
    "parse_body",
    "request_max_tokens",
    "server_attributes",
    "split_usage",
]

PROVIDER: Final = attrs.GenAiProviderNameValues.AWS_BEDROCK
SERVICE: Final = "bedrock-runtime"
_HEADER = "x-amzn-bedrock-{}-token-count"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def split_usage(
    uncached: Any, output: Any, cache_read: Any = None, cache_write: Any = None
) -> Usage | None:
    """A ``Usage`` from counts that report the cache apart from the input (Bedrock's way)."""
    uncached, output = _int(uncached), _int(output)
    if uncached is None or output is None:
        return None
    read, write = _int(cache_read), _int(cache_write)
    return Usage(
        input_tokens=uncached + (read or 0) + (write or 0),
        output_tokens=output,
        cache_read_input_tokens=read,
        cache_write_input_tokens=write,
    )


def estimate_model(model_id: str | None) -> str | None:
    """The model name behind a Bedrock id, for choosing a tokenizer.

    ``us.anthropic.claude-3-haiku-...`` and ARNs ending in such an id name a Claude model;
    other vendors' ids are kept (the estimate then uses the default encoding).
    """
    if not model_id:
        return None
    name = model_id.rsplit("/", 1)[-1]
    _, sep, rest = name.partition("anthropic.")
    return rest if sep else name


def server_attributes(client: Any) -> dict[str, AttributeValue]:
    """``server.address``/``server.port`` from the client's endpoint URL."""
    url = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return endpoint_attributes(url) if isinstance(url, str) else {}


def parse_body(body: Any) -> Mapping[str, Any]:
    """An InvokeModel request body as JSON; empty when it is a file or not JSON.

    A file-like body is never read: that would consume what botocore is about to send.
    """
    if isinstance(body, (bytes, bytearray, str)):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return _map(parsed)
    return {}


def request_max_tokens(api_params: Mapping[str, Any], body: Mapping[str, Any]) -> int | None:
    """The output cap of a request, wherever its format keeps it."""
    config = _map(api_params.get("inferenceConfig")) or _map(body.get("inferenceConfig"))
    for value in (
        config.get("maxTokens"),
        body.get("max_tokens"),
        body.get("max_gen_len"),
        _map(body.get("textGenerationConfig")).get("maxTokenCount"),
    ):
        limit = _int(value)
        if limit is not None:
            return limit
    return None


def invoke_operation(model_id: str | None, body: Mapping[str, Any]) -> str:
    """``embeddings`` for an embedding model, ``text_completion`` for a bare prompt, or ``chat``."""
    if model_id and "embed" in model_id.lower():
        return attrs.GenAiOperationNameValues.EMBEDDINGS
    if "prompt" in body or "inputText" in body:
        return attrs.GenAiOperationNameValues.TEXT_COMPLETION
    return attrs.GenAiOperationNameValues.CHAT


def _block_texts(content: Any) -> Iterable[str]:
    """Texts of Converse (or Nova) content blocks: text, reasoning, tool use and results."""
    if isinstance(content, str):
        yield content
        return
    for block in content if isinstance(content, list) else ():
        block = _map(block)
        if isinstance(block.get("text"), str):
            yield block["text"]
        elif "toolUse" in block:
            use = _map(block["toolUse"])
            yield json.dumps(use.get("input"), separators=(",", ":"))
        elif "toolResult" in block:
            yield from _block_texts(_map(block["toolResult"]).get("content"))
        elif "json" in block:
            yield json.dumps(block["json"], separators=(",", ":"))
        elif "reasoningContent" in block:
            reasoning = _map(_map(block["reasoningContent"]).get("reasoningText"))
            if isinstance(reasoning.get("text"), str):
                yield reasoning["text"]


def converse_texts(messages: Any, system: Any = None) -> list[dict[str, Any]]:
    """Converse messages (and system blocks) as chat messages of plain text parts."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": list(_block_texts(system))})
    for message in messages if isinstance(messages, list) else ():
        message = _map(message)
        out.append(
            {"role": message.get("role"), "content": list(_block_texts(message.get("content")))}
        )
    return out


def _tools(config: Any) -> list[Any]:
    return [
        tool["toolSpec"]
        for tool in _map(config).get("tools") or ()
        if isinstance(tool, Mapping) and "toolSpec" in tool
    ]


def converse_hidden_input(params: Mapping[str, Any], model: str | None) -> Callable[[], int] | None:
    """Counts a Converse request's system blocks and tool specs (``_hidden``)."""
    system = params.get("system")
    return hidden_input(
        [system] if isinstance(system, list) and system else [],
        _tools(params.get("toolConfig")),
        model,
    )


def converse_input_estimate(params: Mapping[str, Any], model: str | None) -> int:
    messages = converse_texts(params.get("messages"), params.get("system"))
    return estimate_chat_input_tokens(messages, model, _tools(params.get("toolConfig")))


def invoke_input_estimate(body: Mapping[str, Any], model: str | None) -> int:
    """Input tokens of an InvokeModel body of any of the known vendor formats."""
    if "anthropic_version" in body:
        messages = list(body.get("messages") or ())
        if body.get("system"):
            messages.insert(0, {"role": "system", "content": body["system"]})
        return estimate_chat_input_tokens(messages, model, body.get("tools"))
    if "messages" in body:
        return converse_input_estimate(body, model)
    return estimate_prompt_tokens(body.get("prompt", body.get("inputText")), model)


def converse_usage(usage: Any) -> Usage | None:
    usage = _map(usage)
    return split_usage(
        usage.get("inputTokens"),
        usage.get("outputTokens"),
        usage.get("cacheReadInputTokens"),
        usage.get("cacheWriteInputTokens"),
    )


def converse_outcome(response: Mapping[str, Any]) -> StreamOutcome:
    message = _map(_map(response.get("output")).get("message"))
    stop = response.get("stopReason")
    return StreamOutcome(
        usage=converse_usage(response.get("usage")),
        finish_reasons=[stop] if isinstance(stop, str) else [],
        output_text="".join(_block_texts(message.get("content"))),
    )


def metrics_usage(metrics: Any) -> Usage | None:
    """Bedrock's ``amazon-bedrock-invocationMetrics``."""
    metrics = _map(metrics)
    return split_usage(
        metrics.get("inputTokenCount"),
        metrics.get("outputTokenCount"),
        metrics.get("cacheReadInputTokenCount"),
        metrics.get("cacheWriteInputTokenCount"),
    )


def _header_usage(headers: Mapping[str, Any]) -> Usage | None:
    def number(kind: str) -> int | None:
        value = headers.get(_HEADER.format(kind))
        return int(value) if isinstance(value, str) and value.isdigit() else None

    return split_usage(
        number("input"), number("output"), number("cache-read-input"), number("cache-write-input")
    )


def _anthropic(data: Mapping[str, Any]) -> StreamOutcome:
    usage = _map(data.get("usage"))
    texts = [b.get("text", "") for b in data.get("content") or () if isinstance(b, Mapping)]
    stop = data.get("stop_reason")
    return StreamOutcome(
        usage=split_usage(
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            usage.get("cache_read_input_tokens"),
            usage.get("cache_creation_input_tokens"),
        ),
        response_model=data.get("model") if isinstance(data.get("model"), str) else None,
        response_id=data.get("id") if isinstance(data.get("id"), str) else None,
        finish_reasons=[stop] if isinstance(stop, str) else [],
        output_text="".join(t for t in texts if isinstance(t, str)),
    )


def _titan(data: Mapping[str, Any]) -> StreamOutcome:
    results = [_map(r) for r in data.get("results") or ()]
    counts = [_int(r.get("tokenCount")) for r in results]
    output = None if not counts or None in counts else sum(c or 0 for c in counts)
    reasons = [r["completionReason"] for r in results if isinstance(r.get("completionReason"), str)]
    return StreamOutcome(
        usage=split_usage(data.get("inputTextTokenCount"), 0 if "embedding" in data else output),
        finish_reasons=reasons,
        output_text="".join(str(r.get("outputText", "")) for r in results),
    )


def body_outcome(data: Mapping[str, Any], headers: Mapping[str, Any]) -> StreamOutcome:
    """What a plain InvokeModel reply says, by the vendor format its keys show."""
    if data.get("type") == "message" or ("stop_reason" in data and "content" in data):
        outcome = _anthropic(data)
    elif "generation" in data:
        stop = data.get("stop_reason")
        outcome = StreamOutcome(
            usage=split_usage(data.get("prompt_token_count"), data.get("generation_token_count")),
            finish_reasons=[stop] if isinstance(stop, str) else [],
            output_text=str(data.get("generation") or ""),
        )
    elif "output" in data:
        outcome = converse_outcome(data)
        usage = _map(data.get("usage"))
        outcome.usage = split_usage(
            usage.get("inputTokens"),
            usage.get("outputTokens"),
            usage.get("cacheReadInputTokenCount"),
            usage.get("cacheWriteInputTokenCount"),
        )
    elif "results" in data or "embedding" in data:
        outcome = _titan(data)
    else:
        outcome = StreamOutcome()
    if outcome.usage is None:
        outcome.usage = _header_usage(headers)
    return outcome
