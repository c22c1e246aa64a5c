"""From OTLP spans to usage events: one event per metered model call.

A span is metered when its operation (read by ``tollmeter.semconv``) is a model call
and it reports usage; agent, workflow and tool spans are skipped, since their usage
repeats that of the calls beneath them. A span whose usage cannot be trusted is
rejected alone, with a message naming the span and the attribute; the rest of the
request is metered.

Only the attributes that extraction reads are converted from protobuf: the set is
found once by asking the ``tollmeter.semconv`` readers which names they look up, so a
new dialect alias there is picked up without a change here, and prompt or reply text
captured by other instrumentations is never copied. That one pass over a span's
attributes is all a span pays when it carries none of the names an operation is read
from (HTTP, database and other app spans): it is skipped without further reading.

With a ``pricer``, each event is priced while it is built, so it is built once, with
its cost; a pricer that fails leaves the event unpriced rather than losing it.

Hostile input is bounded: spans with more than ``MAX_ATTRIBUTES`` attributes are
rejected, nested values are read to ``MAX_DEPTH`` levels (and ``_MAX_ITEMS`` items),
labels are cut to ``MAX_LABEL`` characters when stored (ids are hashed from their
full value first, so cutting never merges two calls), and a tenant id longer than
``MAX_LABEL`` is refused rather than cut.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tollmeter.collector._avoided import AvoidedCall, avoided_call
from tollmeter.collector._call_measures import KEYS as _MEASURE_KEYS
from tollmeter.collector._call_measures import call_measures
from tollmeter.collector._event_ids import event_id
from tollmeter.collector._organisations import OrganisationsConfig
from tollmeter.collector._outcomes import (
    Outcome,
    outcome_id,
    outcome_name,
    outcome_text,
    outcome_value,
)
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.errors import BadRequest
from tollmeter.semconv import (
    InvalidUsage,
    is_metered_operation,
    model_of,
    operation_of,
    provider_of,
    usage_from_attributes,
)
from tollmeter.semconv import attributes as attrs
from tollmeter.semconv.errors import TollmeterError

if TYPE_CHECKING:
    from tollmeter.collector.pricing import Quote

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_LABEL",
    "CallPricer",
    "ExtractResult",
    "Extractor",
    "event_id",
]

logger = logging.getLogger(__name__)

MAX_ATTRIBUTES = 1024
MAX_DEPTH = 4
MAX_LABEL = 256
_MAX_ITEMS = 256
# Before 2000 or more than a day ahead of this clock, a timestamp is a bug, not a call.
_MIN_TIME_NS = 946_684_800 * 1_000_000_000
_MAX_AHEAD_NS = 86_400 * 1_000_000_000

# The OpenTelemetry resource attribute, read when no tollmeter.environment is set.
_DEPLOYMENT_ENVIRONMENT = "deployment.environment.name"

_Attributes = dict[str, object]


class _Empty:
    """An ``AnyValue`` with nothing set. It stands for itself rather than for ``None``, so
    that a usage attribute sent empty is refused like any other value that is not a count,
    instead of being read as absent (which would meter the call as if it used nothing)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "an empty value"


_EMPTY = _Empty()


def _convert(value: AnyValue, depth: int = 0) -> object:
    kind = value.WhichOneof("value")
    if kind in ("string_value", "int_value", "bool_value", "double_value", "bytes_value"):
        return getattr(value, kind)
    if kind is None:
        return _EMPTY
    if depth >= MAX_DEPTH:
        return None
    if kind == "array_value":
        return [_convert(item, depth + 1) for item in value.array_value.values[:_MAX_ITEMS]]
    return {kv.key: _convert(kv.value, depth + 1) for kv in value.kvlist_value.values[:_MAX_ITEMS]}


def _attributes(pairs: Sequence[KeyValue], wanted: frozenset[str]) -> _Attributes:
    # The hot path of ingest. Only attributes some reader wants are converted, so that
    # prompt or reply text captured by other instrumentations is never copied out, and
    # scalar values are read inline, without a call per value.
    out: _Attributes = {}
    for pair in pairs:
        key = pair.key
        if key not in wanted:
            continue
        value = pair.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            out[key] = value.string_value
        elif kind == "int_value":
            out[key] = value.int_value
        else:
            out[key] = _convert(value)
    return out


