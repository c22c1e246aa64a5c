"""Durable, exactly-once storage of usage events.

``open_ledger("sqlite:///data/ledger.db")`` returns a ``Ledger``; backends are chosen
by URI scheme (``sqlite://``, ``memory://``) and new ones plug in with
``register_ledger``.

Guarantees of the SQLite ledger: an ``append`` is one transaction, fsync'd before it
returns (``synchronous="full"``, the default); events get strictly increasing
sequences; an ``event_id`` seen within the dedupe window (7 days by default, a
seen-key table pruned once a minute) is counted as a duplicate, and the unique
``event_id`` column refuses later duplicates of events still in the ledger. Rollups
per minute, hour, day and month are updated in the same transaction, so usage
queries and meter rebuilds never disagree with the events. Costs are exact decimals.
"""

from __future__ import annotations

from tollmeter.collector.errors import InvalidQuery
from tollmeter.collector.storage._base import AppendResult, Lease, Ledger, StorageError
from tollmeter.collector.storage._query import (
    DIMENSIONS,
    QUERY_DIMENSIONS,
    Dimension,
    UsageQuery,
    UsageRow,
)
from tollmeter.collector.storage._registry import open_ledger, register_ledger
from tollmeter.collector.storage._sqlite import SQLiteLedger
from tollmeter.collector.storage._windows import (
    QUERY_WINDOWS,
    WINDOWS,
    QueryWindow,
    Window,
    bucket_start,
)

__all__ = [
    "DIMENSIONS",
    "QUERY_DIMENSIONS",
    "QUERY_WINDOWS",
    "WINDOWS",
    "AppendResult",
    "Dimension",
    "InvalidQuery",
    "Lease",
    "Ledger",
    "QueryWindow",
    "SQLiteLedger",
    "StorageError",
    "UsageQuery",
    "UsageRow",
    "Window",
    "bucket_start",
    "open_ledger",
    "register_ledger",
]
