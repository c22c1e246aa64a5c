"""Bases for our ``wrapt`` proxies that type-check and import with every supported wrapt.

wrapt 2 makes ``ObjectProxy`` generic; wrapt 1, which older OpenTelemetry instrumentation
releases pin, does not, and subscripting it there fails at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt

__all__ = ["AnyProxy", "SpanProxy"]

if TYPE_CHECKING:
    from typing import TypeAlias

    from opentelemetry.trace import Span

    AnyProxy: TypeAlias = wrapt.ObjectProxy[Any]
    SpanProxy: TypeAlias = wrapt.ObjectProxy[Span]
else:
    AnyProxy = SpanProxy = wrapt.ObjectProxy