def _is_true(value: object) -> bool:
    # A boolean attribute, or text where it came through baggage or a string-only SDK.
    return value is True or (isinstance(value, str) and value.lower() == "true")


class _Recorder(Mapping[str, object]):
    """An empty mapping that remembers which keys were looked up."""

    def __init__(self, value: object) -> None:
        self.seen: set[str] = set()
        self._value = value

    def __getitem__(self, key: str) -> object:
        self.seen.add(key)
        if self._value is None:
            raise KeyError(key)
        return self._value

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.seen.add(key)
        return self._value is not None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@functools.cache
def _semconv_keys() -> frozenset[str]:
    """Every attribute the semconv readers look up, found by asking them.

    They are asked twice: with nothing present (every alias is tried) and with every
    attribute present (branches that only run once a count is found).
    """
    keys: set[str] = set()
    for value in (None, 1, "chat"):
        recorder = _Recorder(value)
        for reader in (usage_from_attributes, provider_of, operation_of, model_of):
            with contextlib.suppress(InvalidUsage):
                reader(recorder)
        keys |= recorder.seen
    return frozenset(keys)


@functools.cache
def _operation_keys() -> frozenset[str]:
    """The attributes ``operation_of`` reads: a span without any of them is no model call."""
    recorder = _Recorder(None)
    operation_of(recorder)
    return frozenset(recorder.seen)


_OWN_KEYS = frozenset(
    {
        attrs.GEN_AI_RESPONSE_ID,
        attrs.ERROR_TYPE,
        attrs.SERVICE_NAME,
        attrs.USER_ID,
        attrs.TOLLMETER_TENANT_ID,
        attrs.TOLLMETER_PROJECT_ID,
        attrs.TOLLMETER_ORG_ID,
        attrs.TOLLMETER_API_KEY_ID,
        attrs.TOLLMETER_FEATURE,
        attrs.TOLLMETER_ENVIRONMENT,
        attrs.TOLLMETER_INTERNAL,
        attrs.TOLLMETER_REQUEST_ID,
        attrs.TOLLMETER_WORKFLOW_ID,
        attrs.TOLLMETER_ATTEMPT,
        attrs.TOLLMETER_USAGE_SOURCE,
        attrs.TOLLMETER_RESERVATION_ID,
        attrs.TOLLMETER_OUTCOME_NAME,
        attrs.TOLLMETER_OUTCOME_VALUE,
        attrs.TOLLMETER_OUTCOME_ID,
        attrs.TOLLMETER_AVOIDED_MODEL,
        attrs.TOLLMETER_AVOIDED_PROVIDER,
        attrs.TOLLMETER_AVOIDED_INPUT_TOKENS,
        attrs.TOLLMETER_AVOIDED_OUTPUT_TOKENS,
        attrs.TOLLMETER_AVOIDED_ID,
        _DEPLOYMENT_ENVIRONMENT,
        *_MEASURE_KEYS,
    }
)


def _text(value: object) -> str | None:
    """A label as stored: strings and ints only, cut to ``MAX_LABEL``."""
    if type(value) is str:
        if len(value) > MAX_LABEL:
            return value[:MAX_LABEL]
        return value or None
    if type(value) is int:
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class ExtractResult:
    """Usage events and outcomes found in one OTLP request, and the spans refused with
    their reasons."""

    events: list[UsageEvent] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    avoided: list[AvoidedCall] = field(default_factory=list)
    accepted_spans: int = 0
    rejected_spans: int = 0
    errors: list[str] = field(default_factory=list)


class _Rejected(TollmeterError):
    """A span is refused; the message says why."""


class CallPricer(Protocol):
    def quote_call(
        self,
        *,
        provider: str,
        model: str,
        tenant: str,
        time_ns: int,
        buckets: tuple[int, int, int, int, int],
    ) -> Quote: ...


