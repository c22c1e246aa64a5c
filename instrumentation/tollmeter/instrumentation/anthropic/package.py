"""The Anthropic SDK versions ``AnthropicInstrumentor`` supports, and what each one offers.

Every difference between supported SDK releases is decided here, from what the installed SDK
has rather than from its version number:

- where the ``Messages``/``AsyncMessages`` resources live: ``anthropic.resources.messages`` is a
  module in early releases and a package later, and both re-export the classes, as do
  ``anthropic.resources.beta.messages`` and the early ``beta.prompt_caching`` namespace (gone in
  later releases);
- whether the SDK emits spans of its own (``anthropic._base_client.start_api_call_span``, added in
  recent releases): without it tollmeter always starts its own span.

The SDK is imported only when these are called, so the entry point loads without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["BASE_CLIENT", "SPAN_FACTORY", "_instruments", "message_methods", "span_factory"]

_instruments = ("anthropic >= 0.40",)

BASE_CLIENT = "anthropic._base_client"
SPAN_FACTORY = "start_api_call_span"

_MESSAGE_RESOURCES = (
    "anthropic.resources.messages",
    "anthropic.resources.beta.messages",
    "anthropic.resources.beta.prompt_caching",
)


def message_methods() -> list[tuple[type, str, bool]]:
    """(class, method, is async) for each ``create``/``stream`` of the installed SDK's
    ``Messages`` and ``AsyncMessages`` classes; each class once, however often re-exported."""
    found: list[tuple[type, str, bool]] = []
    seen: set[type] = set()
    for name in _MESSAGE_RESOURCES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for owner_name, is_async in (("Messages", False), ("AsyncMessages", True)):
            owner = getattr(module, owner_name, None)
            if not isinstance(owner, type) or owner in seen:
                continue
            seen.add(owner)
            # Early beta namespaces have ``create`` only.
            for method in ("create", "stream"):
                if callable(getattr(owner, method, None)):
                    found.append((owner, method, is_async))
    return found


def span_factory() -> ModuleType | None:
    """The SDK module whose ``start_api_call_span`` makes its native spans, if it has one."""
    base_client = importlib.import_module(BASE_CLIENT)
    return base_client if callable(getattr(base_client, SPAN_FACTORY, None)) else None
