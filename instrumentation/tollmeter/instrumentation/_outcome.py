"""Outcomes: tell the collector what a workflow achieved, to price it per result.

``outcome("ticket_resolved", workflow_id="run-42", value=1)`` records a short
``tollmeter.outcome`` span that the collector stores as an outcome of the workflow; its
usage API then divides the cost and tokens of the workflow's model calls by the outcomes
reported (cost per resolved ticket). The workflow and tenant default to the attribution
in effect (``attribute(workflow=..., tenant=...)``). The collector stores one outcome per
tenant and outcome id; without ``outcome_id`` the id is derived from the workflow and the
name, so reporting the same outcome of a workflow again (here or through the collector's
``POST /api/v1/outcomes``) counts once.

An outcome never raises into the application: a name, value or id that cannot be sent
(empty, too long, not finite...) is logged and dropped, and ``outcome`` returns False.
"""

from __future__ import annotations

import logging
import math
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from tollmeter.instrumentation._attribution import MAX_VALUE_LENGTH, current_attribution
from tollmeter.instrumentation._safety import report_failure
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.version import __version__

__all__ = ["MAX_OUTCOME_NAME", "MAX_OUTCOME_VALUE", "OUTCOME_SPAN_NAME", "outcome"]

OUTCOME_SPAN_NAME: Final = "tollmeter.outcome"
MAX_OUTCOME_NAME: Final = 128
MAX_OUTCOME_VALUE: Final = 10**15
"""Largest magnitude of a value the collector accepts."""

_logger = logging.getLogger("tollmeter.instrumentation")
_SCOPE: Final = "tollmeter.instrumentation.outcome"
# Misuse is logged once per kind of problem, so a loop calling it wrongly cannot flood logs.
_refused: set[str] = set()


def outcome(
    name: str,
    *,
    workflow_id: str | None = None,
    value: float = 1,
    tenant: str | None = None,
    outcome_id: str | None = None,
    tracer_provider: TracerProvider | None = None,
) -> bool:
    """Record the outcome ``name`` of a workflow; whether it was recorded.

    ``workflow_id`` and ``tenant`` default to the attribution in effect; ``value`` is a
    finite number (a count, an amount); ``outcome_id`` makes the report idempotent
    under an id of the caller's choosing. The span goes through ``tracer_provider``
    (default: the global one, which ``configure()`` sets).
    """
    try:
        return _record(name, workflow_id, value, tenant, outcome_id, tracer_provider)
    except Exception as exc:
        report_failure("outcome", exc)
        return False


def _record(
    name: object,
    workflow_id: object,
    value: object,
    tenant: object,
    outcome_id: object,
    tracer_provider: TracerProvider | None,
) -> bool:
    attribution = current_attribution()
    if workflow_id is None:
        workflow_id = attribution.get(attrs.TOLLMETER_WORKFLOW_ID)
        if workflow_id is None:
            return _refuse("workflow_id", "no workflow_id given and none in attribute()")
    if tenant is None:
        tenant = attribution.get(attrs.TOLLMETER_TENANT_ID)
    problem = (
        _text_problem("name", name, MAX_OUTCOME_NAME)
        or _text_problem("workflow_id", workflow_id, MAX_VALUE_LENGTH)
        or _value_problem(value)
        or (None if tenant is None else _text_problem("tenant", tenant, MAX_VALUE_LENGTH))
        or (
            None
            if outcome_id is None
            else _text_problem("outcome_id", outcome_id, MAX_VALUE_LENGTH)
        )
    )
    if problem is not None:
        return _refuse(*problem)
    span_attributes: dict[str, str | int | float] = dict(attribution)
    span_attributes[attrs.TOLLMETER_OUTCOME_NAME] = str(name)
    span_attributes[attrs.TOLLMETER_OUTCOME_VALUE] = value  # type: ignore[assignment]  # checked
    span_attributes[attrs.TOLLMETER_WORKFLOW_ID] = str(workflow_id)
    if tenant is not None:
        span_attributes[attrs.TOLLMETER_TENANT_ID] = str(tenant)
    if outcome_id is not None:
        span_attributes[attrs.TOLLMETER_OUTCOME_ID] = str(outcome_id)
    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
    span = tracer.start_span(
        OUTCOME_SPAN_NAME, kind=trace.SpanKind.INTERNAL, attributes=span_attributes
    )
    recorded = span.is_recording()
    span.end()
    return recorded


def _text_problem(argument: str, text: object, limit: int) -> tuple[str, str] | None:
    if not isinstance(text, str) or not text:
        return argument, "must be a non-empty str"
    if len(text) > limit:
        return argument, f"must be at most {limit} characters"
    if not text.isprintable():
        return argument, "must not contain control characters"
    return None


def _value_problem(value: object) -> tuple[str, str] | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "value", "must be an int or a float"
    if isinstance(value, float) and not math.isfinite(value):
        return "value", "must be finite"
    if abs(value) > MAX_OUTCOME_VALUE:
        return "value", f"must be at most {MAX_OUTCOME_VALUE:.0e} in magnitude"
    return None


def _refuse(argument: str, reason: str) -> bool:
    key = f"{argument}: {reason}"
    if key not in _refused:
        _refused.add(key)
        _logger.warning(
            "tollmeter.outcome(%s=...) %s; the outcome is not recorded "
            "(further refusals of this kind are not logged)",
            argument,
            reason,
        )
    return False
