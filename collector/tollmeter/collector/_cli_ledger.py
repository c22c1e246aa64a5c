"""What the commands that read the ledger share: the ``--config``, ``--data-dir`` and
``--storage-url`` options, and loading them into a ``Config`` with one way to say what
is wrong (invalid configuration: exit 2; no ledger where one is expected: exit 1)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import click

from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig

__all__ = ["EXIT_FAILURE", "EXIT_INVALID", "ledger_options", "load_ledger_config"]

EXIT_FAILURE = 1
EXIT_INVALID = 2

_F = TypeVar("_F", bound=Callable[..., object])


def ledger_options(*, data_dir_help: str) -> Callable[[_F], _F]:
    """Add ``--config`` (``config_file``), ``--data-dir`` and ``--storage-url``."""

    def decorate(command: _F) -> _F:
        command = click.option(
            "--storage-url",
            help="Ledger URL, e.g. postgresql://... (default: the data directory's ledger.db).",
        )(command)
        command = click.option("--data-dir", help=data_dir_help)(command)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="TOLLMETER_CONFIG",
            show_envvar=True,
            help="YAML configuration file to load.",
        )(command)

    return decorate


def load_ledger_config(
    command: str,
    config_file: Path | None,
    overrides: Mapping[str, object],
    *,
    need_ledger: bool = True,
) -> Config:
    """The configuration with ``overrides`` (configuration key -> value) applied.

    Exits with the problems listed when it is invalid, and, with ``need_ledger``, in one
    line when the data directory has no ledger (a SQLite ledger is not created by
    reading it).
    """
    given = {key: value for key, value in overrides.items() if value not in (None, "")}
    try:
        config = Config.load(config_file, environ=os.environ, overrides=given)
    except InvalidConfig as exc:
        click.echo("invalid configuration:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID)
    if need_ledger and config.storage.url is None and not (config.data_dir / "ledger.db").is_file():
        click.echo(f"tollmeter {command}: no ledger in {config.data_dir}", err=True)
        sys.exit(EXIT_FAILURE)
    return config
