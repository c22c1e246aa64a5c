"""Durable, exactly-once storage of usage events.

``open_ledger("sqlite:///data/ledger.db")`` returns a ``Ledger``; backends are chosen
by URI scheme (``sqlite://``, ``memory://``) and new ones plug in with
``register_ledger``.
"""

from __future__ import annotations

from tollmeter.collector.storage._base import AppendResult, Ledger, StorageError
from tollmeter.collector.storage._query import (
    DIMENSIONS,
    Dimension,
    InvalidQuery,
    UsageQuery,
    UsageRow,
)
from tollmeter.collector.storage._registry import open_ledger, register_ledger
from tollmeter.collector.storage._sqlite import SQLiteLedger
from tollmeter.collector.storage._windows import WINDOWS, Window, bucket_start

__all__ = [
    "DIMENSIONS",
    "WINDOWS",
    "AppendResult",
    "Dimension",
    "InvalidQuery",
    "Ledger",
    "SQLiteLedger",
    "StorageError",
    "UsageQuery",
    "UsageRow",
    "Window",
    "bucket_start",
    "open_ledger",
    "register_ledger",
]
