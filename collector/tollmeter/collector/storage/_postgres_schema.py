"""PostgreSQL schema of the ledger: the versions and migrations of ``_schema.py``, in its DDL.

Version ``i`` here is version ``i`` of the SQLite ledger: the same tables, columns and keys,
with PostgreSQL's types (``BIGINT`` counters, exact ``NUMERIC`` costs, so no decimal helper
functions are needed). Migrations run at start in one transaction under an advisory lock, so
replicas started together migrate once: the others wait, then find the schema current.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from tollmeter.collector._event_ids import event_id, legacy_event_id
from tollmeter.collector.storage._chain import genesis_link
from tollmeter.collector.storage._schema import SCHEMA_VERSION
from tollmeter.semconv.version import __version__

__all__ = ["MIGRATE_LOCK", "MIGRATIONS", "migrate"]

MIGRATE_LOCK = 0x746F6C6C6D657401
"""Advisory lock key held while migrating ("tollmet" and 1)."""

Step = str | Callable[[psycopg.Connection], None]

# Written out as they ran, like the SQLite versions: never derived from today's code.
_V1: tuple[Step, ...] = (
    "CREATE TABLE usage_events (sequence BIGINT PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, "
    "event_time_ns BIGINT NOT NULL, provider TEXT NOT NULL, operation TEXT NOT NULL, "
    "tenant_id TEXT NOT NULL, input_tokens BIGINT NOT NULL, "
    "cache_read_input_tokens BIGINT NOT NULL, cache_write_input_tokens BIGINT NOT NULL, "
    "output_tokens BIGINT NOT NULL, reasoning_output_tokens BIGINT NOT NULL, "
    "total_tokens BIGINT NOT NULL, usage_source TEXT NOT NULL, project_id TEXT, "
    "user_id TEXT, api_key_id TEXT, feature TEXT, environment TEXT, service_name TEXT, "
    "request_id TEXT, workflow_id TEXT, trace_id TEXT, span_id TEXT, request_model TEXT, "
    "response_model TEXT, response_id TEXT, cost NUMERIC, currency TEXT, price_source TEXT, "
    "duration_s DOUBLE PRECISION, status TEXT NOT NULL, error_type TEXT, attempt BIGINT, "
    "reservation_id TEXT, collector_id TEXT)",
    "CREATE INDEX usage_events_time ON usage_events (event_time_ns)",
    "CREATE TABLE dedupe_keys (event_id TEXT PRIMARY KEY, seen_ns BIGINT NOT NULL)",
    "CREATE INDEX dedupe_keys_seen ON dedupe_keys (seen_ns)",
    "CREATE TABLE rollups (granularity TEXT NOT NULL, bucket BIGINT NOT NULL, "
    "tenant TEXT NOT NULL, project TEXT NOT NULL, model TEXT NOT NULL, feature TEXT NOT NULL, "
    "api_key TEXT NOT NULL, usage_source TEXT NOT NULL, input_tokens BIGINT NOT NULL, "
    "cache_read_input_tokens BIGINT NOT NULL, cache_write_input_tokens BIGINT NOT NULL, "
    "output_tokens BIGINT NOT NULL, reasoning_output_tokens BIGINT NOT NULL, "
    "total_tokens BIGINT NOT NULL, requests BIGINT NOT NULL, cost NUMERIC, currency TEXT, "
    "PRIMARY KEY (granularity, bucket, tenant, project, model, feature, api_key, usage_source))",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _tenant_scoped_dedupe_keys(conn: psycopg.Connection) -> None:
    """Version 2 (see ``_schema.py``): each dedupe key of a span-derived event gets its
    tenant-scoped twin, seen at the same time. The ids are hashed here, in Python, since
    PostgreSQL has no BLAKE2."""
    rows = conn.execute(
        "SELECT e.event_id, e.tenant_id, e.provider, e.response_id, e.trace_id, e.span_id, "
        "k.seen_ns FROM dedupe_keys AS k JOIN usage_events AS e ON e.event_id = k.event_id"
    ).fetchall()
    twins = [
        (event_id(tenant, provider, response, trace or "", span or ""), seen)
        for stored, tenant, provider, response, trace, span, seen in rows
        if stored == legacy_event_id(provider, response, trace or "", span or "")
    ]
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO dedupe_keys (event_id, seen_ns) VALUES (%s, %s) "
            "ON CONFLICT (event_id) DO NOTHING",
            twins,
        )


_V2: tuple[Step, ...] = (_tenant_scoped_dedupe_keys,)

_V3: tuple[Step, ...] = (
    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ns BIGINT NOT NULL, "
    "applied_by TEXT NOT NULL)",
)

_V4: tuple[Step, ...] = (
    "ALTER TABLE usage_events ADD COLUMN hidden_input_tokens BIGINT",
    "ALTER TABLE usage_events ADD COLUMN time_to_first_token_s DOUBLE PRECISION",
    "ALTER TABLE usage_events ADD COLUMN decode_s_per_output_token DOUBLE PRECISION",
)

# Version 5: outcomes (see ``_schema.py``); values are exact NUMERIC.
_V5: tuple[Step, ...] = (
    "CREATE TABLE outcomes (sequence BIGINT PRIMARY KEY, outcome_id TEXT NOT NULL, "
    "tenant_id TEXT NOT NULL, workflow_id TEXT NOT NULL, name TEXT NOT NULL, "
    "value NUMERIC NOT NULL, time_ns BIGINT NOT NULL, UNIQUE (tenant_id, outcome_id))",
    "CREATE INDEX outcomes_time ON outcomes (time_ns)",
    "CREATE INDEX outcomes_workflow ON outcomes (tenant_id, workflow_id)",
    "CREATE INDEX usage_events_workflow ON usage_events (tenant_id, workflow_id)",
)

# Version 6: the hash chain, as in ``_schema.py``.
_V6: tuple[Step, ...] = (
    "CREATE TABLE ledger_chain (commit_number BIGINT PRIMARY KEY, "
    "first_sequence BIGINT NOT NULL, last_sequence BIGINT NOT NULL, head TEXT NOT NULL, "
    "committed_ns BIGINT NOT NULL, columns TEXT NOT NULL, row_digests BYTEA NOT NULL)",
    lambda conn: genesis_link(conn, mark="%s"),
)

# Version 7: organisation and policy path, as in ``_schema.py``.
_V7: tuple[Step, ...] = (
    "ALTER TABLE usage_events ADD COLUMN org_id TEXT",
    "ALTER TABLE usage_events ADD COLUMN policy TEXT",
)

# Version 8: prepaid grants, as in ``_schema.py``; amounts are exact NUMERIC.
_V8: tuple[Step, ...] = (
    "CREATE TABLE grants (grant_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, "
    "amount NUMERIC NOT NULL, unit TEXT NOT NULL, effective_ns BIGINT NOT NULL, "
    "expires_ns BIGINT, time_zone TEXT NOT NULL, priority BIGINT NOT NULL, "
    "rollover TEXT NOT NULL, created_ns BIGINT NOT NULL, voided_ns BIGINT, "
    "ended_ns BIGINT, org_id TEXT)",
    "CREATE INDEX grants_tenant ON grants (tenant_id)",
    "CREATE INDEX grants_org ON grants (org_id)",
    "CREATE INDEX grants_expiry ON grants (expires_ns) WHERE ended_ns IS NULL",
    "CREATE TABLE grant_movements (sequence BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, "
    "grant_id TEXT NOT NULL, kind TEXT NOT NULL, amount NUMERIC NOT NULL, unit TEXT NOT NULL, "
    "source_id TEXT NOT NULL, time_ns BIGINT NOT NULL, UNIQUE (source_id, grant_id, unit))",
    "CREATE INDEX grant_movements_grant ON grant_movements (grant_id)",
    "CREATE INDEX grant_movements_tenant ON grant_movements (tenant_id, sequence)",
)

# Version 9: internal usage, as in ``_schema.py`` (0 or 1, like SQLite, so that a row
# encodes the same for the hash chain on both backends).
_V9: tuple[Step, ...] = (
    "ALTER TABLE usage_events ADD COLUMN internal SMALLINT NOT NULL DEFAULT 0",
)

# Version 10: plans, as in ``_schema.py``.
_V10: tuple[Step, ...] = (
    "CREATE TABLE tenant_plans (tenant_id TEXT PRIMARY KEY, plan TEXT NOT NULL, "
    "changed_ns BIGINT NOT NULL)",
    "ALTER TABLE usage_events ADD COLUMN plan TEXT",
)

# Version 11: avoided usage, as in ``_schema.py``; costs are exact NUMERIC.
_V11: tuple[Step, ...] = (
    "CREATE TABLE avoided_usage (sequence BIGINT PRIMARY KEY, avoided_id TEXT NOT NULL, "
    "tenant_id TEXT NOT NULL, feature TEXT, provider TEXT NOT NULL, model TEXT NOT NULL, "
    "input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cost NUMERIC, currency TEXT, "
    "time_ns BIGINT NOT NULL, UNIQUE (tenant_id, avoided_id))",
    "CREATE INDEX avoided_usage_time ON avoided_usage (time_ns)",
)

# Version 12: the retention checkpoint, as in ``_schema.py``.
_V12: tuple[Step, ...] = (
    "CREATE TABLE ledger_chain_checkpoint (commit_number BIGINT PRIMARY KEY, "
    "last_sequence BIGINT NOT NULL, head TEXT NOT NULL, first_pruned_ns BIGINT, "
    "last_pruned_ns BIGINT, pruned_events BIGINT NOT NULL, cut_ns BIGINT NOT NULL)",
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

if len(MIGRATIONS) != SCHEMA_VERSION:  # pragma: no cover - caught by every test run
    raise RuntimeError("the PostgreSQL and SQLite ledgers must have the same schema versions")


def migrate(conn: psycopg.Connection) -> int:
    """Apply pending migrations in one transaction; return the schema version.

    ``conn`` is in autocommit mode; the transaction and the advisory lock are taken here.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise psycopg.DatabaseError(
                f"ledger schema version {version} is newer than this tollmeter "
                f"{__version__} knows ({SCHEMA_VERSION}): upgrade tollmeter to open it"
            )
        if version == SCHEMA_VERSION:
            return version
        for steps in MIGRATIONS[version:]:
            for step in steps:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO schema_migrations (version, applied_ns, applied_by) "
                "VALUES (%s, %s, %s)",
                [
                    (applied, time.time_ns(), f"tollmeter {__version__}")
                    for applied in range(version + 1, SCHEMA_VERSION + 1)
                ],
            )
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
    return SCHEMA_VERSION
