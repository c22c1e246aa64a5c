"""What the server answered: usage per request, kept for tests to compare against.

No prompt or reply text is kept, only counts, ids and the usage object as sent.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Exchange", "Journal", "ReportedUsage"]

_DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True)
class ReportedUsage:
    """Counts in OpenTelemetry terms: input includes cache, output includes reasoning."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Exchange:
    """One request and what the server reported for it.

    ``usage`` is the true count of the reply the server prepared; ``reported`` says whether
    the client was sent it (a ``no-usage`` fault, a stream without ``include_usage``, an error
    or a cut stream mean it was not); ``provider_usage`` is the usage object exactly as sent.
    """

    request_id: str
    provider: str
    endpoint: str
    status: int
    model: str | None = None
    stream: bool = False
    response_id: str | None = None
    usage: ReportedUsage | None = None
    reported: bool = False
    provider_usage: dict[str, Any] | None = None
    faults: list[str] = field(default_factory=list)
    attempt: int = 0
    time: float = 0.0
    """When the request arrived, Unix seconds: the provider reports bucket usage by it."""
    project: str | None = None
    """The project the client named (OpenAI's ``OpenAI-Project`` header)."""
    api_key_id: str | None = None
    """An id derived from the client's API key, never the key: what usage reports group by."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = self.usage.as_dict() if self.usage else None
        return data


class Journal:
    """A bounded, thread-safe log of recent exchanges (oldest dropped first)."""

    def __init__(self, capacity: int = _DEFAULT_CAPACITY) -> None:
        self._items: deque[Exchange] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, exchange: Exchange) -> None:
        with self._lock:
            self._items.append(exchange)

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
