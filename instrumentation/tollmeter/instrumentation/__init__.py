"""Auto-instrumentation of LLM SDKs with token usage and tenant attribution."""

from __future__ import annotations

__all__: list[str] = []
