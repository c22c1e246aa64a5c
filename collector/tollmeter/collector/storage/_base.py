"""The ledger contract every storage backend fulfils."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from tollmeter.collector._avoided import AvoidedCall
from tollmeter.collector._outcomes import Outcome
from tollmeter.collector._records import UsageEvent
from tollmeter.collector.errors import StorageError
from tollmeter.collector.grants._model import Grant, Movement
from tollmeter.collector.storage._chain import ChainLink, Checkpoint
from tollmeter.collector.storage._codec import EventRow, event_values
from tollmeter.collector.storage._grants import Ended
from tollmeter.collector.storage._outcomes import OutcomeRow, OutcomeSummary
from tollmeter.collector.storage._query import UsageQuery, UsageRow
from tollmeter.collector.storage._rollups import MinuteSums
from tollmeter.collector.storage._workflows import WorkflowRow

__all__ = ["AppendResult", "Lease", "Ledger", "StorageError"]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one ``append`` stored.

    ``committed`` holds the new events with their sequences, in sequence order;
    ``duplicates`` counts the events dropped because their ``event_id`` was already
    in the ledger or earlier in the same batch; ``minutes`` are the committed events'
    ``minute_sums``, which the rollups were folded from, for meters and metrics to
    take instead of summing the events again.
    """

    committed: list[UsageEvent] = field(default_factory=list)
    duplicates: int = 0
    minutes: MinuteSums = field(default_factory=dict)


class Lease(abc.ABC):
    """A role that one process at a time holds among those sharing a ledger (the exporter).

    The holder keeps it until ``release()`` or until it dies; then another process's
    ``acquire()`` takes it over.
    """

    @abc.abstractmethod
    def acquire(self) -> bool:
        """Take the lease if no other process holds it; whether this process holds it now.

        Never raises and never waits beyond the backend's timeout: a backend out of reach
        means the lease is not held (another process may be taking it over).
        """

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lease up. Idempotent."""


class _OwnLease(Lease):
    """The lease of a ledger that no other process shares: always held."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


