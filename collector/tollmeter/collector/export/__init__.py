"""Billing export: every usage event written exactly once to date-partitioned Parquet.

See docs/parquet.md for the file layout and the columns.
"""

from __future__ import annotations

from tollmeter.collector.errors import ExportBusy, ExportStoreError
from tollmeter.collector.export._api import export_routes
from tollmeter.collector.export._config import ExportConfig, S3Location, S3Settings
from tollmeter.collector.export._cursor import CURSOR_KEY, ExportSource
from tollmeter.collector.export._exporter import Exporter, ExportResult, ExportStatus
from tollmeter.collector.export._schema import SCHEMA, SCHEMA_VERSION, events_to_table
from tollmeter.collector.export._service import ExportService, install_export
from tollmeter.collector.export._store import ExportStore, open_store
from tollmeter.collector.export._writer import FileFormat

__all__ = [
    "CURSOR_KEY",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ExportBusy",
    "ExportConfig",
    "ExportResult",
    "ExportService",
    "ExportSource",
    "ExportStatus",
    "ExportStore",
    "ExportStoreError",
    "Exporter",
    "FileFormat",
    "S3Location",
    "S3Settings",
    "events_to_table",
    "export_routes",
    "install_export",
    "open_store",
]
