"""OTLP/JSON: the protobuf JSON mapping with OTLP's own rules for ids.

OTLP/JSON writes trace and span ids as hex strings where the standard protobuf
JSON mapping expects base64, so ids are rewritten before parsing. Integers may
be numbers or strings and enums names or integers, as the mapping allows;
unknown fields are ignored, as the OTLP specification requires of receivers.
"""

from __future__ import annotations

import base64
import json
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from tollmeter.semconv.errors import TollmeterError

__all__ = ["from_otlp_json", "to_otlp_json"]

_M = TypeVar("_M", bound=Message)

# Field name -> id length in bytes. These names hold ids wherever they appear in OTLP.
_ID_FIELDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


class _BadId(TollmeterError, ValueError):
    pass


def _hex_to_base64(name: str, value: object, size: int) -> str:
    if not isinstance(value, str):
        raise _BadId(f"{name} must be a hex string, got {type(value).__name__}")
    if value == "":
        return ""
    if len(value) != 2 * size:
        raise _BadId(f"{name} must be {2 * size} hex digits, got {len(value)}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise _BadId(f"{name} is not hexadecimal: {value[:64]!r}") from None
    return base64.b64encode(raw).decode("ascii")


def _rewrite_ids(node: object) -> None:
    # Iterative, so that hostile nesting cannot exhaust the Python stack here.
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                size = _ID_FIELDS.get(key)
                if size is not None:
                    current[key] = _hex_to_base64(key, value, size)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(item for item in current if isinstance(item, (dict, list)))


def from_otlp_json(payload: bytes, message_type: type[_M]) -> _M:
    """Parse an OTLP/JSON request; raises ``ValueError`` with a readable reason."""
    try:
        document = json.loads(payload)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    try:
        _rewrite_ids(document)
    except _BadId as exc:
        raise ValueError(str(exc)) from None
    message = message_type()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except json_format.ParseError as exc:
        raise ValueError(f"not an OTLP {message_type.DESCRIPTOR.name}: {exc}") from None
    return message


def to_otlp_json(message: Message) -> bytes:
    """Encode a response (responses and statuses carry no ids)."""
    return json_format.MessageToJson(message, indent=None).encode("utf-8")
