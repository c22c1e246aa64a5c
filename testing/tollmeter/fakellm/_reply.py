"""What every endpoint shares: the parsed call, the prepared reply, lengths and ids."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tollmeter.fakellm._cache import PrefixCache
from tollmeter.fakellm._faults import Directives
from tollmeter.fakellm._journal import ReportedUsage
from tollmeter.fakellm._text import Seed, words

__all__ = [
    "MAX_REQUEST_OUTPUT",
    "BadRequest",
    "Call",
    "Prepared",
    "Text",
    "check_volume",
    "chunk_text",
    "is_reasoning_model",
    "new_id",
    "now",
    "optional_int",
    "plan_output",
    "reply",
    "require_list",
]

MAX_REQUEST_OUTPUT = 262_144
_DELIVERY_KEYS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
    }
)
_DEFAULT_REPLY = (16, 48)
_DEFAULT_REASONING = (64, 192)
_NON_REASONING_PREFIXES = ("gpt-5-chat",)
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


class BadRequest(ValueError):
    """The request cannot be served; answered with a 400 in the provider's format."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Call:
    """A parsed request: the JSON body, the model without its suffix, and the directives."""

    body: Mapping[str, Any]
    model: str
    directives: Directives
    cache: PrefixCache

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    def seed(self) -> Seed:
        """Derived from the request's content: same request, same reply.

        Settings that only shape delivery are left out, so a streamed reply equals the plain
        one and a reply cut by an output cap is a prefix of the uncut one.
        """
        canonical = json.dumps(
            {k: v for k, v in self.body.items() if k not in _DELIVERY_KEYS},
            sort_keys=True,
            default=str,
        )
        return Seed(self.model, canonical)


@dataclass
class Prepared:
    """A reply ready to be played: a JSON body, or stream events (SSE unless ``media_type``
    says otherwise), with any headers of the endpoint's own."""

    response_id: str | None
    usage: ReportedUsage
    provider_usage: dict[str, Any] | None
    body: dict[str, Any] | None = None
    events: list[bytes] | None = None
    media_type: str | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Text:
    """A reply's text as the pieces a stream sends."""

    pieces: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def new_id(prefix: str) -> str:
    """Unique per call, as real ids are: metering deduplicates on them."""
    return f"{prefix}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def is_reasoning_model(model: str) -> bool:
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_NON_REASONING_PREFIXES):
        return False
    return name.startswith(_REASONING_PREFIXES)


def optional_int(body: Mapping[str, Any], *names: str, minimum: int = 1) -> int | None:
    """The first of ``names`` present in ``body``, validated as an integer >= ``minimum``."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise BadRequest(f"{name} must be an integer >= {minimum}", name)
        return value
    return None


def require_list(body: Mapping[str, Any], name: str) -> Sequence[Any]:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{name} must be a non-empty array", name)
    return value


def check_volume(choices: int, directives: Directives) -> None:
    """Refuse replies so large that preparing them would stall the server."""
    per_choice = directives.reply_tokens or _DEFAULT_REPLY[1]
    if choices * per_choice > MAX_REQUEST_OUTPUT:
        raise BadRequest(f"at most {MAX_REQUEST_OUTPUT} output tokens per request", "n")


def plan_output(
    seed: Seed, directives: Directives, cap: int | None, *, reasoning: bool
) -> tuple[int, int, bool]:
    """(reply tokens, reasoning tokens, truncated) within an output cap that covers both."""
    want = directives.reply_tokens or seed.between(*_DEFAULT_REPLY)
    thought = seed.between(*_DEFAULT_REASONING) if reasoning else 0
    if cap is None:
        return want, thought, False
    thought = min(thought, cap // 2)
    room = cap - thought
    return min(want, room), thought, want > room


def reply(seed: Seed, n_tokens: int) -> Text:
    return Text(pieces=tuple(words(seed, n_tokens)))


def chunk_text(text: str, size: int = 8) -> list[str]:
    """Split a JSON argument string into stream fragments, as the APIs do."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
