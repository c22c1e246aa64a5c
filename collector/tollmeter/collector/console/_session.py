"""Console sessions: a random token in an HTTP-only, same-site cookie, a table on the server.

The cookie holds only the token; the server keeps the SHA-256 of each token with the
admin key's digest, so neither the cookie nor the table reveals the key. A session
ends at logout, after :data:`SESSION_LIFETIME_S`, or as soon as its key stops being an
admin key (keys reloaded on SIGHUP): every request asks the key ring again.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tollmeter.collector._auth import KeyRing

__all__ = ["COOKIE_NAME", "SESSION_LIFETIME_S", "Access", "Sessions"]

COOKIE_NAME = "tollmeter_console"
SESSION_LIFETIME_S = 12 * 3600
_MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class Access:
    """What a console request may see: ``allowed``; ``open`` when no key is needed at all,
    ``unusable`` when ingest keys exist without an admin key (nothing may be read)."""

    allowed: bool
    open: bool = False
    unusable: bool = False


@dataclass(frozen=True, slots=True)
class _Session:
    key_digest: bytes
    expires_at: float


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Sessions:
    """The console's session table over the collector's key ring."""

    def __init__(self, keys: KeyRing, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()
        self._table: OrderedDict[bytes, _Session] = OrderedDict()

    def access(self, request: Request) -> Access:
        """Whether ``request`` may read the console, following the management API's rules."""
        keys = self._keys
        if not keys.admin_required:
            # As /api/*: open without any key, closed to everyone with ingest keys only.
            if keys.ingest_required:
                return Access(allowed=False, unusable=True)
            return Access(allowed=True, open=True)
        token = request.cookies.get(COOKIE_NAME)
        if not token:
            return Access(allowed=False)
        digest = _token_digest(token)
        with self._lock:
            session = self._table.get(digest)
            if session is not None and session.expires_at <= self._clock():
                del self._table[digest]
                session = None
        if session is None or not keys.has_admin_digest(session.key_digest):
            return Access(allowed=False)
        return Access(allowed=True)

    def login(self, key: str, response: Response, *, secure: bool) -> bool:
        """Open a session for ``key`` when it is an admin key, setting the cookie."""
        key_digest = self._keys.admin_digest(key)
        if key_digest is None:
            return False
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._table[_token_digest(token)] = _Session(
                key_digest, self._clock() + SESSION_LIFETIME_S
            )
            while len(self._table) > _MAX_SESSIONS:
                self._table.popitem(last=False)
        response.set_cookie(
            COOKIE_NAME,
            token,
            max_age=SESSION_LIFETIME_S,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        return True

    def logout(self, request: Request, response: Response, *, secure: bool) -> None:
        token = request.cookies.get(COOKIE_NAME)
        if token:
            with self._lock:
                self._table.pop(_token_digest(token), None)
        response.delete_cookie(
            COOKIE_NAME, path="/", secure=secure, httponly=True, samesite="strict"
        )
