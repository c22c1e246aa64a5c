"""Deterministic reply text and JSON values.

Replies are plain English words picked by a hash of the prompt, so the same request always
gets the same reply and different requests get different ones. Every word of the vocabulary,
with or without a leading space, is a single token in every encoding the server uses, so a
reply of ``n`` words is ``n`` tokens; counts are nevertheless always taken on the final text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["Seed", "json_instance", "words"]

VOCABULARY: tuple[str, ...] = (
    "the", "quick", "brown", "fox", "see", "over", "big", "dog", "and", "then",
    "go", "to", "green", "field", "where", "many", "small", "tree", "sing", "every",
    "morning", "while", "old", "people", "walk", "along", "river", "with", "their", "friends",
    "under", "bright", "blue", "sky", "before", "going", "back", "home", "for", "water",
    "which", "they", "cook", "together", "from", "fresh", "food", "that", "was", "found",
    "near", "town", "market", "last", "week", "when", "rain", "light", "all", "day",
    "long", "again",
)  # fmt: skip

_MAX_DEPTH = 8


class Seed:
    """A stream of deterministic integers derived from some text."""

    def __init__(self, *parts: str) -> None:
        self._digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
        self._counter = 0

    def child(self, label: str) -> Seed:
        return Seed(self._digest.hex(), label)

    def next(self, modulo: int) -> int:
        block = hashlib.sha256(self._digest + self._counter.to_bytes(8, "big")).digest()
        self._counter += 1
        return int.from_bytes(block[:8], "big") % modulo

    def between(self, low: int, high: int) -> int:
        return low + self.next(high - low + 1)


def words(seed: Seed, n: int) -> Iterator[str]:
    """``n`` words as pieces to concatenate: the first capitalized, later ones space-led."""
    for index in range(n):
        word = VOCABULARY[seed.next(len(VOCABULARY))]
        yield word.capitalize() if index == 0 else f" {word}"


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for key in ref[2:].split("/"):
        target = target.get(key, {}) if isinstance(target, Mapping) else {}
    return target if isinstance(target, Mapping) else {}


def json_instance(schema: Any, seed: Seed) -> Any:
    """A value satisfying the common subset of JSON Schema used for tools and structured output.

    Supports objects (every property filled, as strict mode requires), arrays, enums, consts,
    scalars, local ``$ref`` and ``anyOf``/``oneOf`` (first branch).
    """
    root = schema if isinstance(schema, Mapping) else {}
    return _instance(root, root, seed, 0)


def _instance(schema: Mapping[str, Any], root: Mapping[str, Any], seed: Seed, depth: int) -> Any:
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, Sequence) and not isinstance(enum, str) and enum:
        return enum[seed.next(len(enum))]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, Sequence) and branches and isinstance(branches[0], Mapping):
            return _instance(branches[0], root, seed, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, Sequence) and not isinstance(kind, str):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if depth >= _MAX_DEPTH and kind in ("object", "array"):
        return {} if kind == "object" else []
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {
            name: _instance(sub if isinstance(sub, Mapping) else {}, root, seed, depth + 1)
            for name, sub in properties.items()
        }
    if kind == "array":
        items = schema.get("items")
        item_schema = items if isinstance(items, Mapping) else {}
        size = max(1, int(schema.get("minItems", 1)))
        return [_instance(item_schema, root, seed, depth + 1) for _ in range(size)]
    if kind == "integer":
        return seed.between(1, 9)
    if kind == "number":
        return seed.between(1, 99) / 4
    if kind == "boolean":
        return seed.next(2) == 1
    if kind == "null":
        return None
    return "".join(words(seed, 2))
