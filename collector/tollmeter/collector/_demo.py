"""``tollmeter demo``: the whole product on one machine, offline, in a few seconds.

Starts the fake LLM server and a collector (with the limits of the demo config),
runs an instrumented example application as a separate process, then reads the
result back the way a user would: the usage API, a tenant's status, the Parquet
export. The application is a separate process on purpose: spans travel over real
OTLP and the collector never imports the instrumentation.

The quickstart app and its configuration ship inside the package (``_demo_files``, linked
from ``examples/quickstart`` in a checkout) so that the demo runs from any install and any
working directory; its data directory is relative to the working directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tollmeter.collector._config import Config
from tollmeter.collector._server import Collector
from tollmeter.collector.errors import DemoError
from tollmeter.fakellm import FakeLLMServer
from tollmeter.semconv.errors import ConfigurationError

__all__ = ["DEMO_APP", "DEMO_CONFIG", "run_demo"]

_FILES = Path(__file__).with_name("_demo_files")
#: The quickstart app and its collector configuration, shipped as package data.
DEMO_APP = _FILES / "app.py"
DEMO_CONFIG = _FILES / "tollmeter.yaml"

_MARKER = ".tollmeter-demo"
_APP_TIMEOUT_S = 120.0
_HTTP_TIMEOUT_S = 30.0

Echo = Callable[[str], None]


def _prepare_data_dir(data_dir: Path) -> None:
    """Start from an empty directory, but only ever wipe one the demo created itself."""
    if data_dir.exists():
        if not (data_dir / _MARKER).exists() and any(data_dir.iterdir()):
            raise DemoError(f"{data_dir} exists and was not made by the demo; pick another")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / _MARKER).write_text("created by `tollmeter demo`; safe to delete\n")


def _auth(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def _get_json(url: str, key: str | None) -> Any:
    request = urllib.request.Request(url, headers=_auth(key))
    with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
        return json.load(response)


def _post_json(url: str, key: str | None) -> Any:
    request = urllib.request.Request(url, data=b"", method="POST", headers=_auth(key))
    with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
        return json.load(response)


async def _run_app(app: Path, env: Mapping[str, str], echo: Echo) -> None:
    # Zero-code instrumentation, as a user would run their app.
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    if not launcher.is_file():
        raise DemoError(f"{launcher} not found: install tollmeter in this environment")
    process = await asyncio.create_subprocess_exec(
        str(launcher),
        sys.executable,
        str(app),
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = process.stdout
    if output is None:
        raise DemoError(f"{app}: no output pipe")

    async def relay(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            echo(f"  app | {line.decode(errors='replace').rstrip()}")

    try:
        await asyncio.wait_for(asyncio.gather(relay(output), process.wait()), _APP_TIMEOUT_S)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise DemoError(f"{app} did not finish within {_APP_TIMEOUT_S:.0f}s") from None
    if process.returncode != 0:
        raise DemoError(f"{app} exited with code {process.returncode}")


def _other_instrumentors() -> str:
    names = {ep.name for ep in entry_points(group="opentelemetry_instrumentor")}
    return ",".join(sorted(name for name in names if not name.startswith("tollmeter_")))


def _usage_table(rows: Sequence[Mapping[str, Any]], estimated: Mapping[str, int]) -> list[str]:
    columns = (
        ("tenant", "tenant"),
        ("requests", "requests"),
        ("input", "input_tokens"),
        ("cache read", "cache_read_input_tokens"),
        ("output", "output_tokens"),
        ("reasoning", "reasoning_output_tokens"),
        ("total", "total_tokens"),
        ("estimated", "estimated"),
        ("cost", "cost"),
    )
    table = [[title for title, _ in columns]]
    for row in rows:
        row = {**row, "estimated": estimated.get(row["tenant"], 0)}
        cells = [str(row.get(key) if row.get(key) is not None else "-") for _, key in columns]
        if row.get("cost") is not None:
            cost = Decimal(row["cost"]).quantize(Decimal("0.000001"))
            cells[-1] = f"{cost} {row.get('currency') or ''}".strip()
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return [
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]


async def _demo(config: Config, app: Path, echo: Echo, *, serve: bool) -> None:
    with FakeLLMServer() as llm:
        async with Collector(config) as collector:
            api = collector.management_url
            key = next(iter(config.management.admin_keys), None)
            echo(f"fake LLM server    {llm.url}")
            echo(f"collector          OTLP/gRPC {collector.grpc_endpoint}, API {api}")
            echo(f"running {app} ...")
            env = dict(os.environ)
            # Other installed instrumentors would report the same calls again: the collector
            # would count them once, but the demo keeps to tollmeter's own.
            env.setdefault("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", _other_instrumentors())
            env.update(
                OTEL_SERVICE_NAME="quickstart",
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_METRICS_EXPORTER="otlp",
                OTEL_LOGS_EXPORTER="none",
                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{collector.grpc_endpoint}",
                OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                OTEL_METRIC_EXPORT_INTERVAL="60000",
                TOLLMETER_GUARD_URL=api,
                OPENAI_BASE_URL=f"{llm.url}/v1",
                ANTHROPIC_BASE_URL=llm.url,
            )
            if key is not None:
                env["TOLLMETER_GUARD_KEY"] = key
            await _run_app(app, env, echo)

            # The app flushed its spans before exiting and the collector acknowledges a
            # batch only after its commit, so the ledger is complete now.
            usage = await asyncio.to_thread(_get_json, f"{api}/api/v1/usage?group_by=tenant", key)
            by_source = await asyncio.to_thread(
                _get_json, f"{api}/api/v1/usage?group_by=tenant,usage_source", key
            )
            estimated = {
                row["tenant"]: row["total_tokens"]
                for row in by_source["rows"]
                if row["usage_source"] == "estimate"
            }
            echo("")
            echo("usage per tenant (GET /api/v1/usage?group_by=tenant):")
            for line in _usage_table(usage["rows"], estimated):
                echo(line)
            echo("  (estimated: tokens counted with tiktoken where the provider reported none)")
            status = await asyncio.to_thread(_get_json, f"{api}/api/v1/tenants/globex/status", key)
            echo("")
            echo("globex limits (GET /api/v1/tenants/globex/status):")
            for limit in status["limits"]:
                echo(
                    f"  {limit['name']}: {limit['remaining']:g} of {limit['limit']:g} "
                    f"{limit['measure']} tokens left, resets {limit['reset_at']}"
                )

            exported = await asyncio.to_thread(_post_json, f"{api}/api/v1/export", key)
            echo("")
            echo(f"Parquet for billing (POST /api/v1/export: {exported['events']} events):")
            export_dir = Path(collector.export.exporter.store.location if collector.export else "")
            for name in exported["files"]:
                path = export_dir / name
                echo(f"  {path}  ({pq.ParquetFile(path).metadata.num_rows} rows)")
            echo("")
            echo(f"console            {api}/  (admin key: {key})")
            if serve:
                echo("the collector keeps serving the console: press Ctrl-C to stop")
                await asyncio.Event().wait()


def run_demo(*, config_path: Path, app: Path, echo: Echo, serve: bool = False) -> None:
    """Run the demo; raises :class:`DemoError` or ``ConfigurationError`` on failure.

    With ``serve``, the collector stays up after the demo (for its console) until the
    process is interrupted, then stops as usual.
    """
    if not app.is_file():
        raise DemoError(f"example app {app} not found")
    if not config_path.is_file():
        raise ConfigurationError(f"demo configuration {config_path} not found")
    config = Config.load(config_path)
    _prepare_data_dir(config.data_dir)
    echo(f"data directory     {config.data_dir.resolve()}")
    try:
        asyncio.run(_demo(config, app, echo, serve=serve))
    except KeyboardInterrupt:
        if not serve:
            raise
        # asyncio.run stopped the collector on its way out: an ordinary end of the demo.
