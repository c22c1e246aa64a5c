"""Token counting for the fake LLM server.

Prompts are rendered into a flat list of token ids whose length *is* the input token count:
real tokens for text, plus a placeholder id for the fixed per-message overhead that the real
APIs charge. The same list feeds the prompt-cache rules, so cached counts can never exceed
the prompt.

Counting rules (documented in ``docs/fake-llm.md``):

* chat (OpenAI): 3 tokens per message, the role, the content (text parts; 85 per image
  part), ``name`` plus 1, tool calls (name and arguments), then 3 tokens that prime the reply;
  tool definitions count as their compact JSON, placed first like a system prefix.
* Anthropic: the same shape with ``cl100k_base`` standing in for Anthropic's tokenizer:
  tools as compact JSON, the system prompt, then per message 3 tokens, and each content block.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import tiktoken

from tollmeter.fakellm._errors import FakeLLMError

__all__ = [
    "OVERHEAD",
    "Api",
    "Rendered",
    "count",
    "encode",
    "encoding",
    "encoding_name",
    "preload",
    "render_anthropic",
    "render_chat",
    "render_responses",
    "render_texts",
]

Api = Literal["chat", "completions", "embeddings", "anthropic"]

#: Stands for an overhead token (message framing) that has no text of its own.
OVERHEAD = 2**31 - 1
_PER_MESSAGE = 3
_REPLY_PRIMING = 3
_PER_NAME = 1
_PER_IMAGE = 85
_ENCODINGS = ("o200k_base", "cl100k_base", "p50k_base")
_JSON_SEPARATORS = (",", ":")


def encoding_name(model: str, api: Api) -> str:
    """The tiktoken encoding the real service uses for ``model`` (a stand-in for Anthropic)."""
    if api == "anthropic":
        return "cl100k_base"
    try:
        return str(tiktoken.encoding_name_for_model(model))
    except KeyError:
        pass
    if api == "completions":
        return "p50k_base"
    if api == "embeddings":
        return "cl100k_base"
    return "o200k_base"


@functools.cache
def encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


def preload(timeout: float) -> None:
    """Load every encoding up front so that no request pays for (or fails on) loading one.

    tiktoken downloads a missing encoding without a timeout, so loading runs in a helper
    thread bounded by ``timeout``.
    """
    failures: list[BaseException] = []

    def load() -> None:
        try:
            for name in _ENCODINGS:
                encoding(name)
        except Exception as exc:  # handed over to the caller's thread below
            failures.append(exc)

    loader = threading.Thread(target=load, name="fake-llm-tiktoken", daemon=True)
    loader.start()
    loader.join(timeout)
    hint = "tiktoken encodings are needed offline: set TIKTOKEN_CACHE_DIR to a filled cache"
    if loader.is_alive():
        raise FakeLLMError(f"loading tiktoken encodings took over {timeout:g} s; {hint}")
    if failures:
        raise FakeLLMError(f"cannot load tiktoken encodings ({failures[0]}); {hint}") from failures[
            0
        ]


def encode(text: str, encoding_name: str) -> list[int]:
    return list(encoding(encoding_name).encode(text, disallowed_special=()))


def count(text: str, encoding_name: str) -> int:
    return len(encoding(encoding_name).encode(text, disallowed_special=()))


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=_JSON_SEPARATORS, sort_keys=True)


@dataclass
class Rendered:
    """A prompt as token ids, with the cache breakpoints it declares: (token offset, ttl)."""

    tokens: list[int] = field(default_factory=list)
    breakpoints: list[tuple[int, str]] = field(default_factory=list)

    def overhead(self, n: int) -> None:
        self.tokens.extend([OVERHEAD] * n)

    def text(self, text: str, encoding_name: str) -> None:
        if text:
            self.tokens.extend(encode(text, encoding_name))

    def mark(self, cache_control: Any) -> None:
        """Record a breakpoint here if ``cache_control`` asks for one."""
        if not cache_control:
            return
        ttl = cache_control.get("ttl") if isinstance(cache_control, Mapping) else None
        self.breakpoints.append((len(self.tokens), "1h" if ttl == "1h" else "5m"))


def _text_parts(content: Any) -> Iterable[tuple[str | None, int]]:
    """(text, extra overhead) for each part of an OpenAI message content."""
    if isinstance(content, str):
        yield content, 0
    elif isinstance(content, Sequence):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in ("image_url", "input_image", "image"):
                yield None, _PER_IMAGE
            elif isinstance(part.get("text"), str):
                yield part["text"], 0
            elif isinstance(part.get("refusal"), str):
                yield part["refusal"], 0


def _content(rendered: Rendered, content: Any, enc: str) -> None:
    for text, extra in _text_parts(content):
        if text is not None:
            rendered.text(text, enc)
        rendered.overhead(extra)


def render_chat(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None, enc: str
) -> Rendered:
    rendered = Rendered()
    if tools:
        rendered.text(_compact_json(list(tools)), enc)
    for message in messages:
        rendered.overhead(_PER_MESSAGE)
        rendered.text(str(message.get("role", "")), enc)
        _content(rendered, message.get("content"), enc)
        name = message.get("name")
        if isinstance(name, str):
            rendered.text(name, enc)
            rendered.overhead(_PER_NAME)
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(function, Mapping):
                continue
            rendered.text(str(function.get("name", "")), enc)
            rendered.text(str(function.get("arguments", "")), enc)
        tool_call_id = message.get("tool_call_id")
        if isinstance(tool_call_id, str):
            rendered.text(tool_call_id, enc)
    rendered.overhead(_REPLY_PRIMING)
    return rendered


def render_responses(
    instructions: str | None, items: Any, tools: Sequence[Any] | None, enc: str
) -> Rendered:
    """The Responses API input: a plain string, or a list of messages and tool items."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "developer", "content": instructions})
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, Sequence):
        for item in items:
            if not isinstance(item, Mapping):
                continue
            kind = item.get("type", "message")
            if kind == "message" or "role" in item:
                messages.append({"role": item.get("role", "user"), "content": item.get("content")})
            elif kind == "function_call":
                call = {"function": {"name": item.get("name"), "arguments": item.get("arguments")}}
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            elif kind == "function_call_output":
                output = item.get("output")
                text = output if isinstance(output, str) else _compact_json(output)
                messages.append({"role": "tool", "content": text})
    return render_chat(messages, tools, enc)


