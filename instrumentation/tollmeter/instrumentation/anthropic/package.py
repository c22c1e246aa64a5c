"""The client library versions ``AnthropicInstrumentor`` supports."""

from __future__ import annotations

__all__ = ["_instruments"]

_instruments = ("anthropic >= 0.40",)
