"""The retry number of a model call, read from inside the SDK's own retry loop.

The OpenAI and Anthropic SDKs retry a failed request (429, 5xx, connection errors, up to
the client's ``max_retries``) inside one ``create`` call, building a fresh HTTP request for
each attempt with ``BaseClient._build_request(options, retries_taken=N)``. That method is
the one place every attempt passes through, for sync and async clients, streamed or not,
and it is handed the SDK's own retry count (the value it also sends as
``x-stainless-retry-count``). ``watch_sdk`` wraps it; while a metered call's request runs
(``watching``), each attempt records its ``retries_taken`` on the call's ``Attempts``, so
the last one is the retry number of the attempt that answered.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["Attempts", "unwatch_sdk", "unwatching", "watch_sdk", "watching"]

_CLASS = "BaseClient"
_METHOD = "_build_request"
# Set on tollmeter's request builder, so that it is wrapped once and unwrapped by identity.
_MARK = "_tollmeter_watches_attempts"
# Set when the class inherited the builder: unwrapping then deletes tollmeter's copy.
_INHERITED = "_tollmeter_inherited"


class Attempts:
    """What the SDK's retry loop reported for one call: ``None`` until it built a request."""

    __slots__ = ("retries",)

    def __init__(self) -> None:
        self.retries: int | None = None


_CURRENT: ContextVar[Attempts | None] = ContextVar("tollmeter_attempts", default=None)


def watching(attempts: Attempts) -> Token[Attempts | None]:
    """Record the attempts of requests built from now on (in this context) on ``attempts``."""
    return _CURRENT.set(attempts)


def unwatching(token: Token[Attempts | None]) -> None:
    _CURRENT.reset(token)


def _watched(build_request: Callable[..., Any], *, inherited: bool) -> Callable[..., Any]:
    """``build_request`` recording each attempt's ``retries_taken`` on the watching call.

    A plain function rather than a ``wrapt`` wrapper: it runs on every attempt, and a
    function costs about half as much to call through.
    """

    @functools.wraps(build_request)
    def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        attempts = _CURRENT.get()
        if attempts is not None:
            # Nothing here can raise: a dict lookup, type checks and a slot assignment.
            retries = kwargs.get("retries_taken", 0)
            if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
                attempts.retries = retries
        return build_request(self, *args, **kwargs)

    setattr(watched, _MARK, True)
    setattr(watched, _INHERITED, inherited)
    return watched


def _base_client(module_name: str) -> Any | None:
    """The SDK's ``BaseClient`` when it has the per-attempt request builder, else ``None``."""
    cls = getattr(importlib.import_module(module_name), _CLASS, None)
    return cls if callable(getattr(cls, _METHOD, None)) else None


def watch_sdk(module_name: str) -> bool:
    """Wrap the request builder of the SDK module ``module_name``; False if it has none."""
    cls = _base_client(module_name)
    if cls is None:
        return False
    own = cls.__dict__.get(_METHOD)
    if not getattr(own, _MARK, False):
        setattr(cls, _METHOD, _watched(getattr(cls, _METHOD), inherited=own is None))
    return True


def unwatch_sdk(module_name: str) -> None:
    """Undo ``watch_sdk`` (a no-op when it wrapped nothing)."""
    cls = _base_client(module_name)
    if cls is None:
        return
    watched = cls.__dict__.get(_METHOD)
    if not getattr(watched, _MARK, False):
        return
    if getattr(watched, _INHERITED, False):
        delattr(cls, _METHOD)
    else:
        setattr(cls, _METHOD, watched.__wrapped__)
