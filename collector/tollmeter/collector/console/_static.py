"""The console's static files, read from the installed package (never the checkout)."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["STATIC_FILES", "static_file"]

STATIC_FILES: dict[str, str] = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}


@functools.cache
def static_file(file_name: str) -> bytes | None:
    """The bytes of a shipped static file, or ``None`` when there is no such file."""
    if file_name not in STATIC_FILES:
        return None
    return (resources.files("tollmeter.collector.console") / "static" / file_name).read_bytes()
