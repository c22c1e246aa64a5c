"""Fixtures shared by every test: real servers on free ports, offline tokenizers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SHARED_TIKTOKEN = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED_TIKTOKEN.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED_TIKTOKEN)


import pytest  # noqa: E402

from tests._focus import focus_validator  # noqa: E402, F401
from tests._postgres import postgres_server, postgres_url  # noqa: E402, F401
from tests._redis import redis_server, redis_url  # noqa: E402, F401
from tests._s3 import s3_bucket, s3_server  # noqa: E402, F401

_ROOT = Path(__file__).resolve().parents[1]
_TOOL_CACHES = {".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}


@pytest.fixture(scope="session", autouse=True)
def _tests_leave_the_checkout_clean():
    """Tests write under their temporary directories, never into the project."""
    before = {entry.name for entry in _ROOT.iterdir()}
    yield
    created = {entry.name for entry in _ROOT.iterdir()} - before - _TOOL_CACHES
    assert not created, f"tests created {sorted(created)} in the project root"


@pytest.fixture(scope="session")
def fake_llm():
    """The offline OpenAI/Anthropic server: ``.url``; OpenAI clients use ``f"{url}/v1"``.

    ``.requests()`` / ``.find(response_id)`` / ``.last()`` give the usage it reported.
    Shared by the whole session: the prompt cache remembers earlier tests' prompts.
    """
    from tollmeter.fakellm import FakeLLMServer

    with FakeLLMServer() as server:
        yield server


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution's wheel, built once per session from the checkout."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    result = subprocess.run(
        [*command, str(_ROOT)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("tollmeter-*.whl")
    return wheel


class TlsFiles:
    """PEM files from private CAs made for one test: a server certificate for
    127.0.0.1 and localhost, and a client certificate from a separate client CA.
    :meth:`rotate` writes a new server certificate over the same files."""

    def __init__(self, directory: Path) -> None:
        import trustme

        self.directory = directory
        self.ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.client_ca_file = directory / "client-ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        self.client_cert_file = directory / "client.pem"
        self.client_key_file = directory / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.client_ca.cert_pem.write_to_path(str(self.client_ca_file))
        client = self.client_ca.issue_cert("test-client")
        client.cert_chain_pems[0].write_to_path(str(self.client_cert_file))
        client.private_key_pem.write_to_path(str(self.client_key_file))
        self.rotate()

    def rotate(self, ca: object | None = None) -> None:
        """Issue a new server certificate (from ``ca``, default the same CA)."""
        issuer = ca or self.ca
        server = issuer.issue_cert("127.0.0.1", "localhost")  # type: ignore[attr-defined]
        server.private_key_pem.write_to_path(str(self.key_file))
        chain = b"".join(pem.bytes() for pem in server.cert_chain_pems)
        self.cert_file.write_bytes(chain)
        self.leaf_pem = server.cert_chain_pems[0].bytes()

    def server_section(self, *, mutual: bool = False) -> dict[str, str]:
        section = {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
        if mutual:
            section["client_ca_file"] = str(self.client_ca_file)
        return section


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """Certificates and keys for TLS tests; see :class:`TlsFiles`."""
    directory = tmp_path / "tls"
    directory.mkdir()
    return TlsFiles(directory)
