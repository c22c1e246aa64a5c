"""Prepaid grants in the ledger (schema version 8): the ``grants`` and ``grant_movements``
tables, and the statements both backends run on them.

Every change of a balance is a row of ``grant_movements``; balances are summed from them,
never stored. ``UNIQUE (source_id, grant_id, unit)`` makes each cause move each grant at
most once: usage is burnt in the transaction that inserts its events (``burn``), keyed by
the event id, so a replayed batch (refused as a duplicate) or a second replica burns
nothing again; a grant's creation, voiding and end are keyed by their kind.

The caller holds the transaction and whatever serialises the ledger's writers (SQLite's
write lock, PostgreSQL's append lock), so movement sequences grow in commit order.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from tollmeter.collector._records import UsageEvent
from tollmeter.collector.grants._model import (
    OVERAGE,
    Grant,
    Movement,
    MovementKind,
    allocate,
    rollover_split,
    successor,
    usage_amount,
)

__all__ = [
    "POSTGRES_GRANTS",
    "SQLITE_GRANTS",
    "Ended",
    "GrantSql",
    "burn",
    "create_grant",
    "end_due",
    "holder",
    "select_balances",
    "select_grants",
    "select_movements",
    "void_grant",
]

_GRANT_COLUMNS = (
    "grant_id",
    "tenant_id",
    "amount",
    "unit",
    "effective_ns",
    "expires_ns",
    "time_zone",
    "priority",
    "rollover",
    "created_ns",
    "voided_ns",
    "org_id",
)
_MOVEMENT_COLUMNS = ("tenant_id", "grant_id", "kind", "amount", "unit", "source_id", "time_ns")


@dataclass(frozen=True, slots=True)
class GrantSql:
    """What the statements spell differently per database."""

    param: str
    amount_sum: str
    """The exact sum of the decimal column ``amount``, as decimal text."""
    amount_text: str
    text: Callable[[str], str] = str
    """Text as the database can store it (PostgreSQL's cannot hold NUL)."""


SQLITE_GRANTS = GrantSql(param="?", amount_sum="tm_decimal_sum(amount)", amount_text="amount")
POSTGRES_GRANTS = GrantSql(
    param="%s", amount_sum="CAST(SUM(amount) AS TEXT)", amount_text="CAST(amount AS TEXT)"
)


class _Connection(Protocol):
    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Ended:
    """A grant that reached its expiry: what expired, and the grant it rolled into."""

    grant: Grant
    expired: Decimal
    carried: Decimal
    next_grant: Grant | None


def _grant_select(sql: GrantSql) -> str:
    columns = ", ".join(sql.amount_text if c == "amount" else c for c in _GRANT_COLUMNS)
    return f"SELECT {columns} FROM grants"


def _grant(row: Sequence[Any]) -> Grant:
    (
        gid,
        tenant,
        amount,
        unit,
        effective,
        expires,
        tz,
        priority,
        rollover,
        created,
        voided,
        org,
    ) = row
    return Grant(
        grant_id=str(gid),
        tenant_id=str(tenant),
        amount=Decimal(str(amount)),
        unit=str(unit),
        effective_ns=int(effective),
        expires_ns=None if expires is None else int(expires),
        time_zone=str(tz),
        priority=int(priority),
        rollover=str(rollover),
        created_ns=int(created),
        voided_ns=None if voided is None else int(voided),
        org_id=None if org is None else str(org),
    )


def _insert_movements(conn: _Connection, sql: GrantSql, movements: Sequence[Movement]) -> int:
    if not movements:
        return 0
    p = sql.param
    row = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM grant_movements").fetchone()
    sequence = int(row[0]) if row else 0
    insert = (
        f"INSERT INTO grant_movements (sequence, {', '.join(_MOVEMENT_COLUMNS)}) "
        f"VALUES ({', '.join([p] * (len(_MOVEMENT_COLUMNS) + 1))}) "
        "ON CONFLICT (source_id, grant_id, unit) DO NOTHING"
    )
    stored = 0
    for m in movements:
        values = (
            sql.text(m.tenant_id),
            m.grant_id,
            m.kind,
            str(m.amount),
            m.unit,
            sql.text(m.source_id),
            m.time_ns,
        )
        if conn.execute(insert, (sequence + 1, *values)).rowcount == 1:
            sequence += 1
            stored += 1
    return stored


def _balances(conn: _Connection, sql: GrantSql, grant_ids: Sequence[str]) -> dict[str, Decimal]:
    if not grant_ids:
        return {}
    marks = ", ".join([sql.param] * len(grant_ids))
    rows = conn.execute(
        f"SELECT grant_id, {sql.amount_sum} FROM grant_movements "
        f"WHERE grant_id IN ({marks}) GROUP BY grant_id",
        tuple(grant_ids),
    ).fetchall()
    found = {str(gid): Decimal(str(total)) for gid, total in rows}
    return {gid: found.get(gid, Decimal(0)) for gid in grant_ids}


def create_grant(conn: _Connection, sql: GrantSql, grant: Grant) -> bool:
    """Store a new grant and its ``granted`` movement; ``False`` when its id is taken."""
    p = sql.param
    inserted = conn.execute(
        f"INSERT INTO grants ({', '.join(_GRANT_COLUMNS)}) "
        f"VALUES ({', '.join([p] * len(_GRANT_COLUMNS))}) ON CONFLICT (grant_id) DO NOTHING",
        _grant_values(sql, grant),
    ).rowcount
    if inserted != 1:
        return False
    _insert_movements(
        conn,
        sql,
        [_movement(grant, "granted", grant.amount, f"granted:{grant.grant_id}", grant.created_ns)],
    )
    return True


def void_grant(conn: _Connection, sql: GrantSql, grant_id: str, now_ns: int) -> Grant | None:
    """Void a grant: what is left of it is taken off by a ``voided`` movement."""
    p = sql.param
    row = conn.execute(f"{_grant_select(sql)} WHERE grant_id = {p}", (grant_id,)).fetchone()
    if row is None:
        return None
    grant = _grant(row)
    if grant.voided_ns is not None:
        return grant
    conn.execute(f"UPDATE grants SET voided_ns = {p} WHERE grant_id = {p}", (now_ns, grant_id))
    balance = _balances(conn, sql, [grant_id])[grant_id]
    if balance > 0:
        _insert_movements(
            conn, sql, [_movement(grant, "voided", -balance, f"voided:{grant_id}", now_ns)]
        )
    return dataclasses.replace(grant, voided_ns=now_ns)


def burn(conn: _Connection, sql: GrantSql, events: Iterable[UsageEvent]) -> int:
    """Burn the grants of the tenants of ``events`` (just inserted, in sequence order) and of
    their organisations; usage beyond them becomes overage. Returns how many movements were
    stored.

    A tenant that ever had a grant in a unit, itself or through its organisation (even
    voided or ended), keeps having its usage in that unit accounted for: what no active
    grant covers is overage."""
    by_tenant: dict[str, list[UsageEvent]] = defaultdict(list)
    orgs: set[str] = set()
    for event in events:
        # Keyed as stored, since the grants read back carry the stored tenant.
        by_tenant[sql.text(event.tenant_id)].append(event)
        if event.org_id:
            orgs.add(sql.text(event.org_id))
    if not by_tenant:
        return 0
    holders = [*by_tenant, *orgs]
    tenant_marks = ", ".join([sql.param] * len(by_tenant))
    where = f"tenant_id IN ({tenant_marks})"
    if orgs:
        where += f" OR org_id IN ({', '.join([sql.param] * len(orgs))})"
    grants = [
        _grant(row)
        for row in conn.execute(f"{_grant_select(sql)} WHERE {where}", tuple(holders)).fetchall()
    ]
    if not grants:
        return 0
    balances = _balances(conn, sql, [g.grant_id for g in grants])
    held: dict[str, list[Grant]] = defaultdict(list)
    for grant in grants:
        held[grant.holder].append(grant)
    movements: list[Movement] = []
    for tenant, tenant_events in by_tenant.items():
        for event in tenant_events:
            org = sql.text(event.org_id) if event.org_id else None
            pool = held[f"tenant:{tenant}"] + (held[f"org:{org}"] if org else [])
            for unit in sorted({g.unit for g in pool}):
                amount = usage_amount(unit, event.total_tokens, event.cost, event.currency)
                if amount <= 0:
                    continue
                active = [
                    (g, balances[g.grant_id])
                    for g in pool
                    if g.unit == unit and g.covers(event.event_time_ns)
                ]
                taken, overage = allocate(active, amount)
                for grant, part in taken:
                    balances[grant.grant_id] -= part
                    movements.append(
                        Movement(
                            tenant,
                            grant.grant_id,
                            "consumed",
                            -part,
                            unit,
                            event.event_id,
                            event.event_time_ns,
                        )
                    )
                if overage > 0:
                    movements.append(
                        Movement(
                            tenant,
                            OVERAGE,
                            "overage",
                            -overage,
                            unit,
                            event.event_id,
                            event.event_time_ns,
                        )
                    )
    return _insert_movements(conn, sql, movements)


def end_due(conn: _Connection, sql: GrantSql, now_ns: int) -> list[Ended]:
    """End every grant whose expiry has come: its balance rolls into the next period as
    far as its rollover policy allows, the rest expires."""
    p = sql.param
    rows = conn.execute(
        f"{_grant_select(sql)} WHERE expires_ns <= {p} AND voided_ns IS NULL "
        "AND ended_ns IS NULL ORDER BY expires_ns, grant_id",
        (now_ns,),
    ).fetchall()
    ended: list[Ended] = []
    for grant in map(_grant, rows):
        expires = grant.expires_ns if grant.expires_ns is not None else now_ns
        balance = _balances(conn, sql, [grant.grant_id])[grant.grant_id]
        carried, expired = rollover_split(grant, max(balance, Decimal(0)))
        movements = []
        if expired > 0:
            movements.append(
                _movement(grant, "expired", -expired, f"expired:{grant.grant_id}", expires)
            )
        following = None
        if carried > 0:
            following = successor(grant, carried)
            movements.append(
                _movement(grant, "rolled_over", -carried, f"rolled_over:{grant.grant_id}", expires)
            )
            conn.execute(
                f"INSERT INTO grants ({', '.join(_GRANT_COLUMNS)}) "
                f"VALUES ({', '.join([p] * len(_GRANT_COLUMNS))}) "
                "ON CONFLICT (grant_id) DO NOTHING",
                _grant_values(sql, following),
            )
            movements.append(
                _movement(
                    following, "rolled_over", carried, f"rolled_over:{grant.grant_id}", expires
                )
            )
        _insert_movements(conn, sql, movements)
        conn.execute(
            f"UPDATE grants SET ended_ns = {p} WHERE grant_id = {p}", (now_ns, grant.grant_id)
        )
        ended.append(Ended(grant, expired, carried, following))
    return ended


def select_grants(
    conn: _Connection, sql: GrantSql, holder: str | None
) -> list[tuple[Grant, Decimal]]:
    """The grants of ``holder`` (``tenant:<id>`` or ``org:<id>``; all for ``None``), oldest
    first, each with its balance."""
    where, params = _holder_filter(sql, holder, "")
    grants = [
        _grant(row)
        for row in conn.execute(
            f"{_grant_select(sql)}{where} ORDER BY created_ns, grant_id", params
        ).fetchall()
    ]
    balances = _balances(conn, sql, [g.grant_id for g in grants])
    return [(g, balances[g.grant_id]) for g in grants]


def select_balances(conn: _Connection, sql: GrantSql, holder: str) -> dict[str, dict[str, Decimal]]:
    """Per unit: the ``balance`` of the holder's grants (each the sum of its movements) and,
    for a tenant, its ``overage`` (the sum of its overage movements)."""
    where, params = _holder_filter(sql, holder, "g.")
    units: dict[str, dict[str, Decimal]] = {}
    for unit, total in conn.execute(
        f"SELECT g.unit, {sql.amount_sum.replace('amount', 'm.amount')} FROM grant_movements AS m "
        f"JOIN grants AS g ON g.grant_id = m.grant_id{where} GROUP BY g.unit",
        params,
    ).fetchall():
        units[str(unit)] = {"balance": Decimal(str(total)), "overage": Decimal(0)}
    if holder.startswith("tenant:"):
        for unit, total in conn.execute(
            f"SELECT unit, {sql.amount_sum} FROM grant_movements "
            f"WHERE tenant_id = {sql.param} AND grant_id = '' GROUP BY unit",
            (sql.text(holder.removeprefix("tenant:")),),
        ).fetchall():
            entry = units.setdefault(str(unit), {"balance": Decimal(0), "overage": Decimal(0)})
            entry["overage"] = -Decimal(str(total))
    return units


def holder(tenant: str | None, org: str | None) -> str | None:
    """The key the selects take: ``org:<id>`` or ``tenant:<id>``, ``None`` for every grant."""
    if org is not None:
        return f"org:{org}"
    return None if tenant is None else f"tenant:{tenant}"


def _holder_filter(sql: GrantSql, holder: str | None, prefix: str) -> tuple[str, tuple[str, ...]]:
    if holder is None:
        return "", ()
    kind, _, name = holder.partition(":")
    column = "org_id" if kind == "org" else "tenant_id"
    return f" WHERE {prefix}{column} = {sql.param}", (sql.text(name),)


def select_movements(
    conn: _Connection, sql: GrantSql, holder: str | None, after_sequence: int, limit: int
) -> list[tuple[int, Movement]]:
    """Up to ``limit`` movements after ``after_sequence``, ascending: a tenant's (its own
    grants', what it burnt of its organisation's, its overage), an organisation's grants',
    or all for ``None``."""
    if limit < 1:
        raise ValueError("limit must be positive")
    p = sql.param
    columns = ", ".join(sql.amount_text if c == "amount" else c for c in _MOVEMENT_COLUMNS)
    where = f"sequence > {p}"
    params: tuple[object, ...] = (after_sequence,)
    if holder is not None:
        kind, _, name = holder.partition(":")
        if kind == "org":
            where += f" AND grant_id IN (SELECT grant_id FROM grants WHERE org_id = {p})"
        else:
            where += f" AND tenant_id = {p}"
        params = (after_sequence, sql.text(name))
    rows = conn.execute(
        f"SELECT sequence, {columns} FROM grant_movements WHERE {where} "
        f"ORDER BY sequence LIMIT {int(limit)}",
        params,
    ).fetchall()
    return [
        (
            int(seq),
            Movement(str(t), str(g), kind, Decimal(str(a)), str(u), str(s), int(ns)),
        )
        for seq, t, g, kind, a, u, s, ns in rows
    ]


def _movement(
    grant: Grant, kind: MovementKind, amount: Decimal, source_id: str, time_ns: int
) -> Movement:
    return Movement(grant.tenant_id, grant.grant_id, kind, amount, grant.unit, source_id, time_ns)


def _grant_values(sql: GrantSql, grant: Grant) -> tuple[Any, ...]:
    return tuple(
        str(value) if name == "amount" else sql.text(value) if isinstance(value, str) else value
        for name, value in _as_dict(grant).items()
    )


def _as_dict(grant: Grant) -> dict[str, Any]:
    return {name: getattr(grant, name) for name in _GRANT_COLUMNS}
