"""Stopping a stream whose output reaches a hard limit while it is read.

``before_call`` (``_guard``) works out, once per call, how many output tokens the call may
still produce: from each ``tollmeter.budget`` in effect (what it has left once every other
call's usage and reservation is counted, ``_budget``) and from the guard (the output tokens
the check reserved plus what the collector's blocking or throttling output/total limits
have left). Each is a ``Cap``; ``arm(caps, model)`` leaves them for the stream proxy of the
same call, which takes them with ``take_armed()`` and feeds every chunk to an
``OutputWatch``.

The watch counts the output as it arrives: the provider's cumulative count when a chunk
carries one, else the text, tokenised with the model's encoding in batches. A batch is
tokenised once its characters could hold the room left (no token is shorter than a
character) or it is ``BATCH_CHARS`` long, so a long stream costs a length and a comparison
per chunk and its text is tokenised once, and the count is exact to the chunk where the
limit is reached. At each count a budget is told the stream's progress and asked its room
again: streams read at the same time within one budget learn of each other's output at
their next count, and counts come closer together as the room shrinks, so that together
they pass it by a few tokens, not a stream's worth each.

When a ``"stop"`` cap is reached the proxy closes the SDK stream (releasing the HTTP
connection), ends the span with what was consumed and ``tollmeter.stream.stopped=true``,
and raises the cap's exception at the caller's next chunk; a ``"warn"`` cap logs once and
the stream is read on.

Only what the caller reads through tollmeter's proxies is watched: iterating the stream,
Anthropic's ``text_stream`` or a Bedrock ``converse_stream()`` stream (whose events are
dicts; ``invoke_model_with_response_stream()`` bodies, in each vendor's format, are not) or
a Gemini ``generate_content_stream()``.
SDK helpers that drain a stream themselves (``get_final_message()``, ``until_done()``) and
raw responses parsed by the caller are metered when they end, not stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.trace import Span

from tollmeter.instrumentation._budget import Overrun
from tollmeter.instrumentation._estimate import count_text_tokens, prefetch_encoding
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.errors import TollmeterError

__all__ = ["Cap", "OutputWatch", "arm", "disarm", "take_armed"]

_log = logging.getLogger(__name__)

BATCH_CHARS = 4096
"""The most text a watch leaves uncounted (about a thousand tokens of English): bounds one
tokenisation, and how late a budget hears of a stream far from its limit."""

Reason = Literal["budget", "quota"]


@dataclass(slots=True)
class Cap:
    """At most ``room`` output tokens for this call, by ``reason``."""

    room: int
    mode: Overrun
    reason: Reason
    error: Callable[[int], TollmeterError]
    """The exception for the caller, given the output tokens consumed."""
    refresh: Callable[[int], int] | None = None
    """Told the output consumed at each count, answers the room now (streams read at the
    same time and calls that finished meanwhile change it)."""


_ARMED: ContextVar[tuple[tuple[Cap, ...], str | None] | None] = ContextVar(
    "tollmeter_stream_caps", default=None
)


def arm(caps: Sequence[Cap], model: str | None) -> None:
    """Leave ``caps`` for the stream of the call about to be made."""
    _ARMED.set((tuple(caps), model) if caps else None)
    if caps:
        prefetch_encoding(model)


def disarm() -> None:
    """Forget caps left by an earlier call (cheap when there are none)."""
    if _ARMED.get() is not None:
        _ARMED.set(None)


def take_armed() -> OutputWatch | None:
    """A watch over the caps armed for this call, consumed (``None`` when none were)."""
    armed = _ARMED.get()
    if armed is None:
        return None
    _ARMED.set(None)
    return OutputWatch(*armed)


class OutputWatch:
    """Counts one stream's output against its caps; see the module docstring."""

    __slots__ = (
        "_caps",
        "_model",
        "_pending",
        "_pending_chars",
        "_trigger",
        "consumed",
        "hit",
        "span",
        "warned",
    )

    def __init__(self, caps: Sequence[Cap], model: str | None) -> None:
        self._caps = sorted(caps, key=lambda cap: cap.room)
        self._model = model
        self._pending: list[str] = []
        self._pending_chars = 0
        self.consumed = 0
        """Output tokens counted so far (exact up to the text not yet tokenised)."""
        self.hit: Cap | None = None
        """The ``"stop"`` cap that was reached, once one is."""
        self.warned: Reason | None = None
        """The first ``"warn"`` cap that was passed."""
        self.span: Span | None = None
        """The call's span, told when a ``"warn"`` cap is passed."""
        self._trigger = self._room()

    def _room(self) -> int:
        # Tokenise once the pending text could hold the room left (and at least one char).
        if not self._caps:
            return 1 << 62
        return max(1, min(BATCH_CHARS, self._caps[0].room - self.consumed))

    def observe(self, chunk: Any) -> bool:
        """Count ``chunk``; whether a ``"stop"`` cap has just been reached."""
        found = _progress_of(chunk)
        if found is None:
            return False
        if isinstance(found, str):
            self._pending.append(found)
            self._pending_chars += len(found)
            if self._pending_chars < self._trigger:
                return False
            self.consumed += count_text_tokens("".join(self._pending), self._model)
        else:
            # The provider's count is cumulative: it replaces ours.
            self.consumed = found
        self._pending.clear()
        self._pending_chars = 0
        return self._check()

    def _check(self) -> bool:
        refreshed = False
        for cap in self._caps:
            if cap.refresh is not None:
                cap.room = cap.refresh(self.consumed)
                refreshed = True
        if refreshed:
            self._caps.sort(key=lambda c: c.room)
        while self._caps and self.consumed >= self._caps[0].room:
            cap = self._caps[0]
            del self._caps[0]
            if cap.mode == "stop":
                self.hit = cap
                return True
            _log.warning(
                "tollmeter: a stream of %s passed its %s (%d output tokens, %d allowed); "
                "reading on (overrun='warn')",
                self._model or "a model",
                cap.reason,
                self.consumed,
                cap.room,
            )
            if self.warned is None:
                self.warned = cap.reason
                if self.span is not None:
                    self.span.set_attributes(
                        {
                            attrs.TOLLMETER_STREAM_LIMIT_REACHED: cap.reason,
                            attrs.TOLLMETER_STREAM_STOPPED: False,
                        }
                    )
        self._trigger = self._room()
        return False


