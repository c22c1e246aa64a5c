"""One span per model call when other GenAI instrumentations wrap the same SDK.

OpenTelemetry's GenAI instrumentations (openai-v2 and the ``opentelemetry-util-genai``
handler behind it, botocore's Bedrock extension), OpenLLMetry and OpenInference all wrap the
SDK methods tollmeter wraps, with ``wrapt``, so the wrappers nest in the order the
instrumentors were enabled. tollmeter handles each side of its own wrapper:

- **A peer above** (enabled after tollmeter): its wrapper has already started a span for this
  call when tollmeter's runs. When that span is current, ``peer_above()`` returns it and
  ``Telemetry.start`` adopts it (attribution, request attributes, usage) instead of opening a
  second one. A peer that records the GenAI token and duration metrics itself keeps doing so,
  and tollmeter records none for that call, so each metric is recorded once.
- **A peer below** (enabled before tollmeter): ``beneath(wrapped)`` skips the peer's wrappers
  and calls what they wrap, so the peer neither starts a span nor records a metric. Skipping,
  not OpenTelemetry's suppression key, because openai-v2 honours no key and the others honour
  only the global one, which would silence HTTP client instrumentations as well.
- **Wrappers tollmeter cannot see**: OpenInference's OpenAI instrumentation wraps the
  client's ``request`` method, below every resource method. ``quiet(context)`` marks the
  context of tollmeter's call with OpenLLMetry's own switch
  (``suppress_language_model_instrumentation``) always, and with OpenTelemetry's global
  suppression key only when that OpenInference wrapper is installed, since it honours nothing
  else.

OpenLLMetry's Anthropic instrumentation starts its span without making it current: enabled
after tollmeter, its span cannot be found and the call has two spans (documented in
docs/traces.md); enabled before, it is skipped like any peer below.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

__all__ = ["PeerSpan", "beneath", "peer_above", "quiet"]

# (module or scope name prefix, records the GenAI token and duration metrics itself)
_PEERS: Final = (
    ("opentelemetry.util.genai", True),
    ("opentelemetry.instrumentation.openai_v2", True),
    ("opentelemetry.instrumentation.openai", True),
    ("opentelemetry.instrumentation.anthropic", True),
    ("opentelemetry.instrumentation.botocore", True),
    ("openinference.instrumentation", False),
)

# OpenLLMetry's switch (opentelemetry-semantic-conventions-ai), read with ``get_value``.
_SUPPRESS_LANGUAGE_MODEL: Final = "suppress_language_model_instrumentation"


def _peer(name: str | None) -> tuple[str, bool] | None:
    if not name:
        return None
    for prefix, records_metrics in _PEERS:
        if name == prefix or name.startswith(prefix + "."):
            return prefix, records_metrics
    return None


class PeerSpan:
    """A span another instrumentation started for the call tollmeter is about to meter."""

    __slots__ = ("records_metrics", "span")

    def __init__(self, span: Span, records_metrics: bool) -> None:
        self.span = span
        self.records_metrics = records_metrics


def peer_above() -> PeerSpan | None:
    """The current span if a peer started it and it is still open, else ``None``."""
    span = trace.get_current_span()
    scope = getattr(span, "instrumentation_scope", None)
    if scope is None or not span.is_recording():
        return None
    peer = _peer(getattr(scope, "name", None))
    if peer is None:
        return None
    return PeerSpan(span, peer[1])


def _wrapper_module(wrapped: Any) -> str | None:
    wrapper = getattr(wrapped, "_self_wrapper", None)
    if wrapper is None:
        return None
    module = getattr(wrapper, "__module__", None)
    return module if isinstance(module, str) else type(wrapper).__module__


def beneath(wrapped: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapped`` without the peers' ``wrapt`` wrappers on top of it.

    A wrapper of anyone else (the application's own, say) stops the descent: what is
    under it runs as it would without tollmeter.
    """
    while _peer(_wrapper_module(wrapped)) is not None:
        inner = getattr(wrapped, "__wrapped__", None)
        if not callable(inner):
            break
        wrapped = inner
    return wrapped


def _openinference_on_requests() -> bool:
    openai = sys.modules.get("openai")
    request = getattr(getattr(openai, "OpenAI", None), "request", None)
    return (_wrapper_module(request) or "").startswith("openinference.")


def quiet(context: Context) -> Context:
    """``context`` with the switches that keep the peers below tollmeter's call silent."""
    context = otel_context.set_value(_SUPPRESS_LANGUAGE_MODEL, True, context)
    if _openinference_on_requests():
        context = otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True, context)
    return context
