"""Per-request directives: injected faults and reply shaping.

A request chooses them with ``x-fake-*`` headers, or, for clients that cannot set headers,
with a query-style suffix on the model name: ``gpt-4o-mini?fault=429&retry_after=2``. The
suffix is stripped before the model is used anywhere. Headers win over the suffix.

=====================  ====================  =================================================
header                 model suffix key      meaning
=====================  ====================  =================================================
``x-fake-fault``       ``fault``             comma-separated: ``429``, ``500``, ``slow``,
                                             ``disconnect``, ``no-usage``
``x-fake-delay-ms``    ``delay_ms``          ``slow``: delay before the first token (500)
``x-fake-disconnect-   ``disconnect_after``  ``disconnect``: chunks sent before the cut (3)
after``
``x-fake-retry-after`` ``retry_after``       ``429``: seconds in ``retry-after`` (1)
``x-fake-fault-        ``attempts``          ``429``/``500`` only while the client's retry
attempts``                                   count is below this (default: always)
``x-fake-reply-tokens`` ``reply_tokens``     reply length in tokens before ``max_tokens``
=====================  ====================  =================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

__all__ = ["FAULTS", "Directives", "FaultError", "parse_directives", "split_model"]

Fault = Literal["429", "500", "slow", "disconnect", "no-usage"]
FAULTS: tuple[Fault, ...] = ("429", "500", "slow", "disconnect", "no-usage")

_DEFAULT_DELAY_MS = 500.0
_DEFAULT_DISCONNECT_AFTER = 3
_DEFAULT_RETRY_AFTER = 1.0
_MAX_DELAY_MS = 600_000.0
_MAX_REPLY_TOKENS = 100_000

# (header, suffix key)
_KEYS: dict[str, tuple[str, str]] = {
    "fault": ("x-fake-fault", "fault"),
    "delay_ms": ("x-fake-delay-ms", "delay_ms"),
    "disconnect_after": ("x-fake-disconnect-after", "disconnect_after"),
    "retry_after": ("x-fake-retry-after", "retry_after"),
    "attempts": ("x-fake-fault-attempts", "attempts"),
    "reply_tokens": ("x-fake-reply-tokens", "reply_tokens"),
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
    directives = Directives(faults=frozenset(faults))
    values: dict[str, float | int] = {}
    if "delay_ms" in raw:
        values["delay_ms"] = _number("delay_ms", raw["delay_ms"], 0, _MAX_DELAY_MS)
    if "disconnect_after" in raw:
        values["disconnect_after"] = int(
            _number("disconnect_after", raw["disconnect_after"], 0, 1_000_000)
        )
    if "retry_after" in raw:
        values["retry_after"] = _number("retry_after", raw["retry_after"], 0, 3600)
    if "attempts" in raw:
        values["attempts"] = int(_number("attempts", raw["attempts"], 0, 1_000_000))
    if "reply_tokens" in raw:
        values["reply_tokens"] = int(
            _number("reply_tokens", raw["reply_tokens"], 1, _MAX_REPLY_TOKENS)
        )
    if not values:
        return directives
    return Directives(
        faults=directives.faults,
        delay_ms=float(values.get("delay_ms", directives.delay_ms)),
        disconnect_after=int(values.get("disconnect_after", directives.disconnect_after)),
        retry_after=float(values.get("retry_after", directives.retry_after)),
        attempts=int(values["attempts"]) if "attempts" in values else None,
        reply_tokens=int(values["reply_tokens"]) if "reply_tokens" in values else None,
    )