# -- what a chunk says about the output ---------------------------------------------------
# One reader per chunk type, chosen on first sight: the SDKs' chunk classes are few.

Progress = Callable[[Any], "str | int | None"]

_RESPONSES_TEXT = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
    }
)
_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _text(chunk: Any) -> str | int | None:
    return chunk or None


def _nothing(chunk: Any) -> str | int | None:
    return None


def _choices(chunk: Any) -> str | int | None:
    """OpenAI chat and legacy completion chunks."""
    usage = chunk.usage
    if usage is not None:
        count = getattr(usage, "completion_tokens", None)
        if isinstance(count, int):
            return count
    parts: list[str] = []
    for choice in chunk.choices:
        delta = getattr(choice, "delta", None)
        if delta is None:
            text = getattr(choice, "text", None)
        else:
            text = delta.content
            if not text:
                for call in getattr(delta, "tool_calls", None) or ():
                    function = call.function
                    if function is not None and function.arguments:
                        parts.append(function.arguments)
                text = getattr(delta, "refusal", None)
        if text:
            parts.append(text)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else "".join(parts)


def _typed(chunk: Any) -> str | int | None:
    """Anthropic message events and OpenAI Responses events."""
    kind = chunk.type
    if kind == "content_block_delta":
        delta = chunk.delta
        for name in ("text", "thinking", "partial_json"):
            value = getattr(delta, name, None)
            if isinstance(value, str):
                return value or None
        return None
    if kind in _RESPONSES_TEXT:
        delta = chunk.delta
        return delta if isinstance(delta, str) and delta else None
    if kind == "message_delta":
        count = getattr(getattr(chunk, "usage", None), "output_tokens", None)
        return count if isinstance(count, int) else None
    if kind in _RESPONSES_FINAL:
        usage = getattr(chunk.response, "usage", None)
        count = getattr(usage, "output_tokens", None)
        return count if isinstance(count, int) else None
    # Anthropic's ``MessageStream`` also yields ``text`` events repeating each delta.
    return None


def _converse(chunk: Any) -> str | int | None:
    """Bedrock ``ConverseStream`` events (plain dicts)."""
    delta = chunk.get("contentBlockDelta")
    if delta is not None:
        delta = delta.get("delta") or {}
        text = delta.get("text")
        if text is None:
            text = (delta.get("reasoningContent") or {}).get("text")
        if text is None:
            text = (delta.get("toolUse") or {}).get("input")
        return text if isinstance(text, str) and text else None
    metadata = chunk.get("metadata")
    if metadata is not None:
        count = (metadata.get("usage") or {}).get("outputTokens")
        return count if isinstance(count, int) else None
    return None


def _candidates(chunk: Any) -> str | int | None:
    """Gemini ``GenerateContentResponse`` chunks, whose usage is cumulative in each."""
    usage = chunk.usage_metadata
    if usage is not None:
        visible = getattr(usage, "candidates_token_count", None)
        if isinstance(visible, int):
            thoughts = getattr(usage, "thoughts_token_count", None)
            return visible + (thoughts if isinstance(thoughts, int) else 0)
    parts: list[str] = []
    for candidate in chunk.candidates or ():
        content = candidate.content
        for part in (content.parts if content is not None else None) or ():
            if isinstance(part.text, str) and part.text:
                parts.append(part.text)
    return "".join(parts) or None


_READERS: dict[type[Any], Progress] = {str: _text, dict: _converse}


def _progress_of(chunk: Any) -> str | int | None:
    reader = _READERS.get(chunk.__class__)
    if reader is None:
        if hasattr(chunk, "choices"):
            reader = _choices
        elif hasattr(chunk, "candidates") and hasattr(chunk, "usage_metadata"):
            reader = _candidates
        elif hasattr(chunk, "type"):
            reader = _typed
        else:
            reader = _nothing
        _READERS[chunk.__class__] = reader
    return reader(chunk)
