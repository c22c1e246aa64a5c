"""Admin and ingest keys.

Keys are kept only as SHA-256 digests and compared in constant time, so
neither a lookup's timing nor a memory dump reveals them. An ingest key comes
in an OTLP header, ``authorization: Bearer <key>`` or ``x-tollmeter-key: <key>``
(the form the standard exporters send with ``OTEL_EXPORTER_OTLP_HEADERS``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping

from tollmeter.semconv.errors import TollmeterError

__all__ = ["INGEST_KEY_HEADER", "KeyRing", "Unauthenticated", "key_from_headers"]

INGEST_KEY_HEADER = "x-tollmeter-key"


class Unauthenticated(TollmeterError):
    """A request carried no key, or one that is not configured."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_from_headers(get: Callable[[str], str | None]) -> str | None:
    """The key in ``x-tollmeter-key`` or ``authorization: Bearer``; ``get`` reads
    a header by lower-case name."""
    explicit = get(INGEST_KEY_HEADER)
    if explicit and explicit.strip():
        return explicit.strip()
    authorization = get("authorization") or ""
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class KeyRing:
    """Decides who may ingest and who may use the management API."""

    def __init__(
        self,
        *,
        admin_keys: Iterable[str] = (),
        ingest_keys: Mapping[str, str | None] | None = None,
    ) -> None:
        self._admin = tuple(_digest(key) for key in admin_keys)
        self._ingest = {_digest(key): tenant for key, tenant in (ingest_keys or {}).items()}

    @property
    def admin_required(self) -> bool:
        return bool(self._admin)

    @property
    def ingest_required(self) -> bool:
        return bool(self._ingest)

    def ingest_tenant(self, key: str | None) -> str | None:
        """The tenant ``key`` is bound to (``None``: any tenant).

        Raises :class:`Unauthenticated` when ingest keys are configured and
        ``key`` is missing or unknown.
        """
        if not self._ingest:
            return None
        if key is None:
            raise Unauthenticated("an ingest key is required")
        digest = _digest(key)
        for known, tenant in self._ingest.items():
            if hmac.compare_digest(known, digest):
                return tenant
        raise Unauthenticated("unknown ingest key")

    def admin_allowed(self, key: str | None) -> bool:
        """True when no admin key is configured, or ``key`` is one of them."""
        if not self._admin:
            return True
        if key is None:
            return False
        digest = _digest(key)
        # Compare with every key, so timing says nothing about which one matched.
        matches = [hmac.compare_digest(known, digest) for known in self._admin]
        return any(matches)