class Extractor:
    """Builds usage events from OTLP trace requests.

    ``tenant_attributes`` are the fallbacks read (on the span, then on its resource)
    when neither carries ``tollmeter.tenant.id``; ``default_tenant`` is the last resort.
    ``pricer`` sets each event's cost, currency and price source as it is built;
    ``organisations`` gives each event its tenant's organisation.

    A call is internal usage (the operator's own) when it is sent with an ingest key the
    configuration marks ``internal``, or when its span or resource says
    ``tollmeter.internal=true`` or its environment is one of ``internal_environments``;
    the last two only on spans sent without a tenant-bound ingest key: a tenant's key
    could otherwise turn its own usage internal and out of its limits and its bill.
    """

    def __init__(
        self,
        *,
        tenant_attributes: Sequence[str] = (),
        default_tenant: str = "unknown",
        collector_id: str | None = None,
        pricer: CallPricer | None = None,
        organisations: OrganisationsConfig | None = None,
        internal_environments: Sequence[str] = (),
    ) -> None:
        if not default_tenant:
            raise ValueError("default_tenant must not be empty")
        self._fallbacks = tuple(tenant_attributes)
        self._wanted = _semconv_keys() | _OWN_KEYS | frozenset(self._fallbacks)
        self._operation_keys = _operation_keys()
        self._default_tenant = default_tenant
        self._collector_id = collector_id
        self._pricer = pricer
        self._organisations = organisations or OrganisationsConfig()
        self._internal_environments = frozenset(internal_environments)

    def extract(
        self,
        request: ExportTraceServiceRequest,
        *,
        bound_tenant: str | None = None,
        internal: bool = False,
    ) -> ExtractResult:
        """Usage events of ``request``; ``bound_tenant`` pins every span to one tenant,
        ``internal`` (an internal ingest key's request) marks every event internal."""
        events: list[UsageEvent] = []
        outcomes: list[Outcome] = []
        avoided: list[AvoidedCall] = []
        errors: list[str] = []
        # Pricing failures of this request, logged once at the end.
        unpriced: list[Exception] = []
        total = 0
        now_ns = time.time_ns()
        for resource_spans in request.resource_spans:
            resource: _Attributes | None = None
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    total += 1
                    if resource is None:
                        resource = self._resource(resource_spans.resource.attributes)
                    try:
                        event = self._event(
                            span, resource, bound_tenant, internal, now_ns, unpriced
                        )
                    except (_Rejected, InvalidUsage) as exc:
                        errors.append(f"span {span.span_id.hex() or '?'} ({_name(span)}): {exc}")
                        continue
                    if isinstance(event, Outcome):
                        outcomes.append(event)
                    elif isinstance(event, AvoidedCall):
                        avoided.append(event)
                    elif event is not None:
                        events.append(event)
        if unpriced:
            logger.error(
                "pricing %d usage events failed (%r); storing them unpriced",
                len(unpriced),
                unpriced[0],
            )
        return ExtractResult(
            events=events,
            outcomes=outcomes,
            avoided=avoided,
            accepted_spans=total - len(errors),
            rejected_spans=len(errors),
            errors=errors,
        )

    def _resource(self, pairs: Sequence[KeyValue]) -> _Attributes:
        if len(pairs) > MAX_ATTRIBUTES:
            # Too many to be genuine; keep the spans, ignore the resource.
            return {}
        return _attributes(pairs, self._wanted)

    def _event(
        self,
        span: Span,
        resource: Mapping[str, object],
        bound: str | None,
        internal_key: bool,
        now_ns: int,
        unpriced: list[Exception],
    ) -> UsageEvent | Outcome | AvoidedCall | None:
        pairs = span.attributes
        if len(pairs) > MAX_ATTRIBUTES:
            raise _Rejected(f"{len(pairs)} attributes, more than {MAX_ATTRIBUTES}")
        span_attrs = _attributes(pairs, self._wanted)
        if attrs.TOLLMETER_OUTCOME_NAME in span_attrs:
            return self._outcome(span, span_attrs, resource, bound, now_ns)
        if attrs.TOLLMETER_AVOIDED_MODEL in span_attrs:
            return self._avoided(span, span_attrs, resource, bound, now_ns)
        if self._operation_keys.isdisjoint(span_attrs):
            return None
        operation = operation_of(span_attrs)
        if not is_metered_operation(operation):
            return None
        usage = usage_from_attributes(span_attrs)
        if usage is None:
            return None
        measures = call_measures(span_attrs)
        tenant = self._tenant(span_attrs, resource, bound)
        trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
        provider = provider_of(span_attrs) or provider_of(resource) or "unknown"
        raw_response_id = span_attrs.get(attrs.GEN_AI_RESPONSE_ID)
        response_id = (
            raw_response_id if isinstance(raw_response_id, str) and raw_response_id else None
        )
        if response_id is None and (len(span.trace_id) != 16 or len(span.span_id) != 8):
            raise _Rejected("no gen_ai.response.id and no valid trace and span ids to dedupe by")
        start, end = _start_ns(span, now_ns), span.end_time_unix_nano
        request_model, response_model = model_of(span_attrs)
        failed = span.status.code == Status.STATUS_CODE_ERROR
        # Span attributes win over the resource's; converted values are never None.
        labels = {**resource, **span_attrs} if resource else span_attrs
        environment = _text(labels.get(attrs.TOLLMETER_ENVIRONMENT)) or _text(
            resource.get(_DEPLOYMENT_ENVIRONMENT)
        )
        attempt = span_attrs.get(attrs.TOLLMETER_ATTEMPT)
        source = span_attrs.get(attrs.TOLLMETER_USAGE_SOURCE)
        stored_provider = _text(provider) or "unknown"
        stored_request_model = _text(request_model)
        stored_response_model = _text(response_model)
        quote: Quote | None = None
        if self._pricer is not None:
            cached, written = usage.cache_read_input_tokens, usage.cache_write_input_tokens
            try:
                quote = self._pricer.quote_call(
                    provider=stored_provider,
                    model=stored_response_model or stored_request_model or "",
                    tenant=tenant,
                    time_ns=start,
                    buckets=(
                        usage.input_tokens - cached - written,
                        cached,
                        written,
                        usage.output_tokens - usage.reasoning_output_tokens,
                        usage.reasoning_output_tokens,
                    ),
                )
            except Exception as exc:
                unpriced.append(exc)
        return UsageEvent(
            event_id=event_id(tenant, provider, response_id, trace_id, span_id),
            event_time_ns=start,
            provider=stored_provider,
            operation=_text(operation) or "",
            tenant_id=tenant,
            input_tokens=usage.input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cache_write_input_tokens=usage.cache_write_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_output_tokens=usage.reasoning_output_tokens,
            total_tokens=usage.total_tokens,
            usage_source="estimate" if source == "estimate" else "provider",
            project_id=_text(labels.get(attrs.TOLLMETER_PROJECT_ID)),
            user_id=_text(labels.get(attrs.USER_ID)),
            api_key_id=_text(labels.get(attrs.TOLLMETER_API_KEY_ID)),
            feature=_text(labels.get(attrs.TOLLMETER_FEATURE)),
            environment=environment,
            service_name=_text(resource.get(attrs.SERVICE_NAME)),
            request_id=_text(labels.get(attrs.TOLLMETER_REQUEST_ID)),
            workflow_id=_text(labels.get(attrs.TOLLMETER_WORKFLOW_ID)),
            trace_id=trace_id or None,
            span_id=span_id or None,
            request_model=stored_request_model,
            response_model=stored_response_model,
            response_id=_text(response_id),
            cost=None if quote is None else quote.cost,
            currency=None if quote is None else quote.currency,
            price_source=None if quote is None else quote.price_source,
            duration_s=(end - start) / 1e9 if end >= start else None,
            status="error" if failed else "ok",
            error_type=(_text(span_attrs.get(attrs.ERROR_TYPE)) or "_OTHER") if failed else None,
            attempt=attempt if type(attempt) is int and 0 <= attempt < 2**31 else None,
            reservation_id=_text(labels.get(attrs.TOLLMETER_RESERVATION_ID)),
            collector_id=self._collector_id,
            hidden_input_tokens=measures.hidden_input_tokens,
            time_to_first_token_s=measures.time_to_first_token_s,
            decode_s_per_output_token=measures.decode_s_per_output_token,
            org_id=self._organisations.org_of(
                tenant, _text(labels.get(attrs.TOLLMETER_ORG_ID)), trusted=bound is None
            ),
            internal=internal_key
            or (
                bound is None
                and (
                    _is_true(labels.get(attrs.TOLLMETER_INTERNAL))
                    or (environment is not None and environment in self._internal_environments)
                )
            ),
        )

    def _outcome(
        self,
        span: Span,
        span_attrs: Mapping[str, object],
        resource: Mapping[str, object],
        bound: str | None,
        now_ns: int,
    ) -> Outcome:
        """An outcome report (``tollmeter.outcome`` span): no model call, so no usage."""
        tenant = self._tenant(span_attrs, resource, bound)
        start = _start_ns(span, now_ns)
        workflow = span_attrs.get(attrs.TOLLMETER_WORKFLOW_ID)
        if workflow is None:
            workflow = resource.get(attrs.TOLLMETER_WORKFLOW_ID)
        try:
            name = outcome_name(
                span_attrs[attrs.TOLLMETER_OUTCOME_NAME], attrs.TOLLMETER_OUTCOME_NAME
            )
            if workflow is None:
                raise BadRequest(f"{attrs.TOLLMETER_WORKFLOW_ID}: required on an outcome")
            workflow_id = outcome_text(workflow, attrs.TOLLMETER_WORKFLOW_ID)
            value = outcome_value(
                span_attrs.get(attrs.TOLLMETER_OUTCOME_VALUE), attrs.TOLLMETER_OUTCOME_VALUE
            )
            given_id = span_attrs.get(attrs.TOLLMETER_OUTCOME_ID)
            key = (
                outcome_id(workflow_id, name)
                if given_id is None
                else outcome_text(given_id, attrs.TOLLMETER_OUTCOME_ID)
            )
        except BadRequest as exc:
            raise _Rejected(str(exc)) from None
        return Outcome(
            outcome_id=key,
            tenant_id=tenant,
            workflow_id=workflow_id,
            name=name,
            value=value,
            time_ns=start,
        )

    def _avoided(
        self,
        span: Span,
        span_attrs: Mapping[str, object],
        resource: Mapping[str, object],
        bound: str | None,
        now_ns: int,
    ) -> AvoidedCall:
        """A cache hit (``tollmeter.cache_hit`` span): avoided usage, never billed usage."""
        tenant = self._tenant(span_attrs, resource, bound)
        start = _start_ns(span, now_ns)
        feature = span_attrs.get(attrs.TOLLMETER_FEATURE, resource.get(attrs.TOLLMETER_FEATURE))
        try:
            return avoided_call(
                span_attrs,
                tenant=tenant,
                feature=_text(feature),
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                time_ns=start,
                pricer=self._pricer,
            )
        except BadRequest as exc:
            raise _Rejected(str(exc)) from None

    def _tenant(
        self, span_attrs: Mapping[str, object], resource: Mapping[str, object], bound: str | None
    ) -> str:
        claimed = _claimed_tenant(span_attrs.get(attrs.TOLLMETER_TENANT_ID))
        if claimed is None:
            claimed = _claimed_tenant(resource.get(attrs.TOLLMETER_TENANT_ID))
        if bound is not None:
            if claimed is not None and claimed != bound:
                raise _Rejected(f"tenant {claimed!r} does not match the ingest key's tenant")
            return bound
        if claimed is not None:
            return claimed
        for name in self._fallbacks:
            for source in (span_attrs, resource):
                found = _tenant_value(source.get(name))
                if found is not None:
                    return found
        return self._default_tenant


def _claimed_tenant(value: object) -> str | None:
    if value is not None and type(value) not in (str, int):
        # Read as absent, it would bill the call to a fallback or the default tenant.
        raise _Rejected(f"{attrs.TOLLMETER_TENANT_ID} is {value!r:.40}, not a string")
    return _tenant_value(value)


def _tenant_value(value: object) -> str | None:
    if isinstance(value, str) and len(value) > MAX_LABEL:
        raise _Rejected(f"tenant id longer than {MAX_LABEL} characters")
    return _text(value)


def _name(span: Span) -> str:
    name = span.name
    return name if len(name) <= 64 else name[:64] + "..."


def _start_ns(span: Span, now_ns: int) -> int:
    """The span's start time, refused unless plausible (see ``_MIN_TIME_NS``)."""
    start = span.start_time_unix_nano
    if not _MIN_TIME_NS <= start <= now_ns + _MAX_AHEAD_NS:
        raise _Rejected(f"start time {start} ns is not a plausible time")
    return start
