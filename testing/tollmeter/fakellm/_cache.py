"""Deterministic prompt-cache rules, one per provider.

OpenAI: a prompt of at least 1024 tokens is cached in steps of 128 tokens (1024, 1152, ...).
``cached_tokens`` is the longest such step whose prefix an earlier request of the same model
already sent; every step of the current prompt is then remembered.

Anthropic: only prefixes ending at a ``cache_control`` breakpoint are cached, and only from
1024 tokens. The longest breakpoint prefix seen before is read from the cache; if the last
breakpoint is further on, the tokens between the two are written (``cache_creation``). Input
tokens exclude both, as Anthropic reports them.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIN_CACHED_TOKENS", "OPENAI_CACHE_STEP", "CacheResult", "PrefixCache"]

MIN_CACHED_TOKENS = 1024
OPENAI_CACHE_STEP = 128
_MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class CacheResult:
    """Tokens read from the cache, and written to it (of which ``written_1h`` with a 1 h ttl)."""

    read: int = 0
    written: int = 0
    written_1h: int = 0


def _digests(model: str, tokens: Sequence[int], ends: Sequence[int]) -> list[bytes]:
    """The digest of ``tokens[:end]`` for each (ascending) end, hashed incrementally."""
    hasher = hashlib.sha256(model.encode())
    digests: list[bytes] = []
    start = 0
    for end in ends:
        hasher.update(array("q", tokens[start:end]).tobytes())
        digests.append(hasher.copy().digest())
        start = end
    return digests


class PrefixCache:
    """Remembers which prompt prefixes were sent before; bounded, thread-safe."""

    def __init__(self, max_entries: int = _MAX_ENTRIES) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _lookup_and_store(self, digests: Sequence[bytes]) -> list[bool]:
        with self._lock:
            hits = [digest in self._seen for digest in digests]
            for digest in digests:
                self._seen[digest] = None
                self._seen.move_to_end(digest)
            while len(self._seen) > self._max_entries:
                self._seen.popitem(last=False)
        return hits

    def openai(self, model: str, tokens: Sequence[int]) -> CacheResult:
        if len(tokens) < MIN_CACHED_TOKENS:
            return CacheResult()
        ends = list(range(MIN_CACHED_TOKENS, len(tokens) + 1, OPENAI_CACHE_STEP))
        hits = self._lookup_and_store(_digests(model, tokens, ends))
        read = max((end for end, hit in zip(ends, hits, strict=True) if hit), default=0)
        return CacheResult(read=read)

    def anthropic(
        self, model: str, tokens: Sequence[int], breakpoints: Sequence[tuple[int, str]]
    ) -> CacheResult:
        """``breakpoints`` are (token offset, ttl); each written stretch takes the ttl of the
        breakpoint that ends it."""
        ttls = {end: ttl for end, ttl in breakpoints if end >= MIN_CACHED_TOKENS}
        ends = sorted(ttls)
        if not ends:
            return CacheResult()
        hits = self._lookup_and_store(_digests(model, tokens, ends))
        read = max((end for end, hit in zip(ends, hits, strict=True) if hit), default=0)
        written = written_1h = 0
        previous = read
        for end in ends:
            if end > previous:
                written += end - previous
                written_1h += end - previous if ttls[end] == "1h" else 0
                previous = end
        return CacheResult(read=read, written=written, written_1h=written_1h)
