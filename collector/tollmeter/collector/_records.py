"""The usage event: one metered model call, as stored in the ledger and exported.

Every stage of the collector speaks this one record: extraction builds it from a
span, the ledger stores it, meters and limits read it, the Parquet exporter
writes it. Field names are the Parquet column names (docs/parquet.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

__all__ = ["USAGE_SOURCES", "Annotation", "UsageEvent", "UsageSource", "fill_in"]

UsageSource = Literal["provider", "estimate", "reservation"]
"""Where the counts come from: the provider's report, a tokenizer estimate made by
the instrumentation, or an expired reservation charged at its estimate."""

USAGE_SOURCES: tuple[UsageSource, ...] = ("provider", "estimate", "reservation")


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One metered model call.

    ``event_id`` is derived from the dedupe key, so the same call reported twice
    yields the same id. ``sequence`` is stamped by the ledger on the event it commits
    (0 before).
    ``event_time_ns`` is the span's start time in nanoseconds since the Unix epoch.
    Token fields follow ``tollmeter.semconv.Usage``: ``input_tokens`` includes cache
    reads and writes, ``output_tokens`` includes reasoning. ``hidden_input_tokens`` is the
    part of the input the instrumentation counted in system/developer messages and tool
    definitions (``None``: not reported); the two timings are set for streams only.
    ``org_id`` is the tenant's organisation (``None``: none known); ``policy`` is the
    limits' decision on the call as compact JSON (``None``: the call was never checked);
    ``plan`` is the tenant's plan when the call was metered (``None``: none);
    ``internal`` marks the operator's own usage (tests, evaluations, staff tools).
    """

    event_id: str
    event_time_ns: int
    provider: str
    operation: str
    tenant_id: str
    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    total_tokens: int = 0
    usage_source: UsageSource = "provider"
    project_id: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None
    feature: str | None = None
    environment: str | None = None
    service_name: str | None = None
    request_id: str | None = None
    workflow_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    cost: Decimal | None = None
    currency: str | None = None
    price_source: str | None = None
    duration_s: float | None = None
    status: str = "ok"
    error_type: str | None = None
    attempt: int | None = None
    reservation_id: str | None = None
    collector_id: str | None = None
    hidden_input_tokens: int | None = None
    time_to_first_token_s: float | None = None
    decode_s_per_output_token: float | None = None
    org_id: str | None = None
    policy: str | None = None
    plan: str | None = None
    internal: bool = False
    sequence: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_input_tokens - self.cache_write_input_tokens

    @property
    def non_reasoning_output_tokens(self) -> int:
        return self.output_tokens - self.reasoning_output_tokens

    @property
    def model(self) -> str:
        """The model to meter under: the response model when known, else the requested one."""
        return self.response_model or self.request_model or ""

    def with_sequence(self, sequence: int) -> UsageEvent:
        return dataclasses.replace(self, sequence=sequence)


Annotation = Literal["plan", "policy"]
_ANNOTATION_SETTERS = {name: vars(UsageEvent)[name].__set__ for name in ("plan", "policy")}


def fill_in(event: UsageEvent, name: Annotation, value: str | None) -> None:
    """Set what the collector learns of ``event`` after extraction (its tenant's plan, its
    reservation's policy path), in place.

    Only for an event the pipeline has not committed yet: until its commit it belongs to
    the pipeline, and copying a frozen event for each annotation costs about as much as
    extracting it.
    """
    _ANNOTATION_SETTERS[name](event, value)
