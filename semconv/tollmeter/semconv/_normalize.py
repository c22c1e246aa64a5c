"""Reading token usage from the span attributes of every known instrumentation dialect.

The rules, and the library versions they were checked against, are in docs/semconv.md
("Normalization rules").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

from tollmeter.semconv import attributes as attrs
from tollmeter.semconv._usage import Usage, token_count
from tollmeter.semconv.errors import InvalidUsage

__all__ = [
    "ANTHROPIC_COMPACTION_INPUT_TOKENS",
    "ANTHROPIC_COMPACTION_OUTPUT_TOKENS",
    "usage_from_attributes",
]

ANTHROPIC_COMPACTION_INPUT_TOKENS = "anthropic.usage.compaction.input_tokens"
"""Input tokens of context compactions, which the Anthropic SDK's spans report apart."""
ANTHROPIC_COMPACTION_OUTPUT_TOKENS = "anthropic.usage.compaction.output_tokens"
"""Output tokens of context compactions, which the Anthropic SDK's spans report apart."""


class _Count(NamedTuple):
    # A named tuple: built for every count of every span, and cheaper than a dataclass.
    attribute: str
    value: int
    canonical: bool
    """True when read from the current OpenTelemetry name, False when from an alias."""


@functools.cache
def _candidates(name: str) -> tuple[str, ...]:
    return (name, *attrs.ALIASES.get(name, ()))


def usage_from_attributes(
    attributes: Mapping[str, object], *, input_includes_cache: bool | None = None
) -> Usage | None:
    """The canonical ``Usage`` in ``attributes``, or None when they hold no usage attribute.

    Understands current and deprecated OpenTelemetry GenAI names, OpenLLMetry, OpenInference
    and the Anthropic SDK's native spans. ``input_includes_cache`` tells whether the input
    count already includes cached tokens; None (the default) infers it from the counts.
    Raises ``InvalidUsage`` naming the attribute when a value cannot be counted or the counts
    contradict each other.
    """
    input_ = _first(attributes, attrs.GEN_AI_USAGE_INPUT_TOKENS)
    output = _first(attributes, attrs.GEN_AI_USAGE_OUTPUT_TOKENS)
    cache_read = _first(attributes, attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
    cache_write = _first(attributes, attrs.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
    reasoning = _first(attributes, attrs.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)
    total = _first(attributes, attrs.TOLLMETER_USAGE_TOTAL_TOKENS)
    compaction_in = _exact(attributes, ANTHROPIC_COMPACTION_INPUT_TOKENS)
    compaction_out = _exact(attributes, ANTHROPIC_COMPACTION_OUTPUT_TOKENS)
    counts = (input_, output, cache_read, cache_write, reasoning, total)
    if all(count is None for count in counts) and compaction_in is None and compaction_out is None:
        return None

    cached = _value(cache_read) + _value(cache_write)
    reasoned = _value(reasoning)
    input_, output = _fill_from_total(input_, output, total)
    add_cache, add_reasoning = _excluded_parts(input_, output, total, cached, reasoned)
    if input_includes_cache is not None:
        add_cache = not input_includes_cache and input_ is not None

    input_tokens = _value(input_) + (cached if add_cache else 0)
    output_tokens = _value(output) + (reasoned if add_reasoning else 0)
    if input_ is None:
        # Only cache counts were reported: the input is at least what the cache accounts for.
        input_tokens = cached
    if output is None:
        output_tokens = reasoned
    if cached > input_tokens:
        culprit = cache_read if cache_read is not None else cache_write
        raise InvalidUsage(
            culprit.attribute if culprit else attrs.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            f"cached tokens ({cached}) exceed the input tokens ({input_tokens})",
        )
    unsplit = 0
    if total is not None:
        unsplit = total.value - input_tokens - output_tokens
        if unsplit < 0:
            raise InvalidUsage(
                total.attribute,
                f"total {total.value} is smaller than input + output "
                f"({input_tokens} + {output_tokens})",
            )
    try:
        return Usage(
            input_tokens=input_tokens + _value(compaction_in),
            output_tokens=output_tokens + _value(compaction_out),
            cache_read_input_tokens=_value(cache_read),
            cache_write_input_tokens=_value(cache_write),
            reasoning_output_tokens=reasoned,
            unsplit_tokens=unsplit,
        )
    except InvalidUsage as exc:
        # Sums of valid counts can still pass 2**40; name an attribute the span really has.
        sources = {
            "input_tokens": input_ or cache_read or cache_write or compaction_in,
            "output_tokens": output or reasoning or compaction_out,
            "unsplit_tokens": total,
        }
        culprit = sources.get(exc.attribute)
        if culprit is None:
            raise
        raise InvalidUsage(culprit.attribute, f"{exc.attribute}: {exc.reason}") from exc


def _fill_from_total(
    input_: _Count | None, output: _Count | None, total: _Count | None
) -> tuple[_Count | None, _Count | None]:
    """Derive the one missing side of input/output from a total, never the other way round."""
    if total is not None and input_ is not None and output is None:
        return input_, _rest(total, input_)
    if total is not None and output is not None and input_ is None:
        return _rest(total, output), output
    return input_, output


def _rest(total: _Count, known: _Count) -> _Count:
    rest = total.value - known.value
    if rest < 0:
        raise InvalidUsage(
            total.attribute,
            f"total {total.value} is smaller than {known.attribute} ({known.value})",
        )
    return _Count(total.attribute, rest, canonical=False)


def _excluded_parts(
    input_: _Count | None, output: _Count | None, total: _Count | None, cached: int, reasoned: int
) -> tuple[bool, bool]:
    """Whether the input leaves out the cached tokens, and the output the reasoning tokens.

    Only the counts can tell: a part larger than its whole proves the whole leaves it out, and
    a total that matches input + output only once the part is added proves the same.
    """
    add_cache = input_ is not None and cached > input_.value
    add_reasoning = output is not None and reasoned > output.value
    if add_cache or add_reasoning or total is None or input_ is None or output is None:
        return add_cache, add_reasoning
    if total.value == input_.value + output.value:
        return False, False
    # A current OpenTelemetry name has the documented meaning (cache and reasoning included);
    # only aliases, whose meaning varied between libraries and versions, are reinterpreted.
    options = []
    if cached and not input_.canonical:
        options.append((True, False))
    if reasoned and not output.canonical:
        options.append((False, True))
    if cached and reasoned and not input_.canonical and not output.canonical:
        options.append((True, True))
    for with_cache, with_reasoning in options:
        expected = input_.value + output.value
        expected += (cached if with_cache else 0) + (reasoned if with_reasoning else 0)
        if expected == total.value:
            return with_cache, with_reasoning
    return False, False


def _first(attributes: Mapping[str, object], name: str) -> _Count | None:
    """The first of ``name`` and its aliases that is present: newer names win over older ones."""
    for candidate in _candidates(name):
        value = attributes.get(candidate)
        if value is not None:
            return _Count(candidate, token_count(candidate, value), canonical=candidate == name)
    return None


def _exact(attributes: Mapping[str, object], name: str) -> _Count | None:
    value = attributes.get(name)
    return None if value is None else _Count(name, token_count(name, value), canonical=True)


def _value(count: _Count | None) -> int:
    return 0 if count is None else count.value
