"""The ``tollmeter`` command line (entry point ``tollmeter.collector.cli:main``).

The base distribution installs the command without the collector's dependencies, so
``main`` checks that the modules the command needs can be imported before it loads any
subcommand; when some are missing it prints one line naming them and the extra that
brings them, and exits 2. Only the CLI turns errors into exit codes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tollmeter.collector._cli_requirements import missing_extra
from tollmeter.semconv.version import __version__

__all__ = ["main"]


def main(args: Sequence[str] | None = None) -> None:
    """Run ``tollmeter`` with ``args`` (the process's arguments when ``None``)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv == ["--version"]:  # answered in every install, without loading click
        sys.stdout.write(f"tollmeter, version {__version__}\n")
        return
    problem = missing_extra(argv)
    if problem is not None:
        sys.stderr.write(f"{problem}\n")
        raise SystemExit(2)
    from tollmeter.collector._cli_group import cli

    cli.main(args=argv)


if __name__ == "__main__":
    main()
