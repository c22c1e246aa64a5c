"""An app set up by ``configure()`` exits promptly when its collector is down or stalls.

Before the exporters had their own timeout, such an app took 12 to 15 s to exit. The bound
asserted here is a hang guard, far above the expected ~2 s, not a performance figure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

APP = """
import sys, time
import tollmeter
from opentelemetry import metrics, trace

tollmeter.configure(endpoint=sys.argv[1], protocol=sys.argv[2], instrument=())
with trace.get_tracer("app").start_as_current_span("chat gpt-4o-mini"):
    pass
metrics.get_meter("app").create_counter("calls").add(1)
print(time.monotonic(), flush=True)
"""

HANG_GUARD_S = 5.0


@pytest.fixture
def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections are accepted by the kernel but never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def _exit_seconds(endpoint: str, protocol: str) -> tuple[float, str]:
    """Seconds from the end of the app's own code to the end of its process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", APP, endpoint, protocol],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ended = time.monotonic()
    assert done.returncode == 0, done.stderr[-4000:]
    return ended - float(done.stdout.split()[-1]), done.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("where", ["refused_port", "silent_port"])
def test_exit_is_prompt_when_the_collector_cannot_take_the_data(
    protocol: str, where: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(where)
    seconds, stderr = _exit_seconds(f"http://127.0.0.1:{port}", protocol)
    assert seconds < HANG_GUARD_S, stderr[-4000:]
    # The spans are lost, and the SDK says so rather than failing silently.
    assert "export" in stderr.lower()
