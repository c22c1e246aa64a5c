"""Avoided usage: model calls an application answered from its own cache.

A ``tollmeter.cache_hit`` span (``tollmeter.cache_hit(...)`` in the instrumentation)
carries the model and the tokens the call would have used. It becomes an
``AvoidedCall``: never a usage event, so limits, meters, grants and the billing
export never see it, priced with the same pricer as billed calls (its cost is the
saved cost). The ledger stores one per tenant and ``avoided_id``: the id the client
gave, or one derived from the span's trace and span ids, so a retried export counts
once.

Hostile values refuse their span alone: token counts must be ints from 0 to
``MAX_TOKENS``, texts printable and at most ``MAX_TEXT`` characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from tollmeter.collector.errors import BadRequest
from tollmeter.semconv import attributes as attrs

__all__ = ["MAX_TEXT", "MAX_TOKENS", "AvoidedCall", "avoided_call"]

MAX_TOKENS = 2**31 - 1
MAX_TEXT = 256


@dataclass(frozen=True, slots=True)
class AvoidedCall:
    """One call answered from a cache. ``sequence`` is assigned by the ledger (0 before)."""

    avoided_id: str
    tenant_id: str
    feature: str | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: Decimal | None
    currency: str | None
    time_ns: int
    sequence: int = 0


class _Quote(Protocol):
    @property
    def cost(self) -> Decimal | None: ...
    @property
    def currency(self) -> str | None: ...


class _Pricer(Protocol):
    def quote_call(
        self,
        *,
        provider: str,
        model: str,
        tenant: str,
        time_ns: int,
        buckets: tuple[int, int, int, int, int],
    ) -> _Quote: ...


def avoided_call(
    span_attrs: Mapping[str, object],
    *,
    tenant: str,
    feature: str | None,
    trace_id: str,
    span_id: str,
    time_ns: int,
    pricer: _Pricer | None,
) -> AvoidedCall:
    """The avoided call a ``tollmeter.cache_hit`` span reports; ``BadRequest`` naming the
    attribute when a value cannot be trusted. A pricer that fails leaves it unpriced."""
    model = _text(span_attrs.get(attrs.TOLLMETER_AVOIDED_MODEL), attrs.TOLLMETER_AVOIDED_MODEL)
    raw_provider = span_attrs.get(attrs.TOLLMETER_AVOIDED_PROVIDER)
    provider = (
        "unknown" if raw_provider is None else _text(raw_provider, attrs.TOLLMETER_AVOIDED_PROVIDER)
    )
    input_tokens = _tokens(span_attrs.get(attrs.TOLLMETER_AVOIDED_INPUT_TOKENS), "input")
    output_tokens = _tokens(span_attrs.get(attrs.TOLLMETER_AVOIDED_OUTPUT_TOKENS, 0), "output")
    given = span_attrs.get(attrs.TOLLMETER_AVOIDED_ID)
    if given is not None:
        key = _text(given, attrs.TOLLMETER_AVOIDED_ID)
    elif len(trace_id) == 32 and len(span_id) == 16:
        key = hashlib.blake2b(f"a{trace_id}{span_id}".encode(), digest_size=16).hexdigest()
    else:
        raise BadRequest(f"no {attrs.TOLLMETER_AVOIDED_ID} and no valid trace and span ids")
    cost: Decimal | None = None
    currency: str | None = None
    if pricer is not None:
        try:
            quote = pricer.quote_call(
                provider=provider,
                model=model,
                tenant=tenant,
                time_ns=time_ns,
                buckets=(input_tokens, 0, 0, output_tokens, 0),
            )
            cost, currency = quote.cost, quote.currency
        except Exception:  # an unpriced saving is still a saving in tokens
            cost, currency = None, None
    return AvoidedCall(
        avoided_id=key,
        tenant_id=tenant,
        feature=feature,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        currency=currency if cost is not None else None,
        time_ns=time_ns,
    )


def _tokens(raw: object, kind: str) -> int:
    name = f"tollmeter.avoided.{kind}_tokens"
    if type(raw) is not int or not 0 <= raw <= MAX_TOKENS:
        raise BadRequest(f"{name}: must be an int from 0 to {MAX_TOKENS}, not {raw!r:.40}")
    return raw


def _text(raw: object, field: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise BadRequest(f"{field}: required, a non-empty string")
    if len(raw) > MAX_TEXT or not raw.isprintable():
        raise BadRequest(f"{field}: must be printable and at most {MAX_TEXT} characters")
    return raw
