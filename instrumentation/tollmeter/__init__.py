"""tollmeter: meter LLM token usage with OpenTelemetry.

``tollmeter.configure``, ``tollmeter.attribute``, ``tollmeter.budget``,
``tollmeter.outcome``, ``tollmeter.cache_hit`` and the two
errors an application catches around a model call, ``tollmeter.BudgetExceeded`` and
``tollmeter.QuotaExceeded``, are re-exported lazily from ``tollmeter.instrumentation``
so that importing ``tollmeter.collector`` or ``tollmeter.semconv`` never loads the
instrumentation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The other portions (semconv, collector) live in other folders in a source checkout.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

if TYPE_CHECKING:
    from tollmeter.instrumentation import (
        BudgetExceeded,
        QuotaExceeded,
        attribute,
        budget,
        cache_hit,
        configure,
        outcome,
    )

__all__ = [
    "BudgetExceeded",
    "QuotaExceeded",
    "attribute",
    "budget",
    "cache_hit",
    "configure",
    "outcome",
]

_LAZY = frozenset(__all__)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from tollmeter import instrumentation

        return getattr(instrumentation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