class Ledger(abc.ABC):
    """Append-only, exactly-once store of usage events.

    Methods are thread-safe and blocking; those that can wait give up with a
    ``StorageError`` after the backend's timeout.
    """

    shared: bool = False
    """Other processes append to the same ledger (replicas): what this process saw commit
    is not all there is, so live figures must be read from the ledger."""

    @abc.abstractmethod
    def append(self, events: Sequence[UsageEvent]) -> AppendResult:
        """Store the events not seen within the dedupe window, in one durable transaction.

        Within a batch the first event with a given ``event_id`` wins.
        """

    @abc.abstractmethod
    def read_events(self, after_sequence: int, limit: int) -> list[UsageEvent]:
        """Up to ``limit`` events with a sequence above ``after_sequence``, ascending."""

    def read_event_rows(self, after_sequence: int, limit: int) -> list[EventRow]:
        """``read_events`` as plain tuples, for bulk readers such as the Parquet export.

        Backends override it to skip building one ``UsageEvent`` per row.
        """
        events = self.read_events(after_sequence, limit)
        return [(*event_values(event), event.sequence) for event in events]

    def read_chain(self, after_commit: int, limit: int) -> list[ChainLink]:
        """Up to ``limit`` links of the hash chain after commit ``after_commit``, ascending."""
        del after_commit, limit
        raise StorageError(f"{type(self).__name__} keeps no hash chain")

    def chain_checkpoint(self) -> Checkpoint | None:
        """Where retention last cut the chain, or ``None`` when nothing was pruned."""
        return None

    def cut(self, previous_commit: int, checkpoint: Checkpoint) -> int:
        """Delete the events after the checkpoint in force (at ``previous_commit``, 0 for
        none) up to ``checkpoint`` and record it, in one transaction; the events deleted.
        ``StorageError`` when another process cut meanwhile."""
        del previous_commit, checkpoint
        raise StorageError(f"{type(self).__name__} prunes no events")

    @abc.abstractmethod
    def last_sequence(self) -> int:
        """The highest committed sequence, 0 for an empty ledger."""

    @abc.abstractmethod
    def query_usage(self, query: UsageQuery) -> list[UsageRow]:
        """Usage totals matching ``query``, ordered by window then grouped dimensions."""

    def query_workflows(self, query: UsageQuery) -> list[WorkflowRow]:
        """Totals per workflow run of the events matching ``query`` (see ``_workflows``)."""
        del query
        raise StorageError(f"{type(self).__name__} answers no workflow queries")

    @abc.abstractmethod
    def get_state(self, key: str) -> str | None:
        """A value stored with ``set_state``, or ``None``."""

    @abc.abstractmethod
    def set_state(self, key: str, value: str) -> None:
        """Durably store a small value (an export cursor, hook state...)."""

    def claim_state(self, key: str, value: str) -> bool:
        """Store ``value`` under ``key`` unless the key is taken; whether this call took it.
        Among processes sharing the ledger, one claim of a key succeeds."""
        del key, value
        raise StorageError(f"{type(self).__name__} takes no claims")

    def append_outcomes(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Store the outcomes whose (tenant, outcome id) is new, in one durable transaction;
        the stored ones with their sequences (a repeat, even within the batch, stores nothing).
        """
        del outcomes
        raise StorageError(f"{type(self).__name__} stores no outcomes")

    def read_outcome_rows(self, after_sequence: int, limit: int) -> list[OutcomeRow]:
        """Up to ``limit`` outcome rows with a sequence above ``after_sequence``, ascending."""
        del after_sequence, limit
        raise StorageError(f"{type(self).__name__} stores no outcomes")

    def summarize_outcomes(
        self, *, tenant: str | None, start_ns: int, end_ns: int, name: str | None
    ) -> OutcomeSummary:
        """Cost and tokens per outcome name, and of the workflows without an outcome."""
        del tenant, start_ns, end_ns, name
        raise StorageError(f"{type(self).__name__} stores no outcomes")

    def append_avoided(self, calls: Sequence[AvoidedCall]) -> list[AvoidedCall]:
        """Store the avoided calls whose (tenant, avoided id) is new, in one durable
        transaction; the stored ones with their sequences."""
        del calls
        raise StorageError(f"{type(self).__name__} stores no avoided usage")

    def summarize_avoided(
        self, *, start_ns: int, end_ns: int, tenant: str | None, group_by: Sequence[str]
    ) -> list[dict[str, object]]:
        """Avoided calls, tokens and saved cost per group, in ``[start_ns, end_ns)``."""
        del start_ns, end_ns, tenant, group_by
        raise StorageError(f"{type(self).__name__} stores no avoided usage")

    def create_grant(self, grant: Grant) -> bool:
        """Store a new grant with its ``granted`` movement; ``False`` when its id is taken."""
        del grant
        raise StorageError(f"{type(self).__name__} keeps no grants")

    def void_grant(self, grant_id: str, now_ns: int) -> Grant | None:
        """Void a grant, taking off what is left of it; ``None`` when there is no such grant."""
        del grant_id, now_ns
        raise StorageError(f"{type(self).__name__} keeps no grants")

    def end_grants(self, now_ns: int) -> list[Ended]:
        """End the grants whose expiry has come (rolled over or expired), each once."""
        del now_ns
        raise StorageError(f"{type(self).__name__} keeps no grants")

    def list_grants(
        self, tenant: str | None = None, *, org: str | None = None
    ) -> list[tuple[Grant, Decimal]]:
        """The grants of ``tenant`` or of ``org`` (all for neither), oldest first, each with
        its balance."""
        del tenant, org
        raise StorageError(f"{type(self).__name__} keeps no grants")

    def grant_balances(
        self, tenant: str | None = None, *, org: str | None = None
    ) -> dict[str, dict[str, Decimal]]:
        """Per unit, the ``balance`` of the grants of ``tenant`` or ``org``, and a tenant's
        ``overage``."""
        del tenant, org
        raise StorageError(f"{type(self).__name__} keeps no grants")

    def grant_movements(
        self, tenant: str | None, after_sequence: int, limit: int, *, org: str | None = None
    ) -> list[tuple[int, Movement]]:
        """Up to ``limit`` grant movements of ``tenant`` or ``org`` (all for neither) after
        a sequence."""
        del tenant, after_sequence, limit, org
        raise StorageError(f"{type(self).__name__} keeps no grants")

    def set_tenant_plan(self, tenant: str, plan: str, now_ns: int) -> None:
        """Put ``tenant`` on ``plan`` for every process sharing this ledger."""
        del tenant, plan, now_ns
        raise StorageError(f"{type(self).__name__} keeps no plans")

    def clear_tenant_plan(self, tenant: str) -> bool:
        """Remove ``tenant``'s assignment, for every process sharing this ledger; whether
        there was one."""
        del tenant
        raise StorageError(f"{type(self).__name__} keeps no plans")

    def tenant_plans(self) -> dict[str, str]:
        """Tenant -> plan, as ``set_tenant_plan`` last left them."""
        return {}

    def lease(self, name: str) -> Lease:
        """The lease ``name`` among the processes sharing this ledger (not yet acquired)."""
        del name
        return _OwnLease()

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection. Idempotent; other calls fail afterwards."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