def render_texts(texts: Sequence[str | Sequence[int]], enc: str) -> list[list[int]]:
    """Each prompt or embedding input as token ids (token-id inputs are taken as they are)."""
    return [encode(text, enc) if isinstance(text, str) else list(text) for text in texts]


def _anthropic_block(rendered: Rendered, block: Any, enc: str) -> None:
    if isinstance(block, str):
        rendered.text(block, enc)
        return
    if not isinstance(block, Mapping):
        return
    kind = block.get("type")
    if kind == "text":
        rendered.text(str(block.get("text", "")), enc)
    elif kind in ("image", "document"):
        rendered.overhead(_PER_IMAGE)
    elif kind == "tool_use":
        rendered.text(str(block.get("name", "")), enc)
        rendered.text(_compact_json(block.get("input", {})), enc)
    elif kind == "tool_result":
        inner = block.get("content")
        if isinstance(inner, str):
            rendered.text(inner, enc)
        elif isinstance(inner, Sequence):
            for part in inner:
                _anthropic_block(rendered, part, enc)
    elif kind in ("thinking", "redacted_thinking"):
        rendered.text(str(block.get("thinking", "")), enc)
    rendered.mark(block.get("cache_control"))


def render_anthropic(
    system: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None, enc: str
) -> Rendered:
    """Tools, then system, then messages: the order Anthropic's prompt cache uses."""
    rendered = Rendered()
    for tool in tools or ():
        rendered.text(_compact_json(tool), enc)
        if isinstance(tool, Mapping):
            rendered.mark(tool.get("cache_control"))
    if isinstance(system, str):
        rendered.text(system, enc)
    elif isinstance(system, Sequence):
        for block in system:
            _anthropic_block(rendered, block, enc)
    for message in messages:
        rendered.overhead(_PER_MESSAGE)
        content = message.get("content")
        if isinstance(content, str):
            rendered.text(content, enc)
        elif isinstance(content, Sequence):
            for block in content:
                _anthropic_block(rendered, block, enc)
    return rendered
