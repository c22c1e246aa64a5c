"""Ledger backends chosen by URI scheme."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tollmeter.collector.storage._base import Ledger
from tollmeter.collector.storage._sqlite import SQLiteLedger
from tollmeter.semconv.errors import ConfigurationError

__all__ = ["open_ledger", "register_ledger"]

LedgerFactory = Callable[..., Ledger]
"""Builds a ledger from the URI's path and keyword options (query string merged in)."""


def _sqlite(path: str, **options: Any) -> Ledger:
    if not path:
        raise ConfigurationError("sqlite:// needs a file path, e.g. sqlite:///data/ledger.db")
    return SQLiteLedger(path, **options)


def _memory(path: str, **options: Any) -> Ledger:
    return SQLiteLedger(None, **options)


def _postgresql(url: str, **options: Any) -> Ledger:
    try:
        from tollmeter.collector.storage._postgres import PostgresLedger
    except ImportError as exc:
        raise ConfigurationError(
            f"postgresql:// storage needs psycopg: pip install 'tollmeter[postgres]' ({exc})"
        ) from exc
    return PostgresLedger(url, **options)


_REGISTRY: dict[str, LedgerFactory] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "postgresql": _postgresql,
}
_WHOLE_URL = {"postgresql"}


def register_ledger(scheme: str, factory: LedgerFactory, *, whole_url: bool = False) -> None:
    """Make ``open_ledger`` build ``scheme://`` URIs with ``factory``.

    The factory gets the URI's path, or with ``whole_url`` the URI without its query string
    (a server address, user and database), and the options as keyword arguments.
    """
    _REGISTRY[scheme] = factory
    if whole_url:
        _WHOLE_URL.add(scheme)
    else:
        _WHOLE_URL.discard(scheme)


def open_ledger(url: str, **options: Any) -> Ledger:
    """Open the ledger named by ``url``.

    ``sqlite:///relative/path.db`` (three slashes: relative to the working directory),
    ``sqlite:////absolute/path.db``, ``postgresql://user@host:5432/database`` (a ledger
    shared by collector replicas) or ``memory://`` (tests). Options can also be given as
    a query string (``sqlite:///ledger.db?synchronous=normal``); keyword arguments win.
    Unknown schemes and options raise ``ConfigurationError``.
    """
    parts = urlsplit(url)
    factory = _REGISTRY.get(parts.scheme)
    if factory is None:
        known = ", ".join(f"{scheme}://" for scheme in sorted(_REGISTRY))
        raise ConfigurationError(f"unknown storage URL {url!r}; supported: {known}")
    merged: dict[str, Any] = dict(parse_qsl(parts.query))
    merged.update(options)
    if parts.scheme in _WHOLE_URL:
        path = parts._replace(query="", fragment="").geturl()
    else:
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
    try:
        return factory(path, **merged)
    except TypeError as exc:
        raise ConfigurationError(f"bad option for {parts.scheme}:// storage: {exc}") from exc
