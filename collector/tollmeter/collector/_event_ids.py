"""The id of a metered call, derived from its dedupe key, so that a repeat has the same id.

The key is (tenant, provider, response id) when the provider gave the call an id, else
(tenant, trace id, span id). The tenant is part of it, so one tenant's report can never
make another tenant's call a duplicate. Fields are length-prefixed before hashing: no
choice of tenant, provider or response id can spell another combination's key.

Releases before the tenant was part of the key hashed (provider, response id) or (trace
id, span id) alone: ``legacy_event_id`` keeps that derivation for the ledger migration
that re-keys the dedupe window of an older ledger (storage/_schema.py, version 2).
"""

from __future__ import annotations

import hashlib

__all__ = ["event_id", "legacy_event_id"]


def event_id(
    tenant: str, provider: str, response_id: str | None, trace_id: str, span_id: str
) -> str:
    """The event id of a call of ``tenant``: 32 hex digits."""
    if response_id:
        key = f"r{len(tenant)}:{tenant}{len(provider)}:{provider}{response_id}"
    else:
        key = f"s{len(tenant)}:{tenant}{len(trace_id)}:{trace_id}{span_id}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def legacy_event_id(provider: str, response_id: str | None, trace_id: str, span_id: str) -> str:
    """The event id the releases before tenant-scoped dedupe gave the same call."""
    key = f"r\x00{provider}\x00{response_id}" if response_id else f"s\x00{trace_id}\x00{span_id}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
