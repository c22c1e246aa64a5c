"""The policy path: what the limits decided about a call, as stored on its usage event.

A checked call's reservation knows the limits it was reserved on and the check's answer;
its usage event gets them as compact JSON, at most ``MAX_POLICY_BYTES`` bytes::

    {"decision":"downgrade","reservation":"r-1f...","limits":["org-day","tenant-day"],
     "downgrade":"gpt-4o-mini"}

``decision`` is the check's action (``allow``, ``alert`` or ``downgrade``: a denied call
has no reservation and so no event); ``limits`` the names of the limits reserved on, each
once, in the order they are configured. A longer text loses limit names from the end and
gains ``"truncated":true``. An event that named no reservation, or one of another tenant,
has no policy (``None``): it was never checked, or not by its own tenant.
"""

from __future__ import annotations

import json
from typing import Any

from tollmeter.collector.limits._model import Reservation

__all__ = ["MAX_POLICY_BYTES", "policy_text"]

MAX_POLICY_BYTES = 512


def _encode(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def policy_text(reservation: Reservation) -> str:
    """The policy path of a call made under ``reservation``."""
    limits = list(dict.fromkeys(charge.limit for charge in reservation.charges))
    body: dict[str, Any] = {
        "decision": reservation.action or "allow",
        "reservation": reservation.id,
        "limits": limits,
    }
    if reservation.downgrade_model:
        body["downgrade"] = reservation.downgrade_model
    text = _encode(body)
    if len(text.encode()) <= MAX_POLICY_BYTES:
        return text
    body["truncated"] = True
    while limits:
        limits.pop()
        text = _encode(body)
        if len(text.encode()) <= MAX_POLICY_BYTES:
            return text
    # Only a configured downgrade model can be this long: its name goes too.
    body.pop("downgrade", None)
    return _encode(body)
