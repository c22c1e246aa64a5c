"""Config: YAML, environment and flag layers, strict validation with file/key/reason."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tollmeter.collector._config import Config
from tollmeter.collector._config_values import (
    Endpoint,
    Section,
    parse_duration,
    parse_endpoint,
    parse_size,
)
from tollmeter.collector.errors import InvalidConfig
from tollmeter.semconv.errors import ConfigurationError

FULL = """
collector_id: edge-1
data_dir: /var/lib/tollmeter
shutdown_grace: 30s
log_level: debug
storage:
  url: sqlite:///ledger.db
receivers:
  grpc: {endpoint: "0.0.0.0:14317", max_message_bytes: 8MiB}
  http: {endpoint: "[::1]:14318", max_body_bytes: 512KiB, enabled: false}
ingest:
  dedupe_window: 2d
  tenant_attributes: [user.id, service.name]
  default_tenant: anonymous
  max_pending_spans: 5000
  commit_interval: 500ms
management:
  endpoint: "127.0.0.1:14319"
  admin_keys: [admin-secret]
  ingest_keys: {key-a: tenant-a, key-any: null}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tollmeter.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path | None, **kwargs) -> list[tuple[str, str, str]]:
    with pytest.raises(InvalidConfig) as info:
        Config.load(path, **kwargs)
    assert isinstance(info.value, ConfigurationError)
    return [(p.source, p.key, p.reason) for p in info.value.problems]


def test_defaults_need_no_file() -> None:
    config = Config.load(None, environ={})
    assert config.data_dir == Path("tollmeter-data")
    assert config.storage_url == "sqlite:///tollmeter-data/ledger.db"
    assert config.receivers.grpc.endpoint == Endpoint("127.0.0.1", 4317)
    assert config.receivers.http.endpoint == Endpoint("127.0.0.1", 4318)
    assert config.management.endpoint == Endpoint("127.0.0.1", 4319)
    assert config.ingest.dedupe_window == 7 * 86400
    assert config.ingest.default_tenant == "unknown"
    assert config.management.admin_keys == ()
    assert config.collector_id
    assert Config.load(None, environ={}) == Config(collector_id=config.collector_id)


