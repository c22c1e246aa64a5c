"""Generate ``attributes.py``, ``metrics.py`` and ``docs/semconv.md`` from ``registry.yaml``.

Usage::

    python -m tollmeter.semconv.generate            # rewrite the generated files
    python -m tollmeter.semconv.generate --check    # exit 1 when any of them is stale

``--root`` names the source checkout to write into (default: the checkout this module lives in).
Importing this module imports ``tollmeter.semconv``, which uses the generated constants: after
adding a name to the registry, regenerate before code refers to the new constant.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tollmeter.semconv._registry import REGISTRY_PATH, load_registry
from tollmeter.semconv._render import render_attributes, render_metrics
from tollmeter.semconv._render_docs import RULES_PATH, render_docs
from tollmeter.semconv.errors import ConfigurationError

__all__ = ["SOURCE_ROOT", "main", "render_all", "stale_files", "write_all"]

SOURCE_ROOT = Path(__file__).resolve().parents[3]
"""The checkout holding ``semconv/``, ``docs/`` and the rest, when run from source."""

ATTRIBUTES_FILE = Path("semconv/tollmeter/semconv/attributes.py")
METRICS_FILE = Path("semconv/tollmeter/semconv/metrics.py")
DOCS_FILE = Path("docs/semconv.md")

EXIT_OK = 0
EXIT_STALE = 1
EXIT_BAD_REGISTRY = 2


def render_all(
    registry_path: Path = REGISTRY_PATH, rules_path: Path = RULES_PATH
) -> dict[Path, str]:
    """Every generated file's content, keyed by its path relative to the checkout root."""
    registry = load_registry(registry_path)
    rules = rules_path.read_text(encoding="utf-8")
    return {
        ATTRIBUTES_FILE: _ruff_format(ATTRIBUTES_FILE, render_attributes(registry)),
        METRICS_FILE: _ruff_format(METRICS_FILE, render_metrics(registry)),
        DOCS_FILE: render_docs(registry, rules),
    }


def write_all(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """Write ``files`` under ``root``; returns those whose content changed."""
    changed = []
    for relative, text in files.items():
        target = root / relative
        if _read(target) == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        changed.append(relative)
    return changed


def stale_files(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """The paths under ``root`` whose content differs from ``files`` (or that are missing)."""
    return [relative for relative, text in files.items() if _read(root / relative) != text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tollmeter.semconv.generate")
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    parser.add_argument("--root", type=Path, default=SOURCE_ROOT, help="checkout to write into")
    parser.add_argument("--registry", type=Path, default=REGISTRY_PATH, help="registry file")
    args = parser.parse_args(argv)
    try:
        files = render_all(args.registry)
    except ConfigurationError as exc:
        sys.stderr.write(f"cannot generate: {exc}\n")
        return EXIT_BAD_REGISTRY
    if args.check:
        stale = stale_files(args.root, files)
        for path in stale:
            sys.stderr.write(f"stale: {path} (run python -m tollmeter.semconv.generate)\n")
        return EXIT_STALE if stale else EXIT_OK
    for path in write_all(args.root, files):
        sys.stdout.write(f"wrote {path}\n")
    return EXIT_OK


def _ruff_format(relative: Path, source: str) -> str:
    # Formatting with the checkout's own ruff settings makes the output pass `ruff format --check`
    # whatever line length or quote style the project configures.
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(relative), "-"],
            input=source,
            capture_output=True,
            text=True,
            cwd=SOURCE_ROOT,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"ruff could not format {relative}: {exc}") from exc
    return result.stdout


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
