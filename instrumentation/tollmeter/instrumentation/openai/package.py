"""The OpenAI SDK versions the instrumentor supports."""

from __future__ import annotations

_instruments = ("openai >= 1.66",)
