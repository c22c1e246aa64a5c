"""Auto-instrumentation of LLM SDKs with token usage and tenant attribution.

- ``attribute(tenant=..., project=..., ...)``: attribute model calls in a block
  or function (context manager and decorator, propagated as W3C baggage);
  ``current_attribution()`` returns what is in effect.
- ``configure(service_name=..., endpoint=...)``: OTLP export of traces and
  metrics plus every installed instrumentor, in one idempotent call; returns a
  ``TelemetryHandle`` with ``force_flush()`` and ``shutdown()``.
- ``AttributionSpanProcessor``: copies the attribution onto GenAI spans made by
  any instrumentation.
- ``OpenAIInstrumentor`` (``tollmeter.instrumentation.openai``): spans and
  metrics for every call of the ``openai`` SDK; likewise ``AnthropicInstrumentor``
  (``.anthropic``) and ``GoogleGenAIInstrumentor`` (``.google_genai``, Gemini API and
  Vertex AI).
- ``outcome(name, workflow_id=..., value=...)``: record what a workflow achieved, so that
  the collector gives the cost and tokens per outcome (per resolved ticket...).
- ``cache_hit(model=..., input_tokens=..., output_tokens=...)``: report a call answered
  from the application's own cache, metered by the collector as avoided tokens and saved
  cost, apart from billed usage.
- ``budget(max_tokens=..., max_calls=..., max_output_tokens=...)``: cap the model calls of
  one request or agent run in process; ``BudgetExceeded`` before the call that would pass
  it, or at the next chunk of a stream whose output reaches it (``overrun="warn"``: log).
- ``Guard(url=...)``: pre-flight checks against the collector's limits (also enabled by
  ``configure(guard_url=...)`` or ``TOLLMETER_GUARD_URL``); ``QuotaExceeded`` before a
  denied call reaches the provider.
- ``TollmeterMiddleware`` (ASGI) and ``TollmeterWSGIMiddleware`` (WSGI): attribute each
  web request's model calls from a header, the authenticated user or a callable.
- ``count_text_tokens``, ``estimate_chat_input_tokens``,
  ``estimate_prompt_tokens``, ``encoding_name_for_model``: the token estimates
  used when a provider reports no usage.
"""

from __future__ import annotations

from tollmeter.instrumentation._attribution import (
    MAX_VALUE_LENGTH,
    AttributionSpanProcessor,
    attribute,
    current_attribution,
)
from tollmeter.instrumentation._budget import BudgetSpanProcessor, budget
from tollmeter.instrumentation._cache_hit import cache_hit
from tollmeter.instrumentation._configure import TelemetryHandle, configure
from tollmeter.instrumentation._estimate import (
    count_text_tokens,
    encoding_name_for_model,
    estimate_chat_input_tokens,
    estimate_prompt_tokens,
    set_load_timeout,
)
from tollmeter.instrumentation._guard import Guard, GuardDecision
from tollmeter.instrumentation._middleware import TollmeterMiddleware, TollmeterWSGIMiddleware
from tollmeter.instrumentation._outcome import outcome
from tollmeter.instrumentation.errors import BudgetExceeded, GuardUnavailable, QuotaExceeded

__all__ = [
    "MAX_VALUE_LENGTH",
    "AttributionSpanProcessor",
    "BudgetExceeded",
    "BudgetSpanProcessor",
    "Guard",
    "GuardDecision",
    "GuardUnavailable",
    "QuotaExceeded",
    "TelemetryHandle",
    "TollmeterMiddleware",
    "TollmeterWSGIMiddleware",
    "attribute",
    "budget",
    "cache_hit",
    "configure",
    "count_text_tokens",
    "current_attribution",
    "encoding_name_for_model",
    "estimate_chat_input_tokens",
    "estimate_prompt_tokens",
    "outcome",
    "set_load_timeout",
]
