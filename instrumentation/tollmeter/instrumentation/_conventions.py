"""Which generation of the GenAI semantic conventions the instrumentors emit.

The GenAI conventions moved to their own repository and are renaming what they measure: the
``gen_ai.client.token.usage`` histogram (split by ``gen_ai.token.type``) gives way to one counter
per kind of token, ``gen_ai.client.inference.usage.{input,output,cache_read.input,
cache_write.input,reasoning.output}_tokens``, each split by ``gen_ai.token.modality``; the span
attribute ``gen_ai.usage.cache_creation.input_tokens`` is now
``gen_ai.usage.cache_write.input_tokens``. As OpenTelemetry's transition plan asks, the default
does not change, and ``OTEL_SEMCONV_STABILITY_OPT_IN`` (a comma-separated list, read when an
instrumentor is enabled) opts in:

- unset, or without a ``gen_ai`` token: ``DEFAULT``, what tollmeter emitted so far: the
  histogram, and ``cache_write`` on spans (tollmeter already used the new span name).
- ``gen_ai_latest_experimental`` (OpenTelemetry's token): ``LATEST``, the counters instead of
  the histogram.
- ``gen_ai_latest_experimental/dup``: ``DUP``, both the histogram and the counters, and spans
  carrying the deprecated ``cache_creation`` name beside ``cache_write``, for a migration where
  old dashboards and readers still run. The GenAI conventions define no ``/dup`` value; this one
  follows the ``http/dup`` pattern of the HTTP conventions' migration and wins over the other.

The modality of every counter data point is ``unknown``: no supported SDK splits its usage by
modality for every call, and the conventions ask for ``unknown`` then.
"""

from __future__ import annotations

import enum
import os

__all__ = [
    "GEN_AI_DUP",
    "GEN_AI_LATEST",
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "Conventions",
    "conventions_from_env",
]

OTEL_SEMCONV_STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
"""Comma-separated opt-in tokens; unset by default."""
GEN_AI_LATEST = "gen_ai_latest_experimental"
GEN_AI_DUP = "gen_ai_latest_experimental/dup"


class Conventions(enum.Enum):
    """What ``Telemetry`` emits; see the module docstring."""

    DEFAULT = "default"
    LATEST = "latest"
    DUP = "dup"

    @property
    def token_histogram(self) -> bool:
        return self is not Conventions.LATEST

    @property
    def usage_counters(self) -> bool:
        return self is not Conventions.DEFAULT

    @property
    def deprecated_span_names(self) -> bool:
        return self is Conventions.DUP


def conventions_from_env() -> Conventions:
    """The conventions ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for."""
    tokens = {
        token.strip() for token in os.environ.get(OTEL_SEMCONV_STABILITY_OPT_IN, "").split(",")
    }
    if GEN_AI_DUP in tokens:
        return Conventions.DUP
    if GEN_AI_LATEST in tokens:
        return Conventions.LATEST
    return Conventions.DEFAULT
