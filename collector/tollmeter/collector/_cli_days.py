"""The ``--from``/``--to`` day range shared by the commands that read the ledger by day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TypeVar

import click

__all__ = ["day_range_options"]

_F = TypeVar("_F", bound=Callable[..., object])


def _day(ctx: click.Context, param: click.Parameter, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from None


def day_range_options(command: _F) -> _F:
    """Add ``--from`` (``start``) and ``--to`` (``end``, exclusive), both UTC days."""
    command = click.option(
        "--to",
        "end",
        required=True,
        callback=_day,
        help="Day after the last one, YYYY-MM-DD (UTC, exclusive).",
    )(command)
    return click.option(
        "--from", "start", required=True, callback=_day, help="First day, YYYY-MM-DD (UTC)."
    )(command)
