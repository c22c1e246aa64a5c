"""An S3-compatible server for tests: moto's server mode on a free loopback port.

The server runs as its own process, so a test can stop it in the middle of an
export. It checks credentials: the setup script spends the few unauthenticated
requests moto allows (``INITIAL_NO_AUTH_ACTION_COUNT``) on creating an IAM user
with full S3 rights, and every later request must be signed with that user's key.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REGION = "us-east-1"

# Four requests without authentication: create the user, its key, its policy, and a
# first bucket. Everything after them is checked against the user's key.
_SETUP = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import boto3
    endpoint, region = sys.argv[1:]
    anonymous = dict(endpoint_url=endpoint, region_name=region,
                     aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", **anonymous)
    iam.create_user(UserName="exporter")
    key = iam.create_access_key(UserName="exporter")["AccessKey"]
    iam.put_user_policy(
        UserName="exporter", PolicyName="s3",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    boto3.client("s3", **anonymous).create_bucket(Bucket="tollmeter-setup")
    print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class S3Server:
    """A running moto server: ``endpoint_url``, ``access_key_id``, ``secret_access_key``.

    ``settings(bucket)`` is the ``export.s3`` section for it; ``filesystem()`` a
    pyarrow S3 filesystem signed with the user's key; ``create_bucket()`` a new,
    empty bucket; ``stop()`` ends the server (its data goes with it).
    """

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            self._wait_until_listening()
            setup = subprocess.run(
                [sys.executable, "-c", _SETUP, self.endpoint_url, REGION],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert setup.returncode == 0, setup.stderr
        except BaseException:
            self.stop()
            raise
        key = json.loads(setup.stdout)
        self.access_key_id: str = key["id"]
        self.secret_access_key: str = key["secret"]

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:
                raise AssertionError(f"moto server exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("moto server did not start listening") from None
                time.sleep(0.1)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The ``export.s3`` configuration section for this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "connect_timeout": "2s",
            "request_timeout": "10s",
            **overrides,
        }

    def filesystem(self) -> Any:
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            region=REGION,
            scheme="http",
            endpoint_override=f"127.0.0.1:{self.port}",
            allow_bucket_creation=True,
            connect_timeout=2,
            request_timeout=10,
        )

    def create_bucket(self) -> str:
        name = f"billing-{secrets.token_hex(6)}"
        self.filesystem().create_dir(name)
        return name

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the session; each test takes its own bucket."""
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on :func:`s3_server`."""
    return s3_server.create_bucket()
