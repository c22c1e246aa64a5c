"""Token estimates for calls whose provider reported no usage.

Used only when a response carries no usage (a stream without
``include_usage``, a cancelled or failed call, a provider that omits it); the
result is flagged ``tollmeter.usage.source=estimate`` on the span.

Encodings (tiktoken) are chosen per model family by ``encoding_name_for_model``
and loaded lazily, once per encoding name, on a background thread with a
deadline (``set_load_timeout``, ``DEFAULT_LOAD_TIMEOUT`` seconds by default):
tiktoken downloads missing encodings without a timeout of its own, and a
metered application must never hang on it. When an encoding cannot be loaded
(no network, no ``TIKTOKEN_CACHE_DIR`` cache, timeout) one warning names the
encoding and the cache variable, and counts use the character heuristic
``ceil(len(text) / 4)`` (at least 1 for non-empty text) until a late load
completes.

Public helpers (``prefetch_encoding(model)`` starts a load without waiting):

- ``count_text_tokens(text, model)``: tokens of a plain string.
- ``count_repeated_text_tokens(text, model)``: the same for text an application sends
  with every call (instructions, tool definitions), each count remembered so that the
  tokenizer runs once per distinct text rather than once per call;
  ``remembered_tokens(kind, key, model, render)`` remembers a count by a cheaper stand-in
  for the text (a tool definition's ``repr()`` for its JSON).
- ``estimate_chat_input_tokens(messages, model, tools=None)``: a chat request,
  with OpenAI's documented per-message overhead (3 tokens per message, 1 per
  ``name``, 3 to prime the reply), text content parts, tool calls, a flat
  ``IMAGE_PART_TOKENS`` per non-text part, and tool definitions counted as
  their compact JSON. Messages may be mappings or SDK objects. This is an
  approximation: providers render tools and images differently.
- ``estimate_prompt_tokens(prompt, model)``: a completion or embedding input:
  a string, a list of strings, a list of token ids or a list of such lists.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import tiktoken

from tollmeter.instrumentation._fields import field

__all__ = [
    "DEFAULT_LOAD_TIMEOUT",
    "IMAGE_PART_TOKENS",
    "count_repeated_text_tokens",
    "count_text_tokens",
    "encoding_name_for_model",
    "estimate_chat_input_tokens",
    "estimate_prompt_tokens",
    "prefetch_encoding",
    "remembered_tokens",
    "set_load_timeout",
]

_logger = logging.getLogger("tollmeter.instrumentation")

DEFAULT_LOAD_TIMEOUT: Final = 5.0
"""Seconds a caller waits for an encoding to load before using the heuristic."""

IMAGE_PART_TOKENS: Final = 85
"""Flat estimate for an image or other non-text content part (OpenAI's low-detail cost)."""

_PER_MESSAGE: Final = 3
_PER_NAME: Final = 1
_REPLY_PRIMING: Final = 3
_PER_TOOL: Final = 8

# First match wins; prefixes are compared to the lower-cased model name.
_FAMILIES: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4"), "o200k_base"),
    (("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-"), "cl100k_base"),
    (("text-davinci", "davinci", "curie", "babbage", "ada", "code-"), "p50k_base"),
    (("claude",), "cl100k_base"),
)
_DEFAULT_ENCODING: Final = "o200k_base"

_MAX_REMEMBERED: Final = 4096
# (encoding, kind, length, hash) of a text or its stand-in -> the text's token count. The key
# holds no text, so nothing the application sent stays in memory; two texts collide only with
# equal lengths and equal 64-bit hashes, and the count is an estimate shown beside the bill,
# never billed itself.
_remembered: dict[tuple[str, str, int, int], int] = {}


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...


class _Loader:
    """Loads one encoding on a daemon thread; callers wait for it up to the deadline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.encoding: _Encoding | None = None
        self.done = threading.Event()
        self.warned = False
        threading.Thread(target=self._load, name=f"tollmeter-tiktoken-{name}", daemon=True).start()

    def _load(self) -> None:
        try:
            self.encoding = tiktoken.get_encoding(self.name)
        except Exception as exc:
            _logger.debug("loading tiktoken encoding %s failed", self.name, exc_info=exc)
        finally:
            self.done.set()


_loaders: dict[str, _Loader] = {}
_loaders_lock = threading.Lock()
_load_timeout = DEFAULT_LOAD_TIMEOUT


def set_load_timeout(seconds: float) -> None:
    """Set how long a count may wait for an encoding to load (seconds, > 0)."""
    global _load_timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"load timeout must be a positive number of seconds, got {seconds!r}")
    _load_timeout = float(seconds)


def encoding_name_for_model(model: str | None) -> str:
    """The tiktoken encoding used to estimate ``model``'s tokens (``o200k_base`` if unknown)."""
    if model:
        lowered = model.lower().rsplit("/", 1)[-1]
        for prefixes, name in _FAMILIES:
            if lowered.startswith(prefixes):
                return name
    return _DEFAULT_ENCODING


