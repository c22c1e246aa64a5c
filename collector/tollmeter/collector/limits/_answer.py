"""A check's answer as the bytes of its JSON body, written out directly.

The same text as ``json.dumps(result.to_json(), separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` (what a ``JSONResponse`` sends), for a fraction
of its cost: this runs for every check, and most of each limit's part (its name, measure,
action and limit, its key) is the same from one check to the next, so it is written
once and kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from tollmeter.collector.limits._model import CheckResult, LimitStatus, iso_time

__all__ = ["check_answer_bytes"]

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_MAX_KEPT = 4096
"""Parts kept per cache: limits are few, keys (tenants) may be many but repeat."""

_INFINITY = float("inf")
# By name, measure, action and the limit with its type and sign: 1 and 1.0, or 0.0 and
# -0.0, are one dict key but two texts.
_statics: dict[tuple[str, str, str, float, type, float], tuple[str, str]] = {}
_keys: dict[tuple[tuple[str, str], ...], str] = {}


def _value(value: Any) -> str:
    if type(value) is float and -_INFINITY < value < _INFINITY:
        return float.__repr__(value)
    # Anything else as the encoder writes it (NaN and infinity raise, as they did).
    return _ENCODER.encode(value)


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _key(key: Mapping[str, str]) -> str:
    items = tuple(key.items())
    text = _keys.get(items)
    if text is None:
        if len(_keys) >= _MAX_KEPT:
            _keys.clear()
        text = _keys[items] = _ENCODER.encode(dict(items))
    return text


def _static(name: str, measure: str, action: str, limit: float) -> tuple[str, str]:
    """What comes before the key and between the key and the remainder."""
    static = (name, measure, action, limit, type(limit), math.copysign(1.0, limit))
    parts = _statics.get(static)
    if parts is None:
        if len(_statics) >= _MAX_KEPT:
            _statics.clear()
        parts = _statics[static] = (
            f'{{"name":{_ENCODER.encode(name)},"key":',
            f',"measure":{_ENCODER.encode(measure)},"action":{_ENCODER.encode(action)}'
            f',"limit":{_ENCODER.encode(limit)},"remaining":',
        )
    return parts


def _limit(status: LimitStatus) -> str:
    name, key, measure, action, limit, remaining, reset_at, allowed = status
    head, middle = _static(name, measure, action, limit)
    return (
        f"{head}{_key(key)}{middle}{_value(max(0.0, remaining))}"
        f',"reset_at":{encode_basestring(iso_time(reset_at))}'
        f',"allowed":{"true" if allowed else "false"}}}'
    )


def check_answer_bytes(result: CheckResult) -> bytes:
    """The JSON body of the answer ``result``."""
    retry = result.retry_after_s
    limits = ",".join([_limit(s) for s in result.limits])
    return (
        f'{{"allowed":{"true" if result.allowed else "false"}'
        f',"action":{_text(result.action)}'
        f',"reservation_id":{_text(result.reservation_id)}'
        f',"retry_after_s":{"null" if retry is None else _value(retry)}'
        f',"downgrade_model":{_text(result.downgrade_model)}'
        f',"denied_by":{_text(result.denied_by)}'
        f',"limits":[{limits}]'
        f',"reason":{_text(result.reason)}}}'
    ).encode()
