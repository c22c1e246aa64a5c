"""Hidden input tokens: what system/developer instructions and tool definitions cost per call.

The application writes these parts once and sends them with every call, so they are easy to
forget when reading a bill. ``hidden_input(instructions, tools, model)`` returns a callable
counting them with the estimates' tokenizer (``_estimate.count_repeated_text_tokens``): the
text of each instruction (a string, text parts or blocks, nested lists of those; media parts
add nothing) plus each tool definition as compact JSON with sorted keys. Only the count is
kept, never the text. With neither instructions nor tools there is nothing to count and no
callable (``None``), so a call without them pays nothing; otherwise the count is made when
the call finishes, and the tokenizer runs once per distinct text: the same instructions and
tools sent again are looked up, not tokenized again.

The count is this tokenizer's, not the provider's: providers add framing tokens and render
tools their own way, and Anthropic's and Gemini's tokenizers differ from tiktoken's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from tollmeter.instrumentation._estimate import (
    _as_json,
    count_repeated_text_tokens,
    remembered_tokens,
)
from tollmeter.instrumentation._fields import field

__all__ = ["INSTRUCTION_ROLES", "hidden_input", "instruction_texts"]

INSTRUCTION_ROLES: Final = frozenset({"system", "developer"})
"""Message roles whose content is an instruction rather than a turn of the conversation."""

_MAX_DEPTH: Final = 8


def instruction_texts(value: object, depth: int = 0) -> list[str]:
    """The text in an instruction: a string, parts or blocks with ``text``, lists of those."""
    if depth > _MAX_DEPTH or value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in instruction_texts(item, depth + 1)]
    text = field(value, "text")
    if isinstance(text, str):
        return [text]
    parts = field(value, "parts")
    if parts is not None:
        return instruction_texts(parts, depth + 1)
    return []


def hidden_input(
    instructions: Sequence[object], tools: Sequence[object], model: str | None
) -> Callable[[], int] | None:
    """A callable counting ``instructions`` and ``tools`` (``None`` when both are empty)."""
    if not instructions and not tools:
        return None
    instructions, tools = list(instructions), list(tools)

    def count() -> int:
        total = 0
        for text in instruction_texts(instructions):
            total += count_repeated_text_tokens(text, model)
        for tool in tools:
            total += _tool_tokens(tool, model)
        return total

    return count


def _tool_tokens(tool: object, model: str | None) -> int:
    """Tokens of a tool definition's compact JSON, remembered by its ``repr()`` when it is a
    plain dict: that costs half of the sorted JSON, and for plain data (what the SDKs' tool
    parameters are) equal reprs give equal JSON."""
    if type(tool) is dict:
        return remembered_tokens("tool", repr(tool), model, lambda: _as_json(tool))
    return count_repeated_text_tokens(_as_json(tool), model)
