"""The canonical token usage of one model call, and the validation of single counts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.errors import InvalidUsage

__all__ = ["MAX_TOKEN_COUNT", "Usage", "token_count"]

MAX_TOKEN_COUNT = 2**40
"""Counts must be below this: about a trillion tokens, far beyond any single call, yet small
enough that sums over millions of events still fit an int64 column."""

# More digits than any valid count has; refusing them before int() keeps hostile input cheap.
_MAX_DIGITS = len(str(MAX_TOKEN_COUNT))


def token_count(attribute: str, value: object) -> int:
    """``value`` as a token count, or ``InvalidUsage`` naming ``attribute``.

    Accepts ints and the decimal strings OTLP/JSON uses for int64; refuses bools, floats,
    negative or oversized numbers and anything else, so nothing is ever counted by guess.
    """
    if isinstance(value, bool):
        raise InvalidUsage(attribute, f"a boolean ({value}) is not a token count")
    if isinstance(value, int):
        count = value
    elif isinstance(value, str):
        count = _parse_decimal(attribute, value)
    elif isinstance(value, float):
        raise InvalidUsage(attribute, f"a float ({value!r}) is not a token count")
    else:
        raise InvalidUsage(attribute, f"{_describe(value)} is not a token count")
    if count < 0:
        raise InvalidUsage(attribute, f"negative count {count}")
    if count >= MAX_TOKEN_COUNT:
        raise InvalidUsage(attribute, f"count {count} is not below 2**40")
    return count


def _parse_decimal(attribute: str, text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidUsage(attribute, f"{_preview(text)} is not a decimal integer")
    if len(digits) > _MAX_DIGITS:
        raise InvalidUsage(attribute, f"{_preview(text)} is not below 2**40")
    return int(text)


def _describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"a bytes value ({len(value)} bytes)"
    kind = type(value)
    if kind.__module__ != "builtins" and kind.__repr__ is not object.__repr__:
        # A decoder's stand-in for a value with no Python type (an OTLP empty value)
        # says what it is; cut, since a sender may have chosen part of it.
        return repr(value)[:40]
    return f"a {kind.__name__}"


def _preview(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one model call, with the OpenTelemetry meaning of every total.

    ``input_tokens`` includes the cached input (``cache_read_input_tokens`` and
    ``cache_write_input_tokens``); ``output_tokens`` includes ``reasoning_output_tokens``.
    ``unsplit_tokens`` holds tokens known only from a reported total: the whole total when
    the source reported nothing else, or the part of a total its input and output leave out.

    The five exclusive buckets are ``uncached_input_tokens``, ``cache_read_input_tokens``,
    ``cache_write_input_tokens``, ``non_reasoning_output_tokens`` and
    ``reasoning_output_tokens``; with ``unsplit_tokens`` they add up to ``total_tokens``.
    Construction raises ``InvalidUsage`` when a count is not a valid token count or a part
    exceeds the total it belongs to.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_output_tokens: int = 0
    unsplit_tokens: int = 0

    def __post_init__(self) -> None:
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            # Plain in-range ints are the case of every valid event: checked inline, the
            # rest goes through the full validation that names what is wrong.
            if type(value) is int and 0 <= value < MAX_TOKEN_COUNT:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidUsage(name, f"expected an int, got {type(value).__name__}")
            token_count(name, value)
        cached = self.cache_read_input_tokens + self.cache_write_input_tokens
        if cached > self.input_tokens:
            raise InvalidUsage(
                "cache_read_input_tokens",
                f"cache read + write ({cached}) exceed input_tokens ({self.input_tokens})",
            )
        if self.reasoning_output_tokens > self.output_tokens:
            raise InvalidUsage(
                "reasoning_output_tokens",
                f"{self.reasoning_output_tokens} exceed output_tokens ({self.output_tokens})",
            )

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_input_tokens - self.cache_write_input_tokens

    @property
    def non_reasoning_output_tokens(self) -> int:
        return self.output_tokens - self.reasoning_output_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.unsplit_tokens

    @property
    def total_only(self) -> bool:
        """True when the source reported a total and nothing to split it into input and output."""
        return self.unsplit_tokens > 0 and self.input_tokens == 0 and self.output_tokens == 0

    def to_attributes(self) -> dict[str, int]:
        """The usage as current OpenTelemetry GenAI attributes; zero parts are left out.

        ``usage_from_attributes`` reads the result back into an equal ``Usage``.
        """
        result: dict[str, int] = {}
        if not self.total_only:
            result[attrs.GEN_AI_USAGE_INPUT_TOKENS] = self.input_tokens
            result[attrs.GEN_AI_USAGE_OUTPUT_TOKENS] = self.output_tokens
        optional = (
            (attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, self.cache_read_input_tokens),
            (attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, self.cache_write_input_tokens),
            (attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, self.reasoning_output_tokens),
        )
        result.update((name, value) for name, value in optional if value)
        if self.unsplit_tokens:
            result[attrs.TOLLMETER_USAGE_TOTAL_TOKENS] = self.total_tokens
        return result


# Read once: ``dataclasses.fields`` on every construction showed in ingest profiles.
_FIELD_NAMES = tuple(field.name for field in fields(Usage))
