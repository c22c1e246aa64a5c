"""The collector's typed configuration.

``Config`` is cheap to build and does nothing by itself; ``Collector(config)``
acts on it. It comes from YAML (:meth:`Config.load`), overridden by
``TOLLMETER_*`` environment variables and command-line flags with the
precedence flag > environment > file > default. Every section is optional:
``Config()`` is a working collector with SQLite in ``./tollmeter-data``
listening on 127.0.0.1.

A feature adds its own section by declaring a frozen dataclass with a
``from_mapping(mapping, path)`` classmethod (parsing with
:class:`~tollmeter.collector._config_values.Section`) and one field of that
type on :class:`Config`; the loader finds it by its type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from tollmeter.collector._auth import DIGEST_PREFIX, is_key_digest
from tollmeter.collector._config_values import ConfigProblem, Endpoint, Problems, Section
from tollmeter.collector._edge_config import ServerConfig, TlsConfig
from tollmeter.collector._organisations import OrganisationsConfig
from tollmeter.collector._retention import RetentionConfig
from tollmeter.collector._settings import environment_overrides
from tollmeter.collector.billing._config import ReconciliationConfig
from tollmeter.collector.errors import InvalidConfig, InvalidSetting
from tollmeter.collector.export._config import ExportConfig
from tollmeter.collector.forward._config import ForwardConfig
from tollmeter.collector.grants._config import GrantsConfig
from tollmeter.collector.limits._config import HooksConfig, LimitsConfig
from tollmeter.collector.limits._plans import PlansConfig, name_clashes
from tollmeter.collector.observability._config import MetricsConfig
from tollmeter.collector.pricing._config import PricingConfig
from tollmeter.semconv.errors import ConfigurationError

__all__ = [
    "Config",
    "GrpcReceiverConfig",
    "HttpReceiverConfig",
    "IngestConfig",
    "LogLevel",
    "ManagementConfig",
    "ReceiversConfig",
    "ServerConfig",
    "StorageConfig",
    "TlsConfig",
]

LogLevel = Literal["debug", "info", "warning", "error"]
_LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
_MIB = 1024 * 1024
_GRPC_ENDPOINT = Endpoint("127.0.0.1", 4317)
_HTTP_ENDPOINT = Endpoint("127.0.0.1", 4318)
_MANAGEMENT_ENDPOINT = Endpoint("127.0.0.1", 4319)


@dataclass(frozen=True)
class GrpcReceiverConfig:
    """OTLP/gRPC receiver: ``max_message_bytes`` larger requests get RESOURCE_EXHAUSTED."""

    enabled: bool = True
    endpoint: Endpoint = _GRPC_ENDPOINT
    max_message_bytes: int = 4 * _MIB

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> GrpcReceiverConfig:
        section = Section(mapping, path)
        config = cls(
            enabled=section.boolean("enabled", cls.enabled),
            endpoint=section.endpoint("endpoint", cls.endpoint),
            max_message_bytes=section.size("max_message_bytes", cls.max_message_bytes),
        )
        section.finish()
        return config


@dataclass(frozen=True)
class HttpReceiverConfig:
    """OTLP/HTTP receiver: bodies over ``max_body_bytes`` (after gzip) get 413."""

    enabled: bool = True
    endpoint: Endpoint = _HTTP_ENDPOINT
    max_body_bytes: int = 4 * _MIB

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> HttpReceiverConfig:
        section = Section(mapping, path)
        config = cls(
            enabled=section.boolean("enabled", cls.enabled),
            endpoint=section.endpoint("endpoint", cls.endpoint),
            max_body_bytes=section.size("max_body_bytes", cls.max_body_bytes),
        )
        section.finish()
        return config


@dataclass(frozen=True)
class ReceiversConfig:
    grpc: GrpcReceiverConfig = field(default_factory=GrpcReceiverConfig)
    http: HttpReceiverConfig = field(default_factory=HttpReceiverConfig)

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ReceiversConfig:
        section = Section(mapping, path)
        config = cls(
            grpc=GrpcReceiverConfig.from_mapping(section.raw("grpc"), section.key("grpc")),
            http=HttpReceiverConfig.from_mapping(section.raw("http"), section.key("http")),
        )
        section.finish()
        return config


@dataclass(frozen=True)
class StorageConfig:
    """Ledger location (``None`` means ``sqlite:///<data_dir>/ledger.db``) and how long
    raw events are kept."""

    url: str | None = None
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> StorageConfig:
        section = Section(mapping, path)
        config = cls(
            url=section.optional_string("url"),
            retention=RetentionConfig.from_mapping(
                section.raw("retention"), section.key("retention")
            ),
        )
        section.finish()
        return config


@dataclass(frozen=True)
class IngestConfig:
    """How spans become usage events.

    ``tenant_attributes`` are the fallback attributes tried, in order, when a
    span names no tenant; ``default_tenant`` is the last resort.
    ``max_pending_spans`` bounds the queue in front of the ledger: beyond it,
    receivers answer UNAVAILABLE/503 so that exporters retry.
    ``internal_environments`` mark the usage of those environments internal (see
    ``Extractor``).
    """

    dedupe_window: float = 7 * 86400.0
    tenant_attributes: tuple[str, ...] = ()
    default_tenant: str = "unknown"
    max_pending_spans: int = 100_000
    commit_interval: float = 0.005
    internal_environments: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> IngestConfig:
        section = Section(mapping, path)
        config = cls(
            dedupe_window=section.duration("dedupe_window", cls.dedupe_window),
            tenant_attributes=section.string_list("tenant_attributes"),
            default_tenant=section.string("default_tenant", cls.default_tenant),
            max_pending_spans=section.integer(
                "max_pending_spans", cls.max_pending_spans, minimum=1
            ),
            commit_interval=section.duration("commit_interval", cls.commit_interval),
            internal_environments=section.string_list("internal_environments"),
        )
        section.finish()
        return config


@dataclass(frozen=True)
class ManagementConfig:
    """Management API and keys.

    Once any key of either kind is set, the admin-only ``/api/v1/*`` routes need one of
    ``admin_keys`` (with ingest keys only, they are closed to everyone). ``ingest_keys`` map an
    ingest key to the tenant it is bound to, or to ``None`` for any tenant;
    when any is set, OTLP requests without a known key are refused. Either kind
    may be written as its digest, ``sha256:<64 hex digits>``. An ingest key written
    ``{tenant: ..., internal: true}`` is in ``internal_keys``: all usage sent or checked
    with it is internal.
    """

    enabled: bool = True
    endpoint: Endpoint = _MANAGEMENT_ENDPOINT
    admin_keys: tuple[str, ...] = ()
    ingest_keys: Mapping[str, str | None] = field(default_factory=dict)
    internal_keys: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ManagementConfig:
        section = Section(mapping, path)
        ingest_keys, internal_keys = _ingest_keys(section)
        config = cls(
            enabled=section.boolean("enabled", cls.enabled),
            endpoint=section.endpoint("endpoint", cls.endpoint),
            admin_keys=section.string_list("admin_keys"),
            ingest_keys=ingest_keys,
            internal_keys=internal_keys,
        )
        for name, keys in (("admin_keys", config.admin_keys), ("ingest_keys", config.ingest_keys)):
            for key in keys:
                if key.startswith(DIGEST_PREFIX) and not is_key_digest(key):
                    # The key itself is never echoed: it may be a secret with a typo.
                    raise section.error(
                        name, f"a key written '{DIGEST_PREFIX}...' needs 64 hex digits after it"
                    )
        section.finish()
        return config


def _ingest_keys(section: Section) -> tuple[dict[str, str | None], tuple[str, ...]]:
    """``ingest_keys``: each key's tenant (a string, or null for any), or a mapping with
    ``tenant`` and ``internal``; returns the tenants and the internal keys. Every problem
    of the entries is reported at once."""
    raw = section.raw("ingest_keys")
    if not isinstance(raw, Mapping):
        return section.string_map("ingest_keys"), ()
    problems = Problems()
    tenants: dict[str, str | None] = {}
    with problems.collect():
        plain = {key: value for key, value in raw.items() if not isinstance(value, Mapping)}
        tenants = Section({"ingest_keys": plain}, section.path).string_map("ingest_keys")
    internal: list[str] = []
    for index, (key, value) in enumerate(raw.items()):
        if not isinstance(value, Mapping):
            continue
        with problems.collect():
            if not isinstance(key, str) or not key.strip():
                raise section.error("ingest_keys", f"keys must be non-empty strings, got {key!r}")
            # Named by position: the key itself may be a secret.
            entry = Section(value, f"{section.key('ingest_keys')}[{index}]")
            with problems.collect():
                tenants[key] = entry.optional_string("tenant")
            with problems.collect():
                if entry.boolean("internal", False):
                    internal.append(key)
            entry.finish()
    problems.raise_any()
    return {key: tenants[key] for key in raw}, tuple(internal)


@dataclass(frozen=True)
class Config:
    """Everything the collector needs to run; see ``docs/configuration.md``."""

    collector_id: str = field(default_factory=socket.gethostname)
    data_dir: Path = Path("tollmeter-data")
    shutdown_grace: float = 10.0
    log_level: LogLevel = "info"
    storage: StorageConfig = field(default_factory=StorageConfig)
    receivers: ReceiversConfig = field(default_factory=ReceiversConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    management: ManagementConfig = field(default_factory=ManagementConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    organisations: OrganisationsConfig = field(default_factory=OrganisationsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    plans: PlansConfig = field(default_factory=PlansConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    reconciliation: ReconciliationConfig = field(default_factory=ReconciliationConfig)
    grants: GrantsConfig = field(default_factory=GrantsConfig)

    @property
    def storage_url(self) -> str:
        return self.storage.url or f"sqlite:///{(self.data_dir / 'ledger.db').as_posix()}"

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "") -> Config:
        """Parse a whole configuration; raises :class:`InvalidSetting` (first
        problem) or :class:`InvalidConfig` (several)."""
        found: list[ConfigProblem] = []
        with _collect(found):
            root = Section(mapping, path)
        if found:
            raise InvalidConfig(found)
        values: dict[str, object] = {}
        with _collect(found):
            values["collector_id"] = root.string("collector_id", socket.gethostname())
        with _collect(found):
            values["data_dir"] = Path(root.string("data_dir", str(cls.data_dir)))
        with _collect(found):
            values["shutdown_grace"] = root.duration("shutdown_grace", 10.0)
        with _collect(found):
            values["log_level"] = root.choice("log_level", "info", _LOG_LEVELS)
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            parse = getattr(hints[item.name], "from_mapping", None)
            if parse is not None:
                with _collect(found, section=root.key(item.name)):
                    values[item.name] = parse(root.raw(item.name), root.key(item.name))
        with _collect(found):
            root.finish()
        limits, plans = values.get("limits"), values.get("plans")
        if isinstance(limits, LimitsConfig) and isinstance(plans, PlansConfig):
            found.extend(
                ConfigProblem("", key, reason)
                for key, reason in name_clashes(limits, plans, root.key("limits"))
            )
        storage, export = values.get("storage"), values.get("export")
        if (
            isinstance(storage, StorageConfig)
            and storage.retention.events is not None
            and isinstance(export, ExportConfig)
            and not export.enabled
        ):
            # The Parquet files are the only copy of what retention prunes.
            found.append(
                ConfigProblem(
                    "", "storage.retention.events", "needs the export enabled (export.enabled)"
                )
            )
        if found:
            raise InvalidConfig(found)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> Config:
        """Read ``path`` (optional), then apply ``environ``'s ``TOLLMETER_*``
        variables, then ``overrides`` (dotted keys, from command-line flags).

        Raises :class:`InvalidConfig`, whose message and ``problems`` name the
        file (or variable, or flag), the key and the reason.
        """
        file_source = str(path) if path is not None else "defaults"
        mapping: dict[str, object] = _read_yaml(Path(path)) if path is not None else {}
        sources: dict[str, str] = {}
        layered = dict(environment_overrides(environ or {}))
        for key, value in (overrides or {}).items():
            layered[key] = (value, "command line")
        for key, (value, source) in layered.items():
            _set_path(mapping, key, value)
            sources[key] = source
        try:
            return cls.from_mapping(mapping)
        except InvalidConfig as exc:
            problems = exc.problems
        except InvalidSetting as exc:
            problems = (ConfigProblem("", exc.key, exc.reason),)
        raise InvalidConfig(
            [
                problem._replace(source=_source_of(problem.key, sources, file_source))
                for problem in problems
            ]
        )


@contextlib.contextmanager
def _collect(found: list[ConfigProblem], *, section: str = "<root>") -> Iterator[None]:
    """Record a rejected value instead of stopping at it. A section that reports a
    plain ``ConfigurationError`` is blamed as a whole."""
    try:
        yield
    except InvalidSetting as exc:
        found.append(ConfigProblem("", exc.key, exc.reason))
    except InvalidConfig as exc:
        found.extend(exc.problems)
    except ConfigurationError as exc:
        found.append(ConfigProblem("", section, str(exc)))


def _source_of(key: str, sources: Mapping[str, str], default: str) -> str:
    best = ""
    for overridden in sources:
        if (key == overridden or key.startswith(overridden + ".")) and len(overridden) > len(best):
            best = overridden
    return sources[best] if best else default


def _set_path(mapping: dict[str, object], dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = mapping
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            child = {}
            node[name] = child
        node = child
    node[leaf] = value


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that rejects a key written twice instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfig([ConfigProblem(str(path), "<file>", f"cannot read: {exc}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<file>"
        reason = getattr(exc, "problem", None) or str(exc)
        raise InvalidConfig([ConfigProblem(str(path), where, f"invalid YAML: {reason}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidConfig(
            [ConfigProblem(str(path), "<root>", f"expected a mapping, got {type(data).__name__}")]
        )
    return data
