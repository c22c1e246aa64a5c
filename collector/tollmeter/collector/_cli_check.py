"""``tollmeter check``: dry-run one request against limits.

Against a configuration file (``--config``): the request is evaluated with the limit
state the collector saved in its data directory (or empty limits with ``--fresh``), and
nothing is reserved. The data directory is resolved as the collector resolves it: a
relative ``data_dir`` against the working directory, so a configuration read from
elsewhere may point at another directory than its collector's; stderr then says which
file was looked for and not found. Against a running collector (``--url``): the
collector's check API evaluates it with ``dry_run`` (nothing reserved either).

Exit codes: 0 the request would be allowed; 1 it would be denied; 2 invalid
configuration or arguments; 3 the collector could not be asked.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig
from tollmeter.collector.limits import CheckRequest, LimitsService
from tollmeter.semconv.errors import TollmeterError

__all__ = ["check_command"]

EXIT_DENIED = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3


@click.command("check")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TOLLMETER_CONFIG",
    show_envvar=True,
    help="Evaluate against this configuration's limits (and its saved limit state).",
)
@click.option(
    "--url",
    envvar="TOLLMETER_URL",
    show_envvar=True,
    help="Ask a running collector's management API instead, e.g. http://127.0.0.1:4319.",
)
@click.option("--admin-key", envvar="TOLLMETER_ADMIN_KEY", help="Admin key for --url.")
@click.option("--fresh", is_flag=True, help="With --config: ignore the saved limit state.")
@click.option("--tenant", required=True, help="Tenant id of the request.")
@click.option("--project", help="Project id.")
@click.option("--model", help="Requested model.")
@click.option("--api-key-id", help="API key id (never the key itself).")
@click.option("--feature", help="Feature name.")
@click.option("--input-tokens", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-output-tokens", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def check_command(
    config_file: Path | None,
    url: str | None,
    admin_key: str | None,
    fresh: bool,
    tenant: str,
    project: str | None,
    model: str | None,
    api_key_id: str | None,
    feature: str | None,
    input_tokens: int,
    max_output_tokens: int,
    timeout: float,
    as_json: bool,
) -> None:
    """Would this request be allowed? Dry run, nothing is reserved."""
    request = CheckRequest(
        tenant=tenant,
        project=project,
        model=model,
        api_key_id=api_key_id,
        feature=feature,
        estimated_input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
    )
    if url is not None and config_file is not None:
        click.echo("give either --config or --url, not both", err=True)
        sys.exit(EXIT_INVALID)
    if url is not None:
        decision = _ask_collector(url, admin_key, request, timeout)
    elif config_file is not None:
        decision = _evaluate_locally(config_file, request, fresh)
    else:
        # Without limits every request is allowed: an answer that would only mislead.
        click.echo(
            "tollmeter check: give --config FILE (or TOLLMETER_CONFIG) or --url of a collector",
            err=True,
        )
        sys.exit(EXIT_INVALID)
    if as_json:
        click.echo(json.dumps(decision, indent=2, sort_keys=True))
    else:
        click.echo(_describe(decision))
    if not decision.get("allowed"):
        sys.exit(EXIT_DENIED)


def _evaluate_locally(config_file: Path, request: CheckRequest, fresh: bool) -> Any:
    try:
        config = Config.load(config_file, environ=os.environ)
    except InvalidConfig as exc:
        click.echo("invalid configuration:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID)
    state = (config.data_dir / "limits.db").absolute()
    if not fresh and not state.is_file():
        click.echo(
            f"no saved limit state at {state}: evaluating with empty counters "
            "(a relative data_dir is resolved against the working directory)",
            err=True,
        )
    try:
        service = LimitsService(
            config.limits,
            state_path=None if fresh or not state.is_file() else state,
            organisations=config.organisations,
        )
    except TollmeterError as exc:
        click.echo(f"cannot read the limit state: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    try:
        return service.check(request, dry_run=True).to_json()
    finally:
        # Close without writing: a dry run must leave the collector's state untouched.
        service.engine.drain_changes()
        service.close(timeout=1.0)


def _ask_collector(url: str, admin_key: str | None, request: CheckRequest, timeout: float) -> Any:
    body = {
        key: value
        for key, value in {
            "tenant": request.tenant,
            "project": request.project,
            "model": request.model,
            "api_key_id": request.api_key_id,
            "feature": request.feature,
            "estimated_input_tokens": request.estimated_input_tokens,
            "max_output_tokens": request.max_output_tokens,
            "dry_run": True,
        }.items()
        if value is not None
    }
    headers = {"Content-Type": "application/json"}
    if admin_key:
        headers["Authorization"] = f"Bearer {admin_key}"
    http_request = urllib.request.Request(
        url.rstrip("/") + "/api/v1/check",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read(4096).decode("utf-8", "replace")
        click.echo(f"the collector refused the check: HTTP {exc.code} {detail}", err=True)
        sys.exit(EXIT_INVALID if exc.code == 400 else EXIT_UNREACHABLE)
    except (OSError, ValueError) as exc:
        click.echo(f"cannot reach the collector at {url}: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)


def _describe(decision: Any) -> str:
    verdict = "ALLOWED" if decision.get("allowed") else "DENIED"
    lines = [f"{verdict} (action: {decision.get('action')})"]
    if decision.get("denied_by"):
        lines[0] += f" by limit {decision['denied_by']}"
    if decision.get("retry_after_s") is not None:
        lines.append(f"retry after: {decision['retry_after_s']:g} s")
    if decision.get("downgrade_model"):
        lines.append(f"suggested model: {decision['downgrade_model']}")
    limits = decision.get("limits") or []
    if not limits:
        lines.append("no limit matches this request")
    for status in limits:
        key = ",".join(f"{k}={v}" for k, v in status["key"].items()) or "-"
        lines.append(
            f"  {status['name']:<20} {key:<30} remaining {status['remaining']:g} of "
            f"{status['limit']:g} {status['measure']}, resets {status['reset_at']}"
        )
    return "\n".join(lines)
