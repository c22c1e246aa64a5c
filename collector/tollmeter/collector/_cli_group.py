"""The click group of the ``tollmeter`` command, loaded once its dependencies are known.

Each subcommand lives in the module of the part it drives and is registered here;
:func:`tollmeter.collector.cli.main` runs the group.
"""

from __future__ import annotations

import click

from tollmeter.collector._cli_check import check_command
from tollmeter.collector._cli_collector import (
    collector_command,
    usage_command,
    validate_config_command,
)
from tollmeter.collector._cli_demo import demo_command
from tollmeter.collector._cli_export import export_command
from tollmeter.fakellm import fake_llm
from tollmeter.semconv.version import __version__

__all__ = ["cli"]


@click.group(
    name="tollmeter",
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "TOLLMETER"},
)
@click.version_option(__version__, prog_name="tollmeter")
def cli() -> None:
    """Meter LLM token usage per tenant with OpenTelemetry."""


for _command in (
    collector_command,
    usage_command,
    validate_config_command,
    check_command,
    export_command,
    fake_llm,
    demo_command,
):
    cli.add_command(_command)
