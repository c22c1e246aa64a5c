"""``tollmeter.budget``: cap the tokens and calls of one request or agent run, in process.

Before each instrumented model call the call's estimate (input tokens counted with
tiktoken plus the requested maximum output) is reserved on every budget in effect;
``BudgetExceeded`` is raised instead when a budget would be passed, before any request
reaches the provider. When the call's span ends, the actual usage on the span replaces
the reservation. Budgets nest: every enclosing budget applies.

The span of each call inside a budget carries ``tollmeter.budget.call``: the call's
1-based number within the innermost budget, so that the iterations of an agent loop
can be told apart (the SDK's retries of one call are not extra calls: its span's
``tollmeter.attempt`` says which retry answered).

A streamed call is also watched while it is read (``_stop``): when its output reaches
what the budget has left (``max_tokens``, ``max_output_tokens``), the stream is closed
and ``BudgetExceeded`` raised at the next chunk (``overrun="stop"``, the default), or a
warning is logged once and the stream read on (``overrun="warn"``).

The actual usage is read by a span processor that ``budget`` adds to the global SDK
tracer provider the first time one is entered; without an SDK tracer provider a budget
keeps counting the estimates, which never under-count a call's maximum.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from tollmeter.instrumentation.errors import BudgetExceeded
from tollmeter.semconv import attributes as attrs

__all__ = [
    "BudgetSpanProcessor",
    "Overrun",
    "budget",
    "budget_ticket",
    "budgets_active",
    "release_budget_ticket",
    "reserve_budgets",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

Overrun = Literal["stop", "warn"]
"""What a stream does when its output reaches a limit: closed and refused, or read on."""

_ACTIVE: ContextVar[tuple[budget, ...]] = ContextVar("tollmeter_budgets", default=())


@dataclass(frozen=True, slots=True)
class _Ticket:
    """What one call reserved, on which budgets; settled when its span ends."""

    budgets: tuple[budget, ...]
    reserved: int
    key: str
    number: int
    """The call's 1-based number within the innermost budget."""
    output: int = 0
    """The part of ``reserved`` held for the output (the requested maximum, 0 if none)."""


_PENDING: ContextVar[_Ticket | None] = ContextVar("tollmeter_budget_ticket", default=None)


