"""The ``tollmeter`` command line.

Only this module turns errors into exit codes; each subcommand lives in the
module of the part it drives and is registered here.
"""

from __future__ import annotations

import click

from tollmeter.semconv.version import __version__

__all__ = ["main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "TOLLMETER"}
)
@click.version_option(__version__, prog_name="tollmeter")
def main() -> None:
    """Meter LLM token usage per tenant with OpenTelemetry."""


from tollmeter.collector._cli_collector import (  # noqa: E402
    collector_command,
    usage_command,
    validate_config_command,
)

main.add_command(collector_command)
main.add_command(usage_command)
main.add_command(validate_config_command)

from tollmeter.collector._cli_check import check_command  # noqa: E402

main.add_command(check_command)

from tollmeter.collector._cli_export import export_command  # noqa: E402

main.add_command(export_command)

from tollmeter.collector.fakellm import fake_llm  # noqa: E402

main.add_command(fake_llm)

from tollmeter.collector._cli_demo import demo_command  # noqa: E402

main.add_command(demo_command)


if __name__ == "__main__":
    main()
