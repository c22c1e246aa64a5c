"""Read a provider report from a CSV download instead of the API.

The columns are the fields of the API's results, plus the bucket's start
(``start_time`` for OpenAI, in Unix seconds or ISO 8601; ``starting_at`` for Anthropic).
Nested fields are written with dots (``amount.value``, ``amount.currency``,
``cache_creation.ephemeral_5m_input_tokens``); an empty cell is a null. Extra columns are
ignored, so an export with more fields than tollmeter compares still reads. As with the
API, the whole file is checked before any row is kept.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tollmeter.collector.billing._providers import ReportKind, read_result
from tollmeter.collector.billing._report import Provider, ReportError, ReportRow, read_day

__all__ = ["MAX_CSV_BYTES", "read_csv_report"]

MAX_CSV_BYTES = 256 * 1024 * 1024
_START = {"openai": "start_time", "anthropic": "starting_at"}


def read_csv_report(provider: Provider, kind: ReportKind, path: Path) -> list[ReportRow]:
    """Every row of the CSV ``path``; raises :class:`ReportError` naming the bad line."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise ReportError(f"{path.name}: larger than {MAX_CSV_BYTES} bytes")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _rows(provider, kind, path.name, csv.DictReader(handle, strict=True))
    except OSError as exc:
        raise ReportError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ReportError(f"{path.name}: not a CSV file: {exc}") from None


def _rows(
    provider: Provider, kind: ReportKind, name: str, reader: csv.DictReader[str]
) -> list[ReportRow]:
    start = _START[provider]
    if reader.fieldnames is None or start not in reader.fieldnames:
        raise ReportError(f"{name}: the header must name a {start!r} column")
    rows = []
    for line in reader:
        where = f"{name} line {reader.line_num}"
        if None in line or any(value is None for value in line.values()):
            raise ReportError(f"{where}: the number of cells differs from the header")
        day = read_day(line[start], f"{where}.{start}")
        rows.append(read_result(provider, kind, day, _nested(line), where))
    return rows


def _nested(line: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for column, cell in line.items():
        value = cell if cell != "" else None
        parent, dot, child = column.partition(".")
        if dot:
            node = result.setdefault(parent, {})
            if isinstance(node, dict):
                node[child] = value
        else:
            result[column] = value
    return result
