"""Stream handling for ``google-genai``.

``generate_content_stream`` yields ``GenerateContentResponse`` chunks, and the Gemini API puts
the usage so far in every one of them (cumulative: the latest is assigned, never summed); the
last chunk, with a finish reason on its candidate, carries the final counts. The handler keeps
a copy of the latest counts (taken when the chunk arrives, before the SDK's own continuation
logic may add earlier hops' usage to the chunk it passes on), the response id and model
version, finish reasons, and the generated text for the estimate used when no usage arrives.

A stream that ends before any finish reason (cut, or closed early) only has interim counts:
they are kept (the prompt count is exact, the output is what was generated so far) and marked
as an estimate.

The sync SDK stream is a generator that sends its request on first iteration; the async one
has sent it when awaited. Both are wrapped in the shared stream proxies (``_streams``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from tollmeter.instrumentation._streams import AsyncStreamProxy, StreamOutcome, SyncStreamProxy
from tollmeter.instrumentation._telemetry import Call, Telemetry, Usage
from tollmeter.instrumentation.google_genai.extract import (
    finish_reason,
    part_texts,
    usage_from_metadata,
)

__all__ = ["GenerateStreamHandler", "wrap_stream"]


class GenerateStreamHandler:
    """Accumulates ``GenerateContentResponse`` chunks; see the module docstring."""

    __slots__ = ("finish_reasons", "response_id", "response_model", "texts", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: dict[int, str] = {}
        self.texts: list[str] = []

    def on_chunk(self, chunk: Any) -> None:
        metadata = chunk.usage_metadata
        if metadata is not None:
            self.usage = usage_from_metadata(metadata) or self.usage
        if self.response_id is None:
            self.response_id = chunk.response_id
            self.response_model = chunk.model_version
        for position, candidate in enumerate(chunk.candidates or ()):
            content = candidate.content
            if content is not None:
                self.texts.extend(part_texts(content.parts))
            reason = finish_reason(candidate)
            if reason is not None:
                index = candidate.index
                self.finish_reasons[index if isinstance(index, int) else position] = reason

    def outcome(self) -> StreamOutcome:
        return StreamOutcome(
            usage=self.usage,
            response_model=self.response_model,
            response_id=self.response_id,
            finish_reasons=[self.finish_reasons[i] for i in sorted(self.finish_reasons)],
            output_text="".join(self.texts),
            # Counts sent before the end are interim: the real output may be larger.
            source="provider" if self.finish_reasons else "estimate",
        )


def wrap_stream(result: Any, telemetry: Telemetry, call: Call) -> Any:
    """``result`` behind the matching metering proxy, or ``None`` if it is not a stream."""
    if isinstance(result, AsyncIterator):
        return AsyncStreamProxy(result, telemetry, call, GenerateStreamHandler())
    if isinstance(result, Iterator):
        return SyncStreamProxy(result, telemetry, call, GenerateStreamHandler())
    return None
