"""One field of an SDK object, or of the plain dict that stands for one.

Responses are SDK objects (pydantic models), read by attribute; requests, and response fields
newer than the installed SDK, arrive as plain dicts. Every provider's extraction reads both
kinds through ``field``, several times per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["field"]

_MISSING: Final = object()


def field(owner: object, name: str) -> Any:
    """``owner[name]`` for a mapping, else ``owner.name``; ``None`` when absent.

    Dicts and attributes are tried before the abstract ``Mapping`` check, which costs more
    than both and is needed only for other mappings.
    """
    if owner is None:
        return None
    if isinstance(owner, dict):
        return owner.get(name)
    value = getattr(owner, name, _MISSING)
    if value is _MISSING:
        return owner.get(name) if isinstance(owner, Mapping) else None
    return value
