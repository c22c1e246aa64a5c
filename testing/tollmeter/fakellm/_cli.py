"""``tollmeter fake-llm``: serve the fake LLM in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
from types import FrameType

import click
import uvicorn

from tollmeter.fakellm._app import create_app
from tollmeter.fakellm._errors import FakeLLMError
from tollmeter.fakellm._server import bind_socket, uvicorn_config
from tollmeter.fakellm._tokens import preload

__all__ = ["STARTUP_FAILURE", "fake_llm"]

STARTUP_FAILURE = 3
_PRELOAD_TIMEOUT_S = 120.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _already_handled(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal after its shutdown; by then it has been handled."""


@click.command("fake-llm")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0: any free port.",
)
@click.pass_context
def fake_llm(ctx: click.Context, host: str, port: int) -> None:
    """Serve an offline OpenAI- and Anthropic-compatible API with exact, deterministic usage.

    Prints one line with the base URL once it accepts connections. OpenAI clients use
    URL/v1, Anthropic clients the URL itself. See docs/fake-llm.md for faults and cache
    rules.
    """
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        click.echo(f"fake-llm: cannot start: {exc}", err=True)
        ctx.exit(STARTUP_FAILURE)
    try:
        preload(_PRELOAD_TIMEOUT_S)
    except FakeLLMError as exc:
        sock.close()
        click.echo(f"fake-llm: cannot start: {exc}", err=True)
        ctx.exit(STARTUP_FAILURE)
    # Listening before the loop starts: clients that read the line can connect at once.
    sock.listen(2048)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"fake-llm listening on http://{shown}:{sock.getsockname()[1]}")
    previous = {sig: signal.signal(sig, _already_handled) for sig in _STOP_SIGNALS}
    try:
        uvicorn.Server(uvicorn_config(create_app())).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
