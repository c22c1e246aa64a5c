"""Outcomes: what a workflow achieved, reported so that its usage can be priced per result.

An outcome is recorded against a workflow id (``tollmeter.workflow.id`` on the model
calls) under a name (``ticket_resolved``), with a value (1 unless given). Reports arrive
as ``tollmeter.outcome`` spans over OTLP or through ``POST /api/v1/outcomes``; both are
checked here, by the same rules, and both get their id here: the id the client gave, or
one derived from the workflow id and the name, so that the same outcome reported by the
span and by the back end, or sent twice, is stored once per tenant.

Values are exact decimals, bounded so that no report can overflow a sum or a column:
finite, at most ``MAX_VALUE`` in magnitude, at most ``MAX_DECIMALS`` digits after the
point.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tollmeter.collector.errors import BadRequest

__all__ = [
    "MAX_DECIMALS",
    "MAX_NAME",
    "MAX_VALUE",
    "Outcome",
    "outcome_id",
    "outcome_name",
    "outcome_text",
    "outcome_value",
]

MAX_NAME = 128
MAX_TEXT = 256
MAX_VALUE = Decimal(10) ** 15
MAX_DECIMALS = 12


@dataclass(frozen=True, slots=True)
class Outcome:
    """One outcome of a workflow. ``sequence`` is assigned by the ledger on commit (0 before)."""

    outcome_id: str
    tenant_id: str
    workflow_id: str
    name: str
    value: Decimal
    time_ns: int
    sequence: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "outcome_id": self.outcome_id,
            "tenant": self.tenant_id,
            "workflow_id": self.workflow_id,
            "name": self.name,
            "value": str(self.value),
            "time_ns": self.time_ns,
        }


def outcome_id(workflow_id: str, name: str) -> str:
    """The id of the outcome ``name`` of ``workflow_id`` when the client gave none."""
    key = f"o{len(workflow_id)}:{workflow_id}{name}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def outcome_value(raw: object, field: str = "value") -> Decimal:
    """``raw`` (a number, or a decimal string) as a bounded exact decimal; ``BadRequest``
    naming ``field`` otherwise."""
    if raw is None:
        return Decimal(1)
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise BadRequest(f"{field}: expected a number, not {type(raw).__name__}")
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise BadRequest(f"{field}: must be a finite number, not {raw!r}")
        # The shortest text that reads back as the same float: 0.1 stays 0.1.
        raw = repr(raw)
    if isinstance(raw, str):
        if len(raw) > 64:
            raise BadRequest(f"{field}: a number of more than 64 characters")
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            raise BadRequest(f"{field}: {raw[:64]!r} is not a number") from None
    elif abs(raw) > MAX_VALUE:
        raise BadRequest(f"{field}: magnitude above {MAX_VALUE:.0e}")
    else:
        value = Decimal(raw)
    if not value.is_finite():
        raise BadRequest(f"{field}: must be a finite number, not {raw!r:.64}")
    if abs(value) > MAX_VALUE:
        raise BadRequest(f"{field}: magnitude above {MAX_VALUE:.0e}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        normalized = value.normalize().as_tuple().exponent
        if isinstance(normalized, int) and normalized < -MAX_DECIMALS:
            raise BadRequest(f"{field}: more than {MAX_DECIMALS} digits after the point")
        value = value.normalize()
    return value + 0  # a negative zero reads as zero


def outcome_name(raw: object, field: str = "name") -> str:
    """An outcome name: printable text of 1 to ``MAX_NAME`` characters."""
    return _bounded(raw, field, MAX_NAME)


def outcome_text(raw: object, field: str) -> str:
    """A workflow, tenant or outcome id: printable text of 1 to 256 characters."""
    return _bounded(raw, field, MAX_TEXT)


def _bounded(raw: object, field: str, limit: int) -> str:
    if not isinstance(raw, str):
        raise BadRequest(f"{field}: expected a string, not {type(raw).__name__}")
    if not raw:
        raise BadRequest(f"{field}: must not be empty")
    if len(raw) > limit:
        raise BadRequest(f"{field}: longer than {limit} characters ({len(raw)})")
    if not raw.isprintable():
        raise BadRequest(f"{field}: contains control characters")
    return raw
