"""The ``google-genai`` SDK versions ``GoogleGenAIInstrumentor`` supports, and how it finds methods.

A metered call should be one request to the model. The public ``generate_content`` may send
several (automatic function calling, automatic continuation) and returns the usage of the last
one only; each request goes through a private per-request method (``_generate_content``,
``_generate_content_stream``, ``_embed_content``), so that is what gets wrapped when the
installed SDK has it, and the public method only when it does not (releases whose
``embed_content`` sends its request itself). ``first_method`` decides from what the installed
SDK has, never from a version number, and imports the SDK only when called, so the entry point
loads without it.
"""

from __future__ import annotations

import importlib

__all__ = ["_instruments", "first_method"]

_instruments = ("google-genai >= 1.0",)


def first_method(module: str, cls_name: str, methods: tuple[str, ...]) -> tuple[type, str] | None:
    """(class, name) of the first of ``methods`` that ``module.cls_name`` has, if any."""
    try:
        owner = importlib.import_module(module)
    except ImportError:
        return None
    cls = getattr(owner, cls_name, None)
    if not isinstance(cls, type):
        return None
    for method in methods:
        if callable(getattr(cls, method, None)):
            return cls, method
    return None
