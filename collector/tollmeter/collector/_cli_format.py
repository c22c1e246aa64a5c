"""How the CLI writes numbers, money, durations and tables for people.

Money: at least one cent, two decimals with thousands separators (``$12.35``,
``$1,204.50``); below one cent, three significant digits (``$0.0000218``), so a
small cost never reads as zero; exactly zero is ``$0.00``. USD, EUR and GBP take
their symbol, other currencies follow the amount (``1,200.00 JPY``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["MONEY_RULE", "Column", "duration", "money", "table", "tokens"]

MONEY_RULE = (
    "Costs: two decimals from one cent up, three significant digits below one cent "
    "(e.g. $12.35, $0.0000218)."
)

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
_CENT = Decimal("0.01")
_ELLIPSIS = "…"
_NARROWEST = 5


def money(amount: object, currency: object) -> str:
    """``amount`` (a decimal string or number) in ``currency``; empty when unknown."""
    if amount is None:
        return ""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return str(amount)
    if not value.is_finite():
        return str(amount)
    if value == 0 or abs(value) >= _CENT:
        text = f"{value.quantize(_CENT, rounding=ROUND_HALF_UP):,}"
    else:
        text = _significant(value)
    code = str(currency or "USD")
    symbol = _SYMBOLS.get(code)
    if symbol is None:
        return f"{text} {code}"
    return f"-{symbol}{text[1:]}" if text.startswith("-") else f"{symbol}{text}"


def _significant(value: Decimal) -> str:
    """Three significant digits in plain notation (no exponent) for tiny amounts."""
    rounded = Decimal(f"{value:.2e}")
    return f"{rounded:f}"


def tokens(count: object) -> str:
    """A count with thousands separators; empty when unknown."""
    if count is None:
        return ""
    if isinstance(count, float) and count.is_integer():
        count = int(count)
    return f"{count:,}" if isinstance(count, (int, float)) else str(count)


def duration(seconds: float) -> str:
    """``18h 41m``, ``3d 4h``, ``12m 5s`` or ``40s``: the two largest units."""
    whole = max(0, round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount or (parts and len(parts) < 2):
            parts.append(f"{amount}{unit}")
        if len(parts) == 2:
            break
    return " ".join(parts) or "0s"


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its header, and whether its cells align right (numbers)."""

    header: str
    numeric: bool = False


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int | None) -> str:
    """Aligned columns two spaces apart; with ``width``, text columns (headers included)
    are shortened, widest first and ending in ``…``, until the table fits or each is five
    characters wide. Numbers are never shortened."""
    widths = [
        max(len(column.header), *(len(row[i]) for row in rows)) if rows else len(column.header)
        for i, column in enumerate(columns)
    ]
    if width is not None:
        _shrink(columns, widths, width)

    def render(cells: Sequence[str]) -> str:
        parts = []
        for cell, size, column in zip(cells, widths, columns, strict=True):
            if len(cell) > size:
                cell = cell[: size - 1] + _ELLIPSIS
            parts.append(cell.rjust(size) if column.numeric else cell.ljust(size))
        return "  ".join(parts).rstrip()

    lines = [render([column.header for column in columns]), render(["-" * w for w in widths])]
    lines.extend(render(row) for row in rows)
    return "\n".join(lines)


def _shrink(columns: Sequence[Column], widths: list[int], width: int) -> None:
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    while excess > 0:
        text = [
            i for i, column in enumerate(columns) if not column.numeric and widths[i] > _NARROWEST
        ]
        if not text:
            return
        widest = max(text, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
