"""What the commands that query a running collector share: ``--url``, ``--admin-key``,
``--timeout`` and one GET of JSON from the management API.

A refused request ends the command: exit code 2 for HTTP 400 (bad arguments), 1 for
any other HTTP error or an unreachable collector, with one line on stderr.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from tollmeter.collector import _settings as settings

__all__ = ["api_options", "get_json"]

_F = TypeVar("_F", bound=Callable[..., Any])

EXIT_FAILURE = 1
EXIT_BAD_ARGUMENTS = 2


def api_options(command: _F) -> _F:
    """Add ``--url``, ``--admin-key`` and ``--timeout`` to a command."""
    for decorator in reversed(
        [
            click.option(
                "--url",
                envvar=settings.URL.name,
                show_envvar=True,
                default=settings.URL.default,
                show_default=True,
                help="Management API of the collector to ask.",
            ),
            click.option(
                "--admin-key",
                envvar=settings.ADMIN_KEY.name,
                show_envvar=True,
                help="Admin key, sent as 'Authorization: Bearer'.",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0.1),
                default=10.0,
                show_default=True,
                help="Seconds to wait for the API.",
            ),
        ]
    ):
        command = decorator(command)
    return command


def get_json(
    name: str,
    url: str,
    path: str,
    query: Mapping[str, str],
    *,
    admin_key: str | None,
    timeout: float,
) -> Any:
    """GET ``path`` of the management API at ``url``; on failure, exit (see the module)."""
    target = url.rstrip("/") + path
    if query:
        target += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(target, headers={"Accept": "application/json"})
    if admin_key:
        request.add_header("Authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(4096).decode("utf-8", "replace").strip()
        click.echo(f"tollmeter {name}: HTTP {exc.code} from {url}: {detail}", err=True)
        sys.exit(EXIT_BAD_ARGUMENTS if exc.code == 400 else EXIT_FAILURE)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        click.echo(f"tollmeter {name}: cannot reach {url}: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    try:
        return json.loads(body)
    except ValueError:
        click.echo(f"tollmeter {name}: {url} did not answer with JSON", err=True)
        sys.exit(EXIT_FAILURE)