def test_full_file_is_typed(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, FULL), environ={})
    assert config.collector_id == "edge-1"
    assert config.storage_url == "sqlite:///ledger.db"
    assert config.shutdown_grace == 30.0
    assert config.log_level == "debug"
    assert config.receivers.grpc.endpoint == Endpoint("0.0.0.0", 14317)
    assert not config.receivers.grpc.endpoint.is_loopback
    assert config.receivers.grpc.max_message_bytes == 8 * 1024 * 1024
    assert config.receivers.http.endpoint == Endpoint("::1", 14318)
    assert config.receivers.http.endpoint.is_loopback
    assert str(config.receivers.http.endpoint) == "[::1]:14318"
    assert config.receivers.http.max_body_bytes == 512 * 1024
    assert config.receivers.http.enabled is False
    assert config.ingest.dedupe_window == 2 * 86400
    assert config.ingest.tenant_attributes == ("user.id", "service.name")
    assert config.ingest.commit_interval == pytest.approx(0.5)
    assert config.ingest.max_pending_spans == 5000
    assert config.management.admin_keys == ("admin-secret",)
    assert dict(config.management.ingest_keys) == {"key-a": "tenant-a", "key-any": None}


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, "# nothing\n"), environ={})
    assert config.receivers.grpc.endpoint.port == 4317


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("colector_id: x\n", "colector_id", "unknown key"),
        ("receivers: {grpc: {endpont: 'a:1'}}\n", "receivers.grpc.endpont", "unknown key"),
        ("receivers: {grpc: {endpoint: 'nohost'}}\n", "receivers.grpc.endpoint", "host:port"),
        ("receivers: {http: {endpoint: 'a:70000'}}\n", "receivers.http.endpoint", "0 to 65535"),
        ("receivers: {http: {max_body_bytes: 4XB}}\n", "receivers.http.max_body_bytes", "size"),
        ("receivers: {http: {max_body_bytes: 0}}\n", "receivers.http.max_body_bytes", "positive"),
        ("receivers: {grpc: {enabled: maybe}}\n", "receivers.grpc.enabled", "true or false"),
        ("receivers: [grpc]\n", "receivers", "expected a mapping"),
        ("ingest: {dedupe_window: 7 days}\n", "ingest.dedupe_window", "duration"),
        ("ingest: {dedupe_window: -1}\n", "ingest.dedupe_window", "non-negative"),
        ("ingest: {commit_interval: true}\n", "ingest.commit_interval", "duration"),
        ("ingest: {max_pending_spans: 0}\n", "ingest.max_pending_spans", "integer >= 1"),
        ("ingest: {max_pending_spans: 1.5}\n", "ingest.max_pending_spans", "integer"),
        ("ingest: {tenant_attributes: user.id}\n", "ingest.tenant_attributes", "list"),
        ("ingest: {tenant_attributes: [user.id, 3]}\n", "ingest.tenant_attributes[1]", "string"),
        ("ingest: {default_tenant: ''}\n", "ingest.default_tenant", "non-empty"),
        ("log_level: loud\n", "log_level", "one of debug, info"),
        ("shutdown_grace: soon\n", "shutdown_grace", "duration"),
        ("management: {admin_keys: secret}\n", "management.admin_keys", "list"),
        ("management: {ingest_keys: [a, b]}\n", "management.ingest_keys", "mapping"),
        ("management: {ingest_keys: {k: 5}}\n", "management.ingest_keys.k", "string or null"),
        (
            "management: {ingest_keys: {k: a, s3cret: {internal: maybe}}}\n",
            "management.ingest_keys[1].internal",
            "true or false",
        ),
        (
            "management: {ingest_keys: {s3cret: {tenant: a, intern: true}}}\n",
            "management.ingest_keys[0].intern",
            "unknown key",
        ),
        ("storage: {url: 7}\n", "storage.url", "string"),
        ("storage: {url: x, pool: 3}\n", "storage.pool", "unknown key"),
    ],
)
def test_each_bad_value_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    [(source, found_key, found_reason)] = problems(path, environ={})
    assert source == str(path)
    assert found_key == key
    assert reason in found_reason
    with pytest.raises(InvalidConfig, match=re.escape(f"{path}: {key}: ")):
        Config.load(path, environ={})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: loud\nbogus: 1\ningest: {dedupe_window: x}\n")
    keys = sorted(key for _, key, _ in problems(path, environ={}))
    assert keys == ["bogus", "ingest.dedupe_window", "log_level"]


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("a: [1,\n", "line 2", "invalid YAML"),
        ("a: 1\na: 2\n", "line 2", "duplicate key"),
        ("- a\n- b\n", "<root>", "expected a mapping, got list"),
        ("!!python/object:os.system x\n", "line 1", "invalid YAML"),
    ],
)
def test_broken_files(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    [(source, found_key, found_reason)] = problems(path, environ={})
    assert (source, found_key) == (str(path), key)
    assert reason in found_reason


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    [(source, key, reason)] = problems(path, environ={})
    assert (source, key) == (str(path), "<file>")
    assert "cannot read" in reason


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "receivers: {grpc: {endpoint: '127.0.0.1:1001'}}\ndata_dir: from-file\n")
    environ = {
        "TOLLMETER_GRPC_ENDPOINT": "127.0.0.1:2002",
        "TOLLMETER_DATA_DIR": "from-env",
        "TOLLMETER_HTTP_ENDPOINT": "",  # empty counts as unset
    }
    config = Config.load(path, environ=environ)
    assert config.receivers.grpc.endpoint.port == 2002
    assert config.data_dir == Path("from-env")
    assert config.receivers.http.endpoint.port == 4318
    config = Config.load(
        path, environ=environ, overrides={"receivers.grpc.endpoint": "127.0.0.1:3003"}
    )
    assert config.receivers.grpc.endpoint.port == 3003
    assert config.data_dir == Path("from-env")
    assert Config.load(path, environ={}).receivers.grpc.endpoint.port == 1001


def test_an_ingest_key_marked_internal(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "management:\n  ingest_keys:\n    k1: acme\n    k2: {internal: true}\n"
        "    k3: {tenant: acme, internal: true}\n    k4: {tenant: globex}\n",
    )
    management = Config.load(path, environ={}).management
    assert dict(management.ingest_keys) == {"k1": "acme", "k2": None, "k3": "acme", "k4": "globex"}
    assert management.internal_keys == ("k2", "k3")
    bad = write(
        tmp_path,
        "management:\n  ingest_keys:\n    k1: {tenant: 3, internal: maybe}\n    k2: {owner: x}\n",
    )
    assert [key for _, key, _ in problems(bad, environ={})] == [
        "management.ingest_keys[0].tenant",
        "management.ingest_keys[0].internal",
        "management.ingest_keys[1].owner",
    ]


