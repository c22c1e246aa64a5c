"""The click group of the ``tollmeter`` command, loaded once its dependencies are known.

Each subcommand lives in the module of the part it drives. The group imports a
subcommand's module only when that subcommand runs: the collector's modules load grpc,
pyarrow and uvicorn, which ``tollmeter --help`` or ``tollmeter fake-llm`` never need.
:func:`tollmeter.collector.cli.main` runs the group.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import click

from tollmeter.semconv.version import __version__

__all__ = ["SUBCOMMANDS", "cli"]


class Subcommand(NamedTuple):
    module: str
    attribute: str
    summary: str
    """The line ``tollmeter --help`` shows; a test keeps it equal to the command's own."""


SUBCOMMANDS: dict[str, Subcommand] = {
    "collector": Subcommand(
        "tollmeter.collector._cli_collector",
        "collector_command",
        "Run the collector: OTLP in, usage ledger, management API.",
    ),
    "usage": Subcommand(
        "tollmeter.collector._cli_usage",
        "usage_command",
        "Show token usage from a running collector as a table.",
    ),
    "tenants": Subcommand(
        "tollmeter.collector._cli_tenants",
        "tenants_command",
        "List tenants with their usage and the state of their limits.",
    ),
    "status": Subcommand(
        "tollmeter.collector._cli_tenants",
        "status_command",
        "Show one TENANT's limits: used, remaining and when each resets.",
    ),
    "validate-config": Subcommand(
        "tollmeter.collector._cli_collector",
        "validate_config_command",
        "Check a configuration FILE: print OK, or every problem (exit code 2).",
    ),
    "check": Subcommand(
        "tollmeter.collector._cli_check",
        "check_command",
        "Would this request be allowed? Dry run, nothing is reserved.",
    ),
    "export": Subcommand(
        "tollmeter.collector._cli_export",
        "export_command",
        "Export committed usage events not exported yet to Parquet, then print a JSON summary.",
    ),
    "reconcile-report": Subcommand(
        "tollmeter.collector._cli_reconcile",
        "reconcile_command",
        "Compare the providers' usage and cost reports with the ledger, per day and model.",
    ),
    "focus-export": Subcommand(
        "tollmeter.collector._cli_focus",
        "focus_export_command",
        "Write FOCUS 1.2 cost and usage rows from the ledger, as Parquet or CSV.",
    ),
    "verify": Subcommand(
        "tollmeter.collector._cli_verify",
        "verify_command",
        "Recompute the ledger's hash chain and name the first altered, removed or inserted event.",
    ),
    "fake-llm": Subcommand(
        "tollmeter.fakellm._cli",
        "fake_llm",
        "Serve an offline OpenAI- and Anthropic-compatible API with exact, deterministic usage.",
    ),
    "demo": Subcommand(
        "tollmeter.collector._cli_demo",
        "demo_command",
        "Show per-tenant usage, a denied request and the Parquet export, offline.",
    ),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(entry.module), entry.attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry.module}.{entry.attribute} is not a click command")
        # Every option reads a TOLLMETER_* variable (its own, or the one click derives
        # from the command and option names): --help names it.
        for param in command.params:
            if isinstance(param, click.Option):
                param.show_envvar = True
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in SUBCOMMANDS)
        # A stand-in command shortens the summary exactly as the real one would.
        rows = [
            (name, click.Command(name, help=SUBCOMMANDS[name].summary).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


cli = _LazyGroup(
    name="tollmeter",
    help="Meter LLM token usage per tenant with OpenTelemetry.",
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "TOLLMETER"},
)
click.version_option(__version__, prog_name="tollmeter")(cli)
