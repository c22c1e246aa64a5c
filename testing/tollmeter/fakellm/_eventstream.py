"""AWS event-stream framing, as Bedrock's streaming responses use it.

A message is::

    total length (u32) | headers length (u32) | CRC32 of those 8 bytes (u32)
    headers | payload | CRC32 of everything before it (u32)

all big-endian. Each header is a name length (u8), the name, a value type (u8; 7 is a
string) and, for strings, a value length (u16) and the UTF-8 value. Events carry
``:message-type: event``, ``:event-type`` and ``:content-type``; errors inside a stream
carry ``:message-type: exception`` and ``:exception-type``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = ["event_message", "message"]

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_JSON = "application/json"


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", _STRING, len(raw_value))
        + raw_value
    )


def message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One framed message with string ``headers`` (in the given order) and ``payload``."""
    encoded = b"".join(_header(name, value) for name, value in headers.items())
    total = _PRELUDE.size + _CRC.size + len(encoded) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(encoded))
    head = prelude + _CRC.pack(zlib.crc32(prelude))
    body = head + encoded + payload
    return body + _CRC.pack(zlib.crc32(body))


def event_message(event_type: str, data: Any) -> bytes:
    """An event of the stream's union member ``event_type`` with ``data`` as JSON."""
    headers = {":event-type": event_type, ":content-type": _JSON, ":message-type": "event"}
    return message(headers, json.dumps(data, separators=(",", ":")).encode())