def test_environment_lists_and_keys() -> None:
    config = Config.load(
        None,
        environ={
            "TOLLMETER_ADMIN_KEYS": "one, two",
            "TOLLMETER_INGEST_KEYS": "k1=tenant-a, k2",
            "TOLLMETER_DEDUPE_WINDOW": "36h",
            "TOLLMETER_DEFAULT_TENANT": "nobody",
            "TOLLMETER_STORAGE_URL": "memory://",
        },
    )
    assert config.management.admin_keys == ("one", "two")
    assert dict(config.management.ingest_keys) == {"k1": "tenant-a", "k2": None}
    assert config.ingest.dedupe_window == 36 * 3600
    assert config.ingest.default_tenant == "nobody"
    assert config.storage_url == "memory://"


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "ingest: {default_tenant: t}\n")
    found = problems(path, environ={"TOLLMETER_MANAGEMENT_ENDPOINT": "localhost"})
    assert found == [
        (
            "environment variable TOLLMETER_MANAGEMENT_ENDPOINT",
            "management.endpoint",
            "expected 'host:port' with a port from 0 to 65535, got 'localhost'",
        )
    ]
    found = problems(None, environ={}, overrides={"shutdown_grace": "forever"})
    assert found[0][:2] == ("command line", "shutdown_grace")


def test_from_mapping_for_tests_and_features() -> None:
    config = Config.from_mapping({"receivers": {"grpc": {"endpoint": "127.0.0.1:0"}}})
    assert config.receivers.grpc.endpoint == Endpoint("127.0.0.1", 0)
    with pytest.raises(InvalidConfig, match=r"receivers\.grpc\.port: unknown key"):
        Config.from_mapping({"receivers": {"grpc": {"port": 1}}})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("1.5s", 1.5),
        (3, 3.0),
        (0, 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    [
        *("", "5", "5 sec", "-1s", "1e3s", True, None, [], "nan s"),
        *(float("nan"), float("inf"), "9" * 30 + "d", 10**20, 10**400),
    ],
)
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4MiB", 4 * 1024**2),
        ("512KiB", 512 * 1024),
        ("1GB", 10**9),
        ("10KB", 10_000),
        ("100", 100),
        (100, 100),
        ("2 MiB", 2 * 1024**2),
        ("1B", 1),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["4mb", "MiB", "-1", 0, True, 1.5, "1 TiB"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "endpoint", "loopback"),
    [
        ("127.0.0.1:4317", Endpoint("127.0.0.1", 4317), True),
        ("localhost:0", Endpoint("localhost", 0), True),
        ("[::1]:80", Endpoint("::1", 80), True),
        ("0.0.0.0:4317", Endpoint("0.0.0.0", 4317), False),
        ("collector.internal:4317", Endpoint("collector.internal", 4317), False),
    ],
)
def test_endpoints(text: str, endpoint: Endpoint, loopback: bool) -> None:
    assert parse_endpoint(text) == endpoint
    assert endpoint.is_loopback is loopback


@pytest.mark.parametrize("bad", ["4317", ":4317", "host:", "host:port", "host:-1", 4317, None])
def test_bad_endpoints(bad: object) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_endpoint(bad)


@dataclass(frozen=True)
class GreetingConfig:
    """A feature's section, declared the way features plug into Config."""

    text: str = "hello"

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> GreetingConfig:
        if mapping == "legacy":
            raise ConfigurationError("the legacy form is gone")
        section = Section(mapping, path)
        config = cls(text=section.string("text", cls.text))
        section.finish()
        return config


@dataclass(frozen=True)
class ExtendedConfig(Config):
    greeting: GreetingConfig = field(default_factory=GreetingConfig)


def test_a_feature_section_plugs_in_with_one_field(tmp_path: Path) -> None:
    assert ExtendedConfig.load(None, environ={}).greeting == GreetingConfig()
    path = write(tmp_path, "greeting: {text: hi}\n")
    assert ExtendedConfig.load(path, environ={}).greeting.text == "hi"
    path = write(tmp_path, "greeting: {txt: hi}\n")
    assert problems_of(ExtendedConfig, path) == [(str(path), "greeting.txt", "unknown key")]
    path = write(tmp_path, "greeting: legacy\nlog_level: loud\n")
    assert problems_of(ExtendedConfig, path) == [
        (str(path), "log_level", "expected one of"),
        (str(path), "greeting", "the legacy form is gone"),
    ]


def problems_of(cls: type[Config], path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(InvalidConfig) as info:
        cls.load(path, environ={})
    return [
        (p.source, p.key, p.reason.split(" (")[0].split(" debug")[0]) for p in info.value.problems
    ]
