"""The attribute registry shared by tollmeter's instrumentation and collector."""

from __future__ import annotations

from tollmeter.semconv.version import __version__

__all__ = ["__version__"]
