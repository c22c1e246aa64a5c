"""The openai SDK versions ``OpenAIInstrumentor`` supports, and how it finds what one offers.

Supported releases differ in which methods they have and where: chat ``parse`` and ``stream``
live under ``beta`` before they became stable, the Responses API arrives in 1.66 (hence the
floor). ``patch.ENDPOINTS`` lists every place a metered method may live; ``find_method`` keeps
those the installed SDK has, so nothing is decided from a version number. The SDK is imported
only when ``find_method`` is called, so the entry point loads without it.
"""

from __future__ import annotations

import importlib

__all__ = ["_instruments", "find_method"]

_instruments = ("openai >= 1.66",)


def find_method(module: str, method: str) -> tuple[type, str] | None:
    """(class, method name) when the installed SDK has ``module.Class.method``."""
    try:
        owner = importlib.import_module(module)
    except ImportError:
        return None
    class_name, method_name = method.split(".")
    cls = getattr(owner, class_name, None)
    if not isinstance(cls, type) or not callable(getattr(cls, method_name, None)):
        return None
    return cls, method_name
