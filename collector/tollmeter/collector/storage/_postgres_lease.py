"""A lease among the collectors sharing a PostgreSQL ledger: a session advisory lock.

The holder keeps a connection of its own with ``pg_try_advisory_lock`` taken on it. When
the holder dies or loses the database, its session ends and PostgreSQL releases the lock,
so a standby's next ``acquire`` takes it. A holder checks its session on every
``acquire``: one whose connection broke no longer claims the lease, since another
replica may hold it by then.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable

import psycopg

from tollmeter.collector.storage._base import Lease

__all__ = ["AdvisoryLease", "lease_key"]

logger = logging.getLogger(__name__)


def lease_key(name: str) -> int:
    """The signed 64-bit advisory lock key of lease ``name``."""
    digest = hashlib.blake2b(f"tollmeter lease {name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLease(Lease):
    """Lease ``name`` held as an advisory lock on a session opened by ``connect``."""

    def __init__(self, name: str, connect: Callable[[], psycopg.Connection]) -> None:
        self._name = name
        self._key = lease_key(name)
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._held = False
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                    self._held = False
                if self._held:
                    # Still our session, so still our lock.
                    self._conn.execute("SELECT 1")
                else:
                    row = self._conn.execute(
                        "SELECT pg_try_advisory_lock(%s)", (self._key,)
                    ).fetchone()
                    self._held = bool(row and row[0])
                    if self._held:
                        logger.info("this collector holds the %s lease", self._name)
            except psycopg.Error as exc:
                if self._held:
                    logger.warning("lost the %s lease: %s", self._name, exc)
                self._drop()
            return self._held

    def release(self) -> None:
        with self._lock:
            if self._conn is not None and self._held:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            self._drop()

    def _drop(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