def _loader(name: str) -> _Loader:
    loader = _loaders.get(name)
    if loader is None:
        with _loaders_lock:
            loader = _loaders.get(name)
            if loader is None:
                loader = _loaders[name] = _Loader(name)
    return loader


def prefetch_encoding(model: str | None) -> None:
    """Start loading ``model``'s encoding in the background, without waiting for it.

    For calls likely to need an estimate (a stream without provider usage), so that
    the estimate at the end does not wait for the first load.
    """
    _loader(encoding_name_for_model(model))


def _encoding(name: str) -> _Encoding | None:
    loader = _loader(name)
    if not loader.done.is_set():
        loader.done.wait(_load_timeout)
    if loader.encoding is None and not loader.warned:
        loader.warned = True
        _logger.warning(
            "tiktoken encoding %s could not be loaded (no network and no copy in "
            "TIKTOKEN_CACHE_DIR=%s); token estimates use about 4 characters per token",
            name,
            os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>"),
        )
    return loader.encoding


def _heuristic(text: str) -> int:
    return math.ceil(len(text) / 4)


def count_text_tokens(text: str, model: str | None) -> int:
    """Tokens in ``text`` for ``model``'s encoding (0 for empty text)."""
    if not text:
        return 0
    encoding = _encoding(encoding_name_for_model(model))
    if encoding is None:
        return _heuristic(text)
    return len(encoding.encode(text, disallowed_special=()))


def count_repeated_text_tokens(text: str, model: str | None) -> int:
    """``count_text_tokens`` for text sent with every call: counted once per encoding."""
    return remembered_tokens("text", text, model, lambda: text)


def remembered_tokens(kind: str, key: str, model: str | None, render: Callable[[], str]) -> int:
    """Tokens of ``render()`` in ``model``'s encoding, remembered by ``kind`` and ``key``.

    Equal keys of one kind must mean equal texts: the text itself, or a stand-in cheaper to
    build (``render`` then runs only when the count is not remembered yet). A count made with
    the heuristic (encoding not loaded) is not remembered, so the real count replaces it once
    the encoding loads.
    """
    name = encoding_name_for_model(model)
    remembered = (name, kind, len(key), hash(key))
    count = _remembered.get(remembered)
    if count is not None:
        return count
    text = render()
    if not text:
        return 0
    encoding = _encoding(name)
    if encoding is None:
        return _heuristic(text)
    count = len(encoding.encode(text, disallowed_special=()))
    if len(_remembered) >= _MAX_REMEMBERED:
        _remembered.clear()  # instructions and tools are few; only a misuse fills it
    _remembered[remembered] = count
    return count


def _content_tokens(content: object, model: str | None) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text_tokens(content, model)
    total = 0
    if isinstance(content, Iterable):
        for part in content:
            if isinstance(part, str):
                total += count_text_tokens(part, model)
                continue
            text = field(part, "text")
            if isinstance(text, str):
                total += count_text_tokens(text, model)
            else:
                total += IMAGE_PART_TOKENS
    return total


def _tool_call_tokens(tool_calls: object, model: str | None) -> int:
    if not isinstance(tool_calls, Iterable) or isinstance(tool_calls, (str, bytes)):
        return 0
    total = 0
    for call in tool_calls:
        function = field(call, "function")
        if function is None:
            continue
        for key in ("name", "arguments"):
            value = field(function, key)
            if isinstance(value, str):
                total += count_text_tokens(value, model)
    return total


def _as_json(value: object) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_none=True)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def estimate_chat_input_tokens(
    messages: Iterable[object], model: str | None, tools: Iterable[object] | None = None
) -> int:
    """Estimated input tokens of a chat request (see the module docstring for the formula)."""
    total = _REPLY_PRIMING
    for message in messages:
        total += _PER_MESSAGE
        if isinstance(message, str):
            total += count_text_tokens(message, model)
            continue
        role = field(message, "role")
        if isinstance(role, str):
            total += count_text_tokens(role, model)
        total += _content_tokens(field(message, "content"), model)
        if isinstance(field(message, "name"), str):
            total += _PER_NAME + count_text_tokens(field(message, "name"), model)
        total += _tool_call_tokens(field(message, "tool_calls"), model)
    for tool in tools or ():
        total += _PER_TOOL + count_text_tokens(_as_json(tool), model)
    return total


def estimate_prompt_tokens(prompt: object, model: str | None) -> int:
    """Estimated tokens of a completion prompt or embedding input."""
    if prompt is None:
        return 0
    if isinstance(prompt, str):
        return count_text_tokens(prompt, model)
    if isinstance(prompt, int):
        return 1
    if isinstance(prompt, Iterable):
        return sum(estimate_prompt_tokens(item, model) for item in prompt)
    return 0
