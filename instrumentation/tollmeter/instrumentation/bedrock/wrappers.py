"""What finishes a Bedrock call after ``_make_api_call`` returned.

- ``ConverseStreamHandler`` accumulates the events of ``converse_stream``'s ``stream``: text,
  the stop reason and the final ``metadata`` event's usage.
- ``InvokeStreamHandler`` accumulates the chunks of ``invoke_model_with_response_stream``'s
  ``body``: each chunk's ``bytes`` are the vendor's JSON (Anthropic events, Llama, Nova or
  Titan chunks), and the last one carries ``amazon-bedrock-invocationMetrics``. Vendor counts
  are cumulative, so the latest of each is kept (assigned, never summed).
- ``BodyTee`` sits under ``invoke_model``'s ``StreamingBody`` and sees the bytes the caller
  reads; the call finishes when the body has been read to its end, is closed, or is
  dropped unread (then marked abandoned). Nothing is read on the caller's behalf.

A stream cut before its final counts yields the input the vendor reported so far (if any)
and an output estimated from the text received, flagged ``estimate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tollmeter.instrumentation._estimate import count_text_tokens
from tollmeter.instrumentation._safety import contained
from tollmeter.instrumentation._streams import MeteredProxy, StreamOutcome
from tollmeter.instrumentation._telemetry import Usage
from tollmeter.instrumentation.bedrock.extract import (
    body_outcome,
    converse_usage,
    metrics_usage,
    split_usage,
)

__all__ = ["BodyTee", "ConverseStreamHandler", "InvokeBodyHandler", "InvokeStreamHandler"]

_METRICS = "amazon-bedrock-invocationMetrics"


def _partial(input_tokens: int | None, text: str, model: str | None) -> StreamOutcome:
    """The outcome of a stream that ended before its final counts."""
    if input_tokens is None:
        return StreamOutcome(output_text=text)
    usage = Usage(input_tokens=input_tokens, output_tokens=count_text_tokens(text, model))
    return StreamOutcome(usage=usage, output_text=text, source="estimate")


class ConverseStreamHandler:
    """Accumulates ``ConverseStream`` events (dicts keyed by the event's type)."""

    __slots__ = ("model", "reasons", "texts", "usage")

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.texts: list[str] = []
        self.reasons: list[str] = []
        self.usage: Usage | None = None

    def on_chunk(self, chunk: Any) -> None:
        delta = chunk.get("contentBlockDelta")
        if delta is not None:
            part = delta.get("delta", {})
            text = part.get("text")
            if text is None:
                text = part.get("toolUse", {}).get("input") or part.get("reasoningContent", {}).get(
                    "text"
                )
            if text:
                self.texts.append(text)
        elif "messageStop" in chunk:
            self.reasons.append(chunk["messageStop"].get("stopReason"))
        elif "metadata" in chunk:
            self.usage = converse_usage(chunk["metadata"].get("usage"))

    def outcome(self) -> StreamOutcome:
        text = "".join(self.texts)
        if self.usage is None:
            return _partial(None, text, self.model)
        reasons = [r for r in self.reasons if isinstance(r, str)]
        return StreamOutcome(usage=self.usage, finish_reasons=reasons, output_text=text)


class InvokeStreamHandler:
    """Accumulates ``InvokeModelWithResponseStream`` chunks of any known vendor format."""

    __slots__ = (
        "cache_read",
        "cache_write",
        "done",
        "input",
        "metrics",
        "model",
        "output",
        "reasons",
        "response_id",
        "response_model",
        "texts",
    )

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.texts: list[str] = []
        self.reasons: list[str] = []
        self.input: int | None = None
        self.output: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None
        self.metrics: Usage | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.done = False

    def on_chunk(self, chunk: Any) -> None:
        raw = chunk.get("chunk", {}).get("bytes")
        if not raw:
            return
        data = json.loads(raw)
        if _METRICS in data:
            self.metrics = metrics_usage(data[_METRICS])
        if "type" in data:
            self._anthropic(data)
        elif "generation" in data:
            self._counts(data.get("prompt_token_count"), data.get("generation_token_count"))
            self._text(data.get("generation"), data.get("stop_reason"))
        elif "outputText" in data:
            self._counts(data.get("inputTextTokenCount"), data.get("totalOutputTextTokenCount"))
            self._text(data.get("outputText"), data.get("completionReason"))
        else:
            self._nova(data)

    def _counts(self, input_tokens: Any, output_tokens: Any) -> None:
        if isinstance(input_tokens, int):
            self.input = input_tokens
        if isinstance(output_tokens, int):
            self.output = output_tokens

    def _text(self, text: Any, reason: Any) -> None:
        if isinstance(text, str) and text:
            self.texts.append(text)
        if isinstance(reason, str):
            self.reasons.append(reason)
            self.done = True

    def _anthropic(self, event: Mapping[str, Any]) -> None:
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event.get("delta", {})
            text = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
            if text:
                self.texts.append(text)
            return
        if kind == "message_start":
            message = event.get("message", {})
            self.response_id = message.get("id")
            self.response_model = message.get("model")
            usage = message.get("usage", {})
        elif kind == "message_delta":
            usage = event.get("usage", {})
            self._text(None, event.get("delta", {}).get("stop_reason"))
        else:
            return
        self._counts(usage.get("input_tokens"), usage.get("output_tokens"))
        if isinstance(usage.get("cache_read_input_tokens"), int):
            self.cache_read = usage["cache_read_input_tokens"]
        if isinstance(usage.get("cache_creation_input_tokens"), int):
            self.cache_write = usage["cache_creation_input_tokens"]

    def _nova(self, data: Mapping[str, Any]) -> None:
        text = data.get("contentBlockDelta", {}).get("delta", {}).get("text")
        if text:
            self.texts.append(text)
        if "messageStop" in data:
            self.reasons.append(data["messageStop"].get("stopReason"))
        usage = data.get("metadata", {}).get("usage")
        if usage is not None:
            self._counts(usage.get("inputTokens"), usage.get("outputTokens"))
            self.cache_read = usage.get("cacheReadInputTokenCount")
            self.cache_write = usage.get("cacheWriteInputTokenCount")
            self.done = True

    def outcome(self) -> StreamOutcome:
        text = "".join(self.texts)
        usage = self.metrics
        if self.done:
            usage = split_usage(self.input, self.output, self.cache_read, self.cache_write) or usage
        if usage is None:
            partial = _partial(self.input, text, self.model)
            partial.response_id, partial.response_model = self.response_id, self.response_model
            return partial
        return StreamOutcome(
            usage=usage,
            response_model=self.response_model,
            response_id=self.response_id,
            finish_reasons=[r for r in self.reasons if isinstance(r, str)],
            output_text=text,
        )


class InvokeBodyHandler:
    """Collects the bytes of a plain ``invoke_model`` reply and reads them at the end."""

    __slots__ = ("headers", "parts")

    def __init__(self, headers: Mapping[str, Any]) -> None:
        self.headers = headers
        self.parts: list[bytes] = []

    def on_chunk(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def outcome(self) -> StreamOutcome:
        data = json.loads(b"".join(self.parts)) if self.parts else {}
        return body_outcome(data if isinstance(data, Mapping) else {}, self.headers)


class BodyTee(MeteredProxy):
    """Wraps the raw HTTP stream under a ``StreamingBody``; see the module docstring.

    ``StreamingBody`` reads its raw stream through ``read``, ``readinto`` and ``readlines``
    only, and its own iteration goes through its ``read``.
    """

    def read(self, amt: int | None = None, *args: Any, **kwargs: Any) -> Any:
        chunk = self._self_call(self.__wrapped__.read, amt, *args, **kwargs)
        self._self_seen(chunk, whole=amt is None)
        return chunk

    def readinto(self, buffer: Any) -> Any:
        count = self._self_call(self.__wrapped__.readinto, buffer)
        self._self_seen(bytes(memoryview(buffer)[:count]), whole=False)
        return count

    def readlines(self, *args: Any) -> Any:
        lines = self._self_call(self.__wrapped__.readlines, *args)
        self._self_seen(b"".join(lines), whole=not args)
        return lines

    def _self_call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except BaseException as exc:
            self._self_state.finish(exc)
            raise

    def _self_seen(self, chunk: bytes, *, whole: bool) -> None:
        state = self._self_state
        if chunk:
            with contained("bedrock.body"):
                state.handler.on_chunk(chunk)
        if whole or not chunk:
            state.finish()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_state.finish()
