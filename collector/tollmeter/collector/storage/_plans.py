"""Plan assignments in the ledger (schema version 10): the ``tenant_plans`` table.

The management API writes here so that every replica sharing the ledger reads the same
assignment; the configuration's assignments are not stored (each replica reads its own
file). One row per tenant: the assignment in force, and when it was made.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["delete_plan", "select_plans", "upsert_plan"]


class _Connection(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


def upsert_plan(conn: _Connection, param: str, tenant: str, plan: str, now_ns: int) -> None:
    conn.execute(
        f"INSERT INTO tenant_plans (tenant_id, plan, changed_ns) VALUES ({param}, {param}, "
        f"{param}) ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan, "
        "changed_ns = excluded.changed_ns",
        (tenant, plan, now_ns),
    )


def delete_plan(conn: _Connection, param: str, tenant: str) -> bool:
    """Remove ``tenant``'s assignment; whether it had one."""
    cursor = conn.execute(f"DELETE FROM tenant_plans WHERE tenant_id = {param}", (tenant,))
    return bool(cursor.rowcount)


def select_plans(conn: _Connection) -> dict[str, str]:
    rows = conn.execute("SELECT tenant_id, plan FROM tenant_plans").fetchall()
    return {str(tenant): str(plan) for tenant, plan in rows}
