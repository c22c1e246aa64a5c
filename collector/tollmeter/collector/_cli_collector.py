"""``tollmeter collector`` and ``tollmeter validate-config``.

Exit codes: 0 success; 1 the collector could not start (address in use,
unusable ledger); 2 invalid configuration or arguments.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from tollmeter.collector import _settings as settings
from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig
from tollmeter.semconv.errors import TollmeterError

if TYPE_CHECKING:
    from tollmeter.collector._server import Collector

__all__ = ["collector_command", "validate_config_command"]

_F = TypeVar("_F", bound=Callable[..., Any])

EXIT_STARTUP_FAILURE = 1
EXIT_INVALID_CONFIG = 2

_logger = logging.getLogger("tollmeter.collector.cli")

# CLI option -> (setting, configuration key).
_COLLECTOR_FLAGS: dict[str, settings.Setting] = {
    "grpc_endpoint": settings.GRPC_ENDPOINT,
    "http_endpoint": settings.HTTP_ENDPOINT,
    "management_endpoint": settings.MANAGEMENT_ENDPOINT,
    "data_dir": settings.DATA_DIR,
    "storage_url": settings.STORAGE_URL,
    "log_level": settings.LOG_LEVEL,
}


def _option(name: str, setting: settings.Setting, **kwargs: Any) -> Callable[[_F], _F]:
    return click.option(
        name,
        envvar=setting.name,
        show_envvar=True,
        default=setting.default,
        show_default=setting.default is not None,
        help=setting.doc,
        **kwargs,
    )


def _fail_config(error: InvalidConfig) -> NoReturn:
    click.echo("invalid configuration:", err=True)
    for problem in error.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_INVALID_CONFIG)


def _load(config_file: Path | None, flags: Mapping[str, object]) -> Config:
    try:
        return Config.load(config_file, environ=os.environ, overrides=flags)
    except InvalidConfig as exc:
        _fail_config(exc)


@click.command("collector")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=settings.CONFIG.name,
    show_envvar=True,
    help=settings.CONFIG.doc,
)
@_option("--grpc-endpoint", settings.GRPC_ENDPOINT)
@_option("--http-endpoint", settings.HTTP_ENDPOINT)
@_option("--management-endpoint", settings.MANAGEMENT_ENDPOINT)
@_option("--data-dir", settings.DATA_DIR)
@_option("--storage-url", settings.STORAGE_URL)
@_option(
    "--log-level", settings.LOG_LEVEL, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.pass_context
def collector_command(
    ctx: click.Context, /, config_file: Path | None, **options: str | None
) -> None:
    """Run the collector: OTLP in, usage ledger, management API.

    Stops gracefully on SIGTERM or Ctrl-C (a second one forces exit). SIGHUP
    reloads the keys, TLS files, limits and plans from the configuration.
    """
    # Only values really given (flag or variable) override the file; the shown
    # defaults are the configuration's own.
    flags: dict[str, object] = {}
    for name, value in options.items():
        source = ctx.get_parameter_source(name)
        if value is not None and source is click.core.ParameterSource.COMMANDLINE:
            key = _COLLECTOR_FLAGS[name].key
            if key is not None:
                flags[key] = value
    config = _load(config_file, flags)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.log_level != "debug":
        # uvicorn announces each of the two embedded servers; the collector says where it listens.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    sys.exit(
        asyncio.run(
            _serve(config, lambda: Config.load(config_file, environ=os.environ, overrides=flags))
        )
    )


async def _serve(config: Config, reload: Callable[[], Config] | None = None) -> int:
    from tollmeter.collector._server import Collector
    from tollmeter.collector.errors import StartupError

    collector = Collector(config)
    # Handlers go in before the servers start: /readyz may answer while start() still
    # awaits, and a SIGTERM sent then must stop the collector gracefully, not kill it.
    stop = asyncio.Event()
    restore = _install_signal_handlers(stop)
    try:
        await collector.start()
    except StartupError as exc:
        restore()
        click.echo(f"tollmeter collector: cannot start: {exc}", err=True)
        return EXIT_STARTUP_FAILURE
    lines = [
        ("OTLP/gRPC", collector.grpc_endpoint if config.receivers.grpc.enabled else None),
        ("OTLP/HTTP", collector.http_endpoint if config.receivers.http.enabled else None),
        ("management API", collector.management_url if config.management.enabled else None),
    ]
    for what, where in lines:
        if where is not None:
            click.echo(f"tollmeter collector: {what} listening on {where}")
    click.echo(f"tollmeter collector: ledger {config.storage_url}")
    sys.stdout.flush()
    stop_reloading = _reload_on_sighup(collector, reload) if reload is not None else lambda: None
    try:
        await stop.wait()
        _logger.info("shutting down")
        await collector.stop()
    finally:
        stop_reloading()
        restore()
    return 0


def _reload_on_sighup(collector: Collector, load: Callable[[], Config]) -> Callable[[], None]:
    """On SIGHUP, read the configuration again and swap in its TLS certificates, keys,
    limits and plans (limit state kept); returns the undo. A configuration that is invalid,
    or whose certificates cannot be used, is logged and changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            collector.reload(load())
        except TollmeterError as exc:
            _logger.error(
                "SIGHUP: configuration not reloaded; the certificates, keys, limits and "
                "plans in force stay: %s",
                exc,
            )

    loop.add_signal_handler(signal.SIGHUP, reload)

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return restore


def _install_signal_handlers(stop: asyncio.Event) -> Callable[[], None]:
    """First SIGINT/SIGTERM: graceful stop. Second: immediate exit."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def handle(signum: int) -> None:
        if stop.is_set():
            _logger.error(
                "second %s: exiting without finishing shutdown", signal.Signals(signum).name
            )
            os._exit(128 + signum)
        _logger.info("%s received: shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    for signum in signals:
        loop.add_signal_handler(signum, handle, signum)

    def restore() -> None:
        for signum in signals:
            loop.remove_signal_handler(signum)

    return restore


@click.command("validate-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate_config_command(file: Path) -> None:
    """Check a configuration FILE: print OK, or every problem (exit code 2)."""
    try:
        Config.load(file)
    except InvalidConfig as exc:
        _fail_config(exc)
    click.echo(f"OK: {file}")
