"""The ``server`` section: timeouts, connection cap and TLS files, from the file and
from ``TOLLMETER_*`` variables, every problem reported with its key."""

from __future__ import annotations

import pytest

from tollmeter.collector._config import Config
from tollmeter.collector.errors import InvalidConfig


def test_defaults_bound_every_port():
    server = Config().server
    assert (server.header_timeout, server.body_timeout, server.idle_timeout) == (10, 60, 60)
    assert server.max_connections == 1000
    assert not server.tls.enabled


def test_environment_variables_set_the_section(tls_files):
    config = Config.load(
        environ={
            "TOLLMETER_HEADER_TIMEOUT": "2s",
            "TOLLMETER_BODY_TIMEOUT": "500ms",
            "TOLLMETER_IDLE_TIMEOUT": "5m",
            "TOLLMETER_MAX_CONNECTIONS": "64",
            "TOLLMETER_TLS_CERT_FILE": str(tls_files.cert_file),
            "TOLLMETER_TLS_KEY_FILE": str(tls_files.key_file),
            "TOLLMETER_TLS_CLIENT_CA_FILE": str(tls_files.client_ca_file),
        }
    )
    server = config.server
    assert (server.header_timeout, server.body_timeout, server.idle_timeout) == (2, 0.5, 300)
    assert server.max_connections == 64
    assert server.tls.cert_file == tls_files.cert_file
    assert server.tls.client_ca_file == tls_files.client_ca_file


def test_every_bad_value_is_reported_with_its_key(tmp_path):
    file = tmp_path / "tollmeter.yaml"
    file.write_text(
        "server:\n  header_timeout: 0s\n  max_connections: 0\n"
        "management:\n  admin_keys: ['sha256:abc']\n"
    )
    with pytest.raises(InvalidConfig) as refused:
        Config.load(file, environ={"TOLLMETER_BODY_TIMEOUT": "soon"})
    keys = {problem.key for problem in refused.value.problems}
    # One section stops at its first problem; the others are still read.
    assert keys == {"server.header_timeout", "management.admin_keys"}
    with pytest.raises(InvalidConfig) as again:
        Config.load(environ={"TOLLMETER_BODY_TIMEOUT": "soon"})
    (problem,) = again.value.problems
    assert problem.key == "server.body_timeout"
    assert problem.source == "environment variable TOLLMETER_BODY_TIMEOUT"


def test_tls_files_must_exist_and_a_key_needs_a_certificate(tmp_path, tls_files):
    with pytest.raises(InvalidConfig, match=r"server\.tls\.cert_file: no such file"):
        Config.from_mapping({"server": {"tls": {"cert_file": str(tmp_path / "missing.pem")}}})
    with pytest.raises(InvalidConfig, match=r"server\.tls\.key_file: needs tls\.cert_file"):
        Config.from_mapping({"server": {"tls": {"key_file": str(tls_files.key_file)}}})
