"""What each ``tollmeter`` command needs installed, found out without importing it.

The base distribution (what an instrumented app needs) installs the ``tollmeter`` command
too, but the collector's modules come with the ``collector`` extra and the SDKs the demo
app calls with ``demo``. :func:`missing_extra` says which extra a command lacks before
anything imports those modules, so the user reads one line instead of a traceback.
``importlib.util.find_spec`` asks the import system's finders without running a module:
only the parent package of a dotted name is imported, and those are namespace packages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib.util import find_spec
from typing import Final

__all__ = ["COLLECTOR_MODULES", "DEMO_MODULES", "missing_extra", "missing_modules"]

#: One importable module per distribution of the ``collector`` extra.
COLLECTOR_MODULES: Final = (
    "click",
    "genai_prices",
    "google.protobuf",
    "google.rpc",
    "grpc",
    "httpx",
    "opentelemetry.proto",
    "prometheus_client",
    "pyarrow",
    "starlette",
    "uvicorn",
    "yaml",
)
#: What the ``demo`` extra adds: the SDKs the demo app calls.
DEMO_MODULES: Final = ("anthropic", "openai")


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except ImportError:  # the parent package of a dotted name is missing
        return False


def missing_modules(names: Iterable[str]) -> list[str]:
    """The modules among ``names`` that cannot be imported here."""
    return [name for name in names if not _importable(name)]


def missing_extra(argv: Sequence[str]) -> str | None:
    """The line to show when the command in ``argv`` cannot run here, else ``None``."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    extra = "demo" if command == "demo" else "collector"
    missing = missing_modules(COLLECTOR_MODULES)
    if extra == "demo":
        missing += missing_modules(DEMO_MODULES)
    if not missing:
        return None
    subject = f"tollmeter {command}" if command else "tollmeter"
    return (
        f"{subject}: missing module{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
        f"install them with: pip install 'tollmeter[{extra}]'"
    )
