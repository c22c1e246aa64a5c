"""Write FOCUS rows as Parquet or CSV, to a temporary name then renamed into place."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from tollmeter.collector.billing._focus import FOCUS_COLUMNS

__all__ = ["FocusFormat", "focus_schema", "write_focus"]

FocusFormat = Literal["parquet", "csv"]

_DECIMAL = pa.decimal128(38, 12)
"""Every decimal column, money and quantities alike: 12 places, as the ledger's costs."""
_TIME = pa.timestamp("s", tz="UTC")
_PLACES = Decimal(1).scaleb(-12)
_TYPES: dict[str, pa.DataType] = {
    **dict.fromkeys(
        (
            "BilledCost",
            "EffectiveCost",
            "ListCost",
            "ContractedCost",
            "ListUnitPrice",
            "ContractedUnitPrice",
            "ConsumedQuantity",
            "PricingQuantity",
            "CommitmentDiscountQuantity",
        ),
        _DECIMAL,
    ),
    **dict.fromkeys(
        ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"), _TIME
    ),
    **{name: pa.int64() for name in FOCUS_COLUMNS if name.endswith(("Tokens", "Requests"))},
}


def focus_schema() -> pa.Schema:
    return pa.schema([pa.field(name, _TYPES.get(name, pa.string())) for name in FOCUS_COLUMNS])


def write_focus(rows: Sequence[dict[str, Any]], out: Path, file_format: FocusFormat) -> None:
    """Write ``rows`` to ``out``; a reader never sees a half-written file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(handle)
    try:
        if file_format == "parquet":
            _parquet(rows, Path(temporary))
        else:
            _csv(rows, Path(temporary))
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    schema = focus_schema()
    columns = {}
    for field in schema:
        values = [row[field.name] for row in rows]
        if field.type == _DECIMAL:
            values = [None if v is None else v.quantize(_PLACES) for v in values]
        columns[field.name] = pa.array(values, type=field.type)
    pq.write_table(pa.table(columns, schema=schema), path, compression="zstd")


def _csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FOCUS_COLUMNS)
        for row in rows:
            writer.writerow([_cell(row[name]) for name in FOCUS_COLUMNS])


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, Decimal):
        # The Parquet file's scale: readers that infer types see decimals, not integers.
        return format(value.quantize(_PLACES), "f")
    return str(value)
