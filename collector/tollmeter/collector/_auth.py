"""Admin and ingest keys.

Keys are kept only as SHA-256 digests and compared in constant time, so
neither a lookup's timing nor a memory dump reveals them. The configuration may
hold the digest itself, written ``sha256:<64 hex digits>``, so that the file
holds no secret: clients still send the key, whose digest is compared.
:meth:`KeyRing.replace` swaps every key at once (on SIGHUP). An ingest key comes
in an OTLP header, ``authorization: Bearer <key>`` or ``x-tollmeter-key: <key>``
(the form the standard exporters send with ``OTEL_EXPORTER_OTLP_HEADERS``). An ingest
key may be marked internal: everything sent or checked with it is the operator's own
usage.

The management API asks :meth:`KeyRing.authorize` who a request acts as. A route
needs either ``admin`` access (admin keys, when configured) or ``ingest`` access
(an admin key or an ingest key, when any key is configured); an ingest key bound
to a tenant yields a :class:`Principal` that may act for that tenant only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from tollmeter.collector.errors import Forbidden, Unauthenticated

__all__ = [
    "ANONYMOUS",
    "DIGEST_PREFIX",
    "INGEST_KEY_HEADER",
    "Access",
    "IngestKey",
    "KeyRing",
    "Principal",
    "is_key_digest",
    "key_from_headers",
]

INGEST_KEY_HEADER = "x-tollmeter-key"
DIGEST_PREFIX = "sha256:"
_DIGEST_HEX = re.compile(r"[0-9a-fA-F]{64}")

Access = Literal["admin", "ingest"]
"""What a management route accepts: admin keys only, or admin and ingest keys."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a management request acts as.

    ``anonymous`` means no key was needed (none configured for that access).
    ``tenant`` is set only for an ingest key bound to one tenant, ``internal`` only for
    an ingest key marked internal.
    """

    role: Literal["admin", "ingest", "anonymous"]
    tenant: str | None = None
    internal: bool = False


class IngestKey(NamedTuple):
    """What an ingest key says of the usage sent with it."""

    tenant: str | None
    """The tenant it is bound to (``None``: any tenant)."""
    internal: bool = False
    """Whether all of it is internal usage."""


ANONYMOUS = Principal("anonymous")
_ADMIN = Principal("admin")
_ANY_TENANT = IngestKey(None)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def is_key_digest(configured: str) -> bool:
    """Whether a configured key is written as a digest (``sha256:`` and 64 hex digits)."""
    return configured.startswith(DIGEST_PREFIX) and bool(
        _DIGEST_HEX.fullmatch(configured[len(DIGEST_PREFIX) :])
    )


def _configured_digest(configured: str) -> bytes:
    if is_key_digest(configured):
        return bytes.fromhex(configured[len(DIGEST_PREFIX) :])
    return _digest(configured)


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
        internal_keys: Iterable[str] = (),
    ) -> None:
        self._admin: tuple[bytes, ...] = ()
        self._ingest: dict[bytes, IngestKey] = {}
        self.replace(admin_keys=admin_keys, ingest_keys=ingest_keys, internal_keys=internal_keys)

    def replace(
        self,
        *,
        admin_keys: Iterable[str] = (),
        ingest_keys: Mapping[str, str | None] | None = None,
        internal_keys: Iterable[str] = (),
    ) -> None:
        """Accept these keys from now on, and no others (each key or its ``sha256:`` digest);
        ``internal_keys`` are the ingest keys whose usage is internal."""
        admin = tuple(_configured_digest(key) for key in admin_keys)
        internal = set(internal_keys)
        ingest = {
            _configured_digest(key): IngestKey(tenant, key in internal)
            for key, tenant in (ingest_keys or {}).items()
        }
        self._admin, self._ingest = admin, ingest

    @property
    def admin_required(self) -> bool:
        return bool(self._admin)

    @property
    def ingest_required(self) -> bool:
        return bool(self._ingest)

    def ingest_key(self, key: str | None) -> IngestKey:
        """The tenant ``key`` is bound to and whether its usage is internal.

        Raises :class:`Unauthenticated` when ingest keys are configured and
        ``key`` is missing or unknown.
        """
        if not self._ingest:
            return _ANY_TENANT
        if key is None:
            raise Unauthenticated("an ingest key is required")
        found = self._ingest_binding(key)
        if found is None:
            raise Unauthenticated("unknown ingest key")
        return found

    def admin_allowed(self, key: str | None) -> bool:
        """True when no admin key is configured, or ``key`` is one of them."""
        if not self._admin:
            return True
        return key is not None and self._is_admin(key)

    def admin_digest(self, key: str) -> bytes | None:
        """The digest of ``key`` when it is an admin key (``None`` otherwise), for sessions
        that must end when the key does (see :meth:`has_admin_digest`)."""
        return _digest(key) if self._admin and self._is_admin(key) else None

    def has_admin_digest(self, digest: bytes) -> bool:
        """Whether ``digest`` (from :meth:`admin_digest`) is still an admin key's."""
        matches = [hmac.compare_digest(known, digest) for known in self._admin]
        return any(matches)

    def authorize(self, key: str | None, access: Access) -> Principal:
        """The principal ``key`` acts as on a route that needs ``access``.

        Raises :class:`Unauthenticated` for a missing or unknown key where one is
        needed, and :class:`Forbidden` for an ingest key on an admin-only route.
        """
        if access == "admin":
            if not self._admin and self._ingest:
                # Ingest keys say the tenants do not trust each other: routes that read or
                # change every tenant's data must not then be open to any caller.
                raise Unauthenticated(
                    "this route needs an admin key; configure management.admin_keys"
                )
            if not self._admin:
                return ANONYMOUS
            if key is not None and self._is_admin(key):
                return _ADMIN
            if key is not None and self._ingest_binding(key) is not None:
                raise Forbidden("this route needs an admin key; ingest keys are not accepted")
            raise Unauthenticated("a valid admin key is required")
        if not self._admin and not self._ingest:
            return ANONYMOUS
        if key is None:
            raise Unauthenticated("an admin or ingest key is required")
        if self._is_admin(key):
            return _ADMIN
        found = self._ingest_binding(key)
        if found is None:
            raise Unauthenticated("unknown key")
        return Principal("ingest", found.tenant, found.internal)

    def _is_admin(self, key: str) -> bool:
        digest = _digest(key)
        # Compare with every key, so timing says nothing about which one matched.
        matches = [hmac.compare_digest(known, digest) for known in self._admin]
        return any(matches)

    def _ingest_binding(self, key: str) -> IngestKey | None:
        """What ingest key ``key`` says, or ``None`` when it is none."""
        digest = _digest(key)
        found = None
        for known, binding in list(self._ingest.items()):
            if hmac.compare_digest(known, digest):
                found = binding
        return found
