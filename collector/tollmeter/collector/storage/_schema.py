"""SQLite schema of the ledger, applied as numbered migrations.

``usage_events`` is append-only: ``sequence`` (the rowid) only grows, so readers page
through it with ``sequence > cursor``. ``rollups`` holds per-bucket sums for every
window and dimension combination, updated in the same transaction as the events, so
that usage queries and meter rebuilds read thousands of rows instead of millions.
Costs are TEXT decimals summed exactly by the ``tm_decimal_add``/``tm_decimal_sum``
functions registered on every connection (SQLite's own arithmetic would go through
binary floating point). Dimensions absent from an event are stored as ``''`` in
``rollups`` so that the primary key treats them as one value.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tollmeter.collector._dimensions import DIMENSIONS
from tollmeter.collector._event_ids import event_id, legacy_event_id
from tollmeter.collector.storage._chain import genesis_link
from tollmeter.semconv.version import __version__

__all__ = [
    "MIGRATIONS",
    "ROLLUP_COUNTERS",
    "ROLLUP_DIMENSIONS",
    "SCHEMA_VERSION",
    "migrate",
    "register_functions",
]

ROLLUP_DIMENSIONS = DIMENSIONS
ROLLUP_COUNTERS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "total_tokens",
    "requests",
)

Step = str | Callable[[sqlite3.Connection], None]

# Each version's statements are written out as they ran: never derive them from the
# code of today, whose fields move on (a derived CREATE TABLE would give a fresh ledger
# columns that a migration adds again to an old one).
_V1 = (
    "CREATE TABLE usage_events (sequence INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, "
    "event_time_ns INTEGER NOT NULL, provider TEXT NOT NULL, operation TEXT NOT NULL, "
    "tenant_id TEXT NOT NULL, input_tokens INTEGER NOT NULL, "
    "cache_read_input_tokens INTEGER NOT NULL, cache_write_input_tokens INTEGER NOT NULL, "
    "output_tokens INTEGER NOT NULL, reasoning_output_tokens INTEGER NOT NULL, "
    "total_tokens INTEGER NOT NULL, usage_source TEXT NOT NULL, project_id TEXT, "
    "user_id TEXT, api_key_id TEXT, feature TEXT, environment TEXT, service_name TEXT, "
    "request_id TEXT, workflow_id TEXT, trace_id TEXT, span_id TEXT, request_model TEXT, "
    "response_model TEXT, response_id TEXT, cost TEXT, currency TEXT, price_source TEXT, "
    "duration_s REAL, status TEXT NOT NULL, error_type TEXT, attempt INTEGER, "
    "reservation_id TEXT, collector_id TEXT)",
    "CREATE INDEX usage_events_time ON usage_events (event_time_ns)",
    "CREATE TABLE dedupe_keys (event_id TEXT PRIMARY KEY, seen_ns INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX dedupe_keys_seen ON dedupe_keys (seen_ns)",
    "CREATE TABLE rollups (granularity TEXT NOT NULL, bucket INTEGER NOT NULL, "
    "tenant TEXT NOT NULL, project TEXT NOT NULL, model TEXT NOT NULL, feature TEXT NOT NULL, "
    "api_key TEXT NOT NULL, usage_source TEXT NOT NULL, input_tokens INTEGER NOT NULL, "
    "cache_read_input_tokens INTEGER NOT NULL, cache_write_input_tokens INTEGER NOT NULL, "
    "output_tokens INTEGER NOT NULL, reasoning_output_tokens INTEGER NOT NULL, "
    "total_tokens INTEGER NOT NULL, requests INTEGER NOT NULL, cost TEXT, currency TEXT, "
    "PRIMARY KEY (granularity, bucket, tenant, project, model, feature, api_key, usage_source)"
    ") WITHOUT ROWID",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)

# Version 2 scopes dedupe to the tenant (collector/_event_ids.py). The events and their ids
# stay as written; each dedupe key still inside the window gets its tenant-scoped twin, with
# the same time seen, so that a batch committed by the older release and retried against
# this one is still recognised as a repeat. Rows whose id is not a span-derived id (usage the
# limits service wrote itself) keep their own ids and get no twin.
_V2 = (
    "INSERT OR IGNORE INTO dedupe_keys (event_id, seen_ns) "
    "SELECT tm_event_id(e.tenant_id, e.provider, e.response_id, e.trace_id, e.span_id), "
    "k.seen_ns FROM dedupe_keys AS k JOIN usage_events AS e ON e.event_id = k.event_id "
    "WHERE e.event_id = tm_legacy_event_id(e.provider, e.response_id, e.trace_id, e.span_id)",
)

# Version 3 keeps a history: one row per migration applied from now on, with the time
# and the release that applied it (older ones happened before there was a history).
_V3 = (
    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ns INTEGER NOT NULL, "
    "applied_by TEXT NOT NULL) WITHOUT ROWID",
)

# Version 4 adds what a call's instrumentation counted and timed beyond its billed usage:
# the input tokens of system/developer messages and tool definitions, and a stream's time to
# first token and decode time per output token. Rows written before stay NULL (not reported).
_V4 = (
    "ALTER TABLE usage_events ADD COLUMN hidden_input_tokens INTEGER",
    "ALTER TABLE usage_events ADD COLUMN time_to_first_token_s REAL",
    "ALTER TABLE usage_events ADD COLUMN decode_s_per_output_token REAL",
)

# Version 5 records outcomes (collector/_outcomes.py): what a workflow achieved, one row per
# (tenant, outcome id), so that a repeated report is refused by the key like a repeated
# event. ``sequence`` pages the Parquet export as it does for events; the usage index finds
# a workflow's calls for the cost per outcome.
_V5 = (
    "CREATE TABLE outcomes (sequence INTEGER PRIMARY KEY, outcome_id TEXT NOT NULL, "
    "tenant_id TEXT NOT NULL, workflow_id TEXT NOT NULL, name TEXT NOT NULL, "
    "value TEXT NOT NULL, time_ns INTEGER NOT NULL, UNIQUE (tenant_id, outcome_id))",
    "CREATE INDEX outcomes_time ON outcomes (time_ns)",
    "CREATE INDEX outcomes_workflow ON outcomes (tenant_id, workflow_id)",
    "CREATE INDEX usage_events_workflow ON usage_events (tenant_id, workflow_id)",
)

# Version 6 starts the hash chain (``_chain.py``): one row per commit, written in the
# commit's transaction. Events already in the ledger get one genesis link over all of them,
# which proves only that they are unchanged since this upgrade.
_V6: tuple[Step, ...] = (
    "CREATE TABLE ledger_chain (commit_number INTEGER PRIMARY KEY, "
    "first_sequence INTEGER NOT NULL, last_sequence INTEGER NOT NULL, head TEXT NOT NULL, "
    "committed_ns INTEGER NOT NULL, columns TEXT NOT NULL, row_digests BLOB NOT NULL)",
    lambda conn: genesis_link(conn, mark="?"),
)

# Version 7 adds the organisation of the call's tenant and the policy path: the limits'
# decision on the call (limits checked, decision, reservation) as compact JSON. Rows written
# before stay NULL: no organisation known, never checked.
_V7 = (
    "ALTER TABLE usage_events ADD COLUMN org_id TEXT",
    "ALTER TABLE usage_events ADD COLUMN policy TEXT",
)

# Version 8 keeps prepaid grants (``_grants.py``): the grants as made (to a tenant, or to an
# organisation with ``tenant_id`` empty), and their movements, whose sum is every balance.
# Each cause moves a grant once: ``source_id`` is the usage event's id for what it
# consumed, or the kind and the grant for a grant's own changes.
_V8: tuple[Step, ...] = (
    "CREATE TABLE grants (grant_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, "
    "amount TEXT NOT NULL, unit TEXT NOT NULL, effective_ns INTEGER NOT NULL, "
    "expires_ns INTEGER, time_zone TEXT NOT NULL, priority INTEGER NOT NULL, "
    "rollover TEXT NOT NULL, created_ns INTEGER NOT NULL, voided_ns INTEGER, "
    "ended_ns INTEGER, org_id TEXT) WITHOUT ROWID",
    "CREATE INDEX grants_tenant ON grants (tenant_id)",
    "CREATE INDEX grants_org ON grants (org_id)",
    "CREATE INDEX grants_expiry ON grants (expires_ns) WHERE ended_ns IS NULL",
    "CREATE TABLE grant_movements (sequence INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, "
    "grant_id TEXT NOT NULL, kind TEXT NOT NULL, amount TEXT NOT NULL, unit TEXT NOT NULL, "
    "source_id TEXT NOT NULL, time_ns INTEGER NOT NULL, UNIQUE (source_id, grant_id, unit))",
    "CREATE INDEX grant_movements_grant ON grant_movements (grant_id)",
    "CREATE INDEX grant_movements_tenant ON grant_movements (tenant_id, sequence)",
)

# Version 9 marks internal usage (the operator's own calls: tests, evaluations, staff
# tools), metered like any other but told apart from customer usage. Rows written before
# are customer usage.
_V9: tuple[Step, ...] = ("ALTER TABLE usage_events ADD COLUMN internal INTEGER NOT NULL DEFAULT 0",)

# Version 10 keeps plans: the plan the management API put each tenant on (``_plans.py``),
# which every replica reads, and the plan in force for each usage event. Rows written
# before stay NULL: no plan known.
_V10: tuple[Step, ...] = (
    "CREATE TABLE tenant_plans (tenant_id TEXT PRIMARY KEY, plan TEXT NOT NULL, "
    "changed_ns INTEGER NOT NULL) WITHOUT ROWID",
    "ALTER TABLE usage_events ADD COLUMN plan TEXT",
)

# Version 11 keeps avoided usage (``_avoided.py``): calls an application answered from its
# own cache, with the tokens and the cost they would have had; apart from usage_events, so
# nothing that bills or limits usage reads them.
_V11: tuple[Step, ...] = (
    "CREATE TABLE avoided_usage (sequence INTEGER PRIMARY KEY, avoided_id TEXT NOT NULL, "
    "tenant_id TEXT NOT NULL, feature TEXT, provider TEXT NOT NULL, model TEXT NOT NULL, "
    "input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost TEXT, currency TEXT, "
    "time_ns INTEGER NOT NULL, UNIQUE (tenant_id, avoided_id))",
    "CREATE INDEX avoided_usage_time ON avoided_usage (time_ns)",
)

# Version 12 keeps the checkpoint where retention cut the chain (``_retention.py``): the
# link and head at the last pruned event, so ``verify`` resumes from there. One row per cut,
# the newest being the one in force.
_V12: tuple[Step, ...] = (
    "CREATE TABLE ledger_chain_checkpoint (commit_number INTEGER PRIMARY KEY, "
    "last_sequence INTEGER NOT NULL, head TEXT NOT NULL, first_pruned_ns INTEGER, "
    "last_pruned_ns INTEGER, pruned_events INTEGER NOT NULL, cut_ns INTEGER NOT NULL)",
)

MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    _V1,
    _V2,
    _V3,
    _V4,
    _V5,
    _V6,
    _V7,
    _V8,
    _V9,
    _V10,
    _V11,
    _V12,
)
"""Migration ``i`` brings the schema from version ``i`` to ``i + 1``. Append, never edit."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in one transaction; return the schema version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"ledger schema version {version} is newer than this tollmeter "
                f"{__version__} knows ({SCHEMA_VERSION}): upgrade tollmeter to open it"
            )
        for steps in MIGRATIONS[version:]:
            for step in steps:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        if version < SCHEMA_VERSION:
            conn.executemany(
                "INSERT INTO schema_migrations (version, applied_ns, applied_by) VALUES (?, ?, ?)",
                [
                    (applied, time.time_ns(), f"tollmeter {__version__}")
                    for applied in range(version + 1, SCHEMA_VERSION + 1)
                ],
            )
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def _decimal_add(left: str | None, right: str | None) -> str | None:
    if left is None:
        return right
    if right is None:
        return left
    return str(Decimal(left) + Decimal(right))


class _DecimalSum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = Decimal(value) if self.total is None else self.total + Decimal(value)

    def finalize(self) -> Any:  # a decimal string or None; typeshed says int
        return None if self.total is None else str(self.total)


def _event_id(
    tenant: str, provider: str, response_id: str | None, trace_id: str | None, span_id: str | None
) -> str:
    return event_id(tenant, provider, response_id, trace_id or "", span_id or "")


def _legacy_event_id(
    provider: str, response_id: str | None, trace_id: str | None, span_id: str | None
) -> str:
    return legacy_event_id(provider, response_id, trace_id or "", span_id or "")


def register_functions(conn: sqlite3.Connection) -> None:
    conn.create_function("tm_decimal_add", 2, _decimal_add, deterministic=True)
    conn.create_function("tm_event_id", 5, _event_id, deterministic=True)
    conn.create_function("tm_legacy_event_id", 4, _legacy_event_id, deterministic=True)
    conn.create_aggregate("tm_decimal_sum", 1, _DecimalSum)
