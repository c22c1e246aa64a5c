"""Per-request directives: injected faults and reply shaping.

A request chooses them with ``x-fake-*`` headers, or, for clients that cannot set headers,
with a query-style suffix on the model name: ``gpt-4o-mini?fault=429&retry_after=2``. The
suffix is stripped before the model is used anywhere. Headers win over the suffix.

* ``x-fake-fault`` / ``fault``: comma-separated ``429``, ``500``, ``slow``, ``disconnect``,
  ``no-usage``;
* ``x-fake-delay-ms`` / ``delay_ms``: the ``slow`` delay before the first token (500);
* ``x-fake-disconnect-after`` / ``disconnect_after``: chunks sent before the cut (3);
* ``x-fake-retry-after`` / ``retry_after``: seconds announced with a ``429`` (1);
* ``x-fake-fault-attempts`` / ``attempts``: ``429``/``500`` only while the client's retry
  count is below this (default: on every attempt);
* ``x-fake-reply-tokens`` / ``reply_tokens``: reply length before the output cap;
* ``x-fake-chunk-delay-ms`` / ``chunk_delay_ms``: pause between stream chunks (0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

__all__ = [
    "FAULTS",
    "MAX_REPLY_TOKENS",
    "Directives",
    "FaultError",
    "parse_directives",
    "split_model",
]

Fault = Literal["429", "500", "slow", "disconnect", "no-usage"]
FAULTS: tuple[Fault, ...] = ("429", "500", "slow", "disconnect", "no-usage")

_DEFAULT_DELAY_MS = 500.0
_DEFAULT_DISCONNECT_AFTER = 3
_DEFAULT_RETRY_AFTER = 1.0
_MAX_DELAY_MS = 600_000.0
_MAX_CHUNK_DELAY_MS = 60_000.0
MAX_REPLY_TOKENS = 32_768
_MAX_COUNT = 1_000_000
_MAX_RETRY_AFTER = 3600.0

# (header, suffix key)
_KEYS: dict[str, tuple[str, str]] = {
    "fault": ("x-fake-fault", "fault"),
    "delay_ms": ("x-fake-delay-ms", "delay_ms"),
    "disconnect_after": ("x-fake-disconnect-after", "disconnect_after"),
    "retry_after": ("x-fake-retry-after", "retry_after"),
    "attempts": ("x-fake-fault-attempts", "attempts"),
    "reply_tokens": ("x-fake-reply-tokens", "reply_tokens"),
    "chunk_delay_ms": ("x-fake-chunk-delay-ms", "chunk_delay_ms"),
}


class FaultError(ValueError):
    """A directive is malformed; reported to the client as a 400."""


@dataclass(frozen=True)
class Directives:
    faults: frozenset[Fault] = frozenset()
    delay_ms: float = _DEFAULT_DELAY_MS
    disconnect_after: int = _DEFAULT_DISCONNECT_AFTER
    retry_after: float = _DEFAULT_RETRY_AFTER
    attempts: int | None = None
    reply_tokens: int | None = None
    chunk_delay_ms: float = 0.0

    def error_status(self, retry_count: int) -> int | None:
        """The error status to answer with instead of a reply, if any."""
        if self.attempts is not None and retry_count >= self.attempts:
            return None
        if "429" in self.faults:
            return 429
        if "500" in self.faults:
            return 500
        return None

    @property
    def first_token_delay(self) -> float:
        return self.delay_ms / 1000 if "slow" in self.faults else 0.0

    @property
    def cut_after(self) -> int | None:
        return self.disconnect_after if "disconnect" in self.faults else None

    @property
    def omit_usage(self) -> bool:
        return "no-usage" in self.faults

    def as_list(self) -> list[str]:
        return sorted(self.faults)


def split_model(model: str) -> tuple[str, dict[str, str]]:
    """``"gpt-4o?fault=429"`` -> ``("gpt-4o", {"fault": "429"})``."""
    base, sep, query = model.partition("?")
    if not sep:
        return model, {}
    parsed = parse_qs(query, keep_blank_values=True)
    return base, {key: values[-1] for key, values in parsed.items()}


def _number(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FaultError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise FaultError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def parse_directives(headers: Mapping[str, str], suffix: Mapping[str, str]) -> Directives:
    unknown = sorted(set(suffix) - {key for _, key in _KEYS.values()})
    if unknown:
        raise FaultError(f"unknown model suffix keys: {', '.join(unknown)}")
    raw: dict[str, str] = {}
    for name, (header, key) in _KEYS.items():
        value = headers.get(header, suffix.get(key))
        if value is not None and value.strip():
            raw[name] = value.strip()
    faults: set[Fault] = set()
    for item in raw.get("fault", "").split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item not in FAULTS:
            raise FaultError(f"unknown fault {item!r}; known: {', '.join(FAULTS)}")
        faults.add(item)

    def number(name: str, low: float, high: float) -> float | None:
        return _number(name, raw[name], low, high) if name in raw else None

    delay = number("delay_ms", 0, _MAX_DELAY_MS)
    after = number("disconnect_after", 0, _MAX_COUNT)
    retry = number("retry_after", 0, _MAX_RETRY_AFTER)
    attempts = number("attempts", 0, _MAX_COUNT)
    reply = number("reply_tokens", 1, MAX_REPLY_TOKENS)
    pause = number("chunk_delay_ms", 0, _MAX_CHUNK_DELAY_MS)
    return Directives(
        faults=frozenset(faults),
        delay_ms=_DEFAULT_DELAY_MS if delay is None else delay,
        disconnect_after=_DEFAULT_DISCONNECT_AFTER if after is None else int(after),
        retry_after=_DEFAULT_RETRY_AFTER if retry is None else retry,
        attempts=None if attempts is None else int(attempts),
        reply_tokens=None if reply is None else int(reply),
        chunk_delay_ms=pause or 0.0,
    )