class budget:
    """Cap the model calls made inside a block or function.

    ``max_tokens`` caps input + output tokens (a call whose input estimate plus requested
    maximum output would pass it is refused), ``max_output_tokens`` the output tokens
    alone (a call is refused only once none are left; a stream is cut where it reaches
    them), ``max_calls`` the number of calls (each tool-loop iteration counts; the SDK's
    retries within one call do not), ``max_consecutive_failures`` opens a circuit breaker
    after that many failures in a row of calls to the same model. ``overrun`` says what a
    stream whose output reaches ``max_tokens`` or ``max_output_tokens`` does: ``"stop"``
    (closed, ``BudgetExceeded`` at its next chunk) or ``"warn"`` (logged once, read on).
    As a decorator every invocation gets a budget of its own.
    """

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        max_calls: int | None = None,
        max_consecutive_failures: int | None = None,
        max_output_tokens: int | None = None,
        overrun: Overrun = "stop",
        name: str | None = None,
    ) -> None:
        if overrun not in ("stop", "warn"):
            raise ValueError(f"overrun must be 'stop' or 'warn', got {overrun!r}")
        for label, value in (
            ("max_tokens", max_tokens),
            ("max_output_tokens", max_output_tokens),
            ("max_calls", max_calls),
            ("max_consecutive_failures", max_consecutive_failures),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{label} must be an int, got {type(value).__name__}")
            if value is not None and value < 0:
                raise ValueError(f"{label} must not be negative, got {value}")
        self.max_tokens = max_tokens
        self.max_calls = max_calls
        self.max_consecutive_failures = max_consecutive_failures
        self.max_output_tokens = max_output_tokens
        self.overrun: Overrun = overrun
        self.name = name or "budget"
        self._lock = threading.Lock()
        self._tokens = 0
        self._reserved = 0
        self._calls = 0
        self._output = 0
        self._output_reserved = 0
        # Output read so far by streams in flight beyond what their call reserved, by call:
        # so that streams read at the same time see each other's progress (``_stop``).
        self._excess: dict[int, int] = {}
        self._excess_total = 0
        self._failures: dict[str, int] = {}
        self._tokens_stack: list[Token[tuple[budget, ...]]] = []

    @property
    def tokens_used(self) -> int:
        """Actual tokens of finished calls plus the reservations of calls in flight."""
        with self._lock:
            return self._tokens + self._reserved + self._excess_total

    @property
    def output_tokens_used(self) -> int:
        """Output tokens of finished calls plus the output reserved by calls in flight."""
        with self._lock:
            return self._output + self._output_reserved + self._excess_total

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def _fresh(self) -> budget:
        return budget(
            max_tokens=self.max_tokens,
            max_calls=self.max_calls,
            max_consecutive_failures=self.max_consecutive_failures,
            max_output_tokens=self.max_output_tokens,
            overrun=self.overrun,
            name=self.name,
        )

    def __enter__(self) -> budget:
        _install_processor()
        self._tokens_stack.append(_ACTIVE.set((*_ACTIVE.get(), self)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _ACTIVE.reset(self._tokens_stack.pop())

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                with self._fresh():
                    return await func(*args, **kwargs)

            return cast(Callable[_P, _R], run_async)

        @functools.wraps(func)
        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with self._fresh():
                return func(*args, **kwargs)

        return run

    def _reserve(self, amount: int, key: str, output: int = 0) -> int:
        """Take one call and ``amount`` tokens (``output`` of them for the output); returns
        the call's 1-based number."""
        with self._lock:
            failures = self._failures.get(key, 0)
            limit = self.max_consecutive_failures
            if limit is not None and failures >= limit:
                raise BudgetExceeded(
                    f"{self.name}: {failures} consecutive failed calls to {key}",
                    kind="failures",
                    used=failures,
                    limit=limit,
                )
            if self.max_calls is not None and self._calls + 1 > self.max_calls:
                raise BudgetExceeded(
                    f"{self.name}: call {self._calls + 1} would pass max_calls={self.max_calls}",
                    kind="calls",
                    used=self._calls,
                    limit=self.max_calls,
                )
            used = self._tokens + self._reserved
            if self.max_tokens is not None and used + amount > self.max_tokens:
                raise BudgetExceeded(
                    f"{self.name}: {used} tokens used, this call may use up to {amount} "
                    f"(max_tokens={self.max_tokens})",
                    kind="tokens",
                    used=used,
                    limit=self.max_tokens,
                )
            out_used = self._output + self._output_reserved
            # Output is admitted while any is left and cut when the stream reaches the rest
            # (``_stop``): refusing every call whose requested maximum passes it would refuse
            # most Anthropic calls, whose maximum is mandatory and set high.
            if self.max_output_tokens is not None and out_used >= self.max_output_tokens:
                raise BudgetExceeded(
                    f"{self.name}: {out_used} output tokens used or reserved "
                    f"(max_output_tokens={self.max_output_tokens})",
                    kind="output_tokens",
                    used=out_used,
                    limit=self.max_output_tokens,
                )
            self._calls += 1
            self._reserved += amount
            self._output_reserved += output
            return self._calls

    def _unreserve(self, amount: int, output: int = 0) -> None:
        with self._lock:
            self._calls -= 1
            self._reserved -= amount
            self._output_reserved -= output

    def _output_room(self, ticket: _Ticket, consumed: int = 0) -> tuple[int, str, int, int] | None:
        """The output tokens ``ticket``'s call may still produce here, with the limit that
        sets it: (room, kind, used by the others, limit); ``None`` without a token limit.

        ``consumed`` is the output the call's stream has read so far: what passes the
        call's reservation counts against the other calls' room from now on.
        """
        with self._lock:
            own = max(0, consumed - ticket.output)
            self._excess_total += own - self._excess.get(id(ticket), 0)
            self._excess[id(ticket)] = own
            # Everything but this call's own output is spoken for.
            spoken = self._excess_total - own - ticket.output
            rooms: list[tuple[int, str, int, int]] = []
            if self.max_tokens is not None:
                others = self._tokens + self._reserved + spoken
                rooms.append((self.max_tokens - others, "tokens", others, self.max_tokens))
            if self.max_output_tokens is not None:
                others = self._output + self._output_reserved + spoken
                rooms.append(
                    (
                        self.max_output_tokens - others,
                        "output_tokens",
                        others,
                        self.max_output_tokens,
                    )
                )
        return min(rooms) if rooms else None

    def _settle(
        self,
        reserved: int,
        actual: int | None,
        key: str,
        failed: bool,
        *,
        output: int = 0,
        actual_output: int | None = None,
        call: int | None = None,
    ) -> None:
        with self._lock:
            if call is not None:
                self._excess_total -= self._excess.pop(call, 0)
            self._reserved -= reserved
            self._tokens += reserved if actual is None else actual
            self._output_reserved -= output
            self._output += output if actual_output is None else actual_output
            self._failures[key] = self._failures.get(key, 0) + 1 if failed else 0

    def __repr__(self) -> str:
        return (
            f"budget(name={self.name!r}, max_tokens={self.max_tokens}, "
            f"max_calls={self.max_calls}, tokens_used={self.tokens_used}, calls={self.calls})"
        )


def reserve_budgets(estimate: int, key: str, *, output: int = 0) -> bool:
    """Reserve ``estimate`` tokens (``output`` of them for the output) and one call on every
    budget in effect, all or nothing.

    Raises ``BudgetExceeded``; returns whether any budget is in effect.
    """
    active = _ACTIVE.get()
    if not active:
        return False
    taken: list[budget] = []
    number = 0
    try:
        for b in active:
            number = b._reserve(estimate, key, output)
            taken.append(b)
    except BudgetExceeded:
        for b in taken:
            b._unreserve(estimate, output)
        raise
    _PENDING.set(_Ticket(active, estimate, key, number, output))
    return True


def budget_ticket() -> _Ticket | None:
    """What the call about to start reserved (``None`` when no budget is in effect)."""
    return _PENDING.get()


def budgets_active() -> bool:
    return bool(_ACTIVE.get())


def release_budget_ticket() -> None:
    """Undo ``reserve_budgets`` for a call that will not be made."""
    ticket = _PENDING.get()
    if ticket is None:
        return
    _PENDING.set(None)
    for b in ticket.budgets:
        b._unreserve(ticket.reserved, ticket.output)


class BudgetSpanProcessor(SpanProcessor):
    """Hands a model call's span its budget ticket and number; settles the ticket at its end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[int, _Ticket] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        ticket = _PENDING.get()
        if ticket is None:
            return
        _PENDING.set(None)
        span.set_attribute(attrs.TOLLMETER_BUDGET_CALL, ticket.number)
        with self._lock:
            self._inflight[span.context.span_id] = ticket

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        with self._lock:
            ticket = self._inflight.pop(span.context.span_id, None)
        if ticket is None:
            return
        values = span.attributes or {}
        inp = values.get(attrs.GEN_AI_USAGE_INPUT_TOKENS)
        out = values.get(attrs.GEN_AI_USAGE_OUTPUT_TOKENS)
        actual = None
        if isinstance(inp, int) or isinstance(out, int):
            actual = (inp if isinstance(inp, int) else 0) + (out if isinstance(out, int) else 0)
        failed = span.status.status_code is StatusCode.ERROR
        actual_output = out if isinstance(out, int) else None
        if actual is not None and actual_output is None:
            actual_output = 0
        for b in ticket.budgets:
            b._settle(
                ticket.reserved,
                actual,
                ticket.key,
                failed,
                output=ticket.output,
                actual_output=actual_output,
                call=id(ticket),
            )

    def shutdown(self) -> None:
        with self._lock:
            self._inflight.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_INSTALL_LOCK = threading.Lock()
_INSTALLED: list[TracerProvider] = []


def _install_processor() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return
    with _INSTALL_LOCK:
        if any(p is provider for p in _INSTALLED):
            return
        provider.add_span_processor(BudgetSpanProcessor())
        _INSTALLED.append(provider)
