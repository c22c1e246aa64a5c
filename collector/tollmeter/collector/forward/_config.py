"""The ``forward:`` configuration section: where received OTLP is passed on.

Example::

    forward:
      - name: jaeger
        protocol: grpc                 # grpc | http/protobuf
        endpoint: jaeger:4317          # host:port for grpc, a base URL for http/protobuf
        tls: {insecure: true}          # or {ca_file: /etc/ssl/ca.pem}
        headers: {authorization: "Bearer ..."}
        compression: gzip              # gzip | none
        signals: [traces]              # default: traces, metrics and logs
        queue_size: 1000               # requests waiting per exporter
        queue_bytes: 64MiB             # and their total size
        drop_policy: drop_oldest       # drop_oldest | drop_newest, when the queue is full
        timeout: 10s                   # one send attempt
        batch: {max_requests: 64, max_bytes: 4MiB, delay: 200ms}
        retry: {initial_backoff: 1s, max_backoff: 30s, max_elapsed: 5m}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from tollmeter.collector._config_values import Section, parse_endpoint
from tollmeter.collector.errors import InvalidSetting

__all__ = [
    "SIGNAL_NAMES",
    "DropPolicy",
    "ExporterConfig",
    "ForwardBatch",
    "ForwardConfig",
    "ForwardRetry",
    "ForwardTls",
    "Protocol",
    "Signal",
    "SignalSink",
]

Protocol = Literal["grpc", "http/protobuf"]
DropPolicy = Literal["drop_oldest", "drop_newest"]
Compression = Literal["gzip", "none"]
Signal = Literal["traces", "metrics", "logs"]
SignalSink = Callable[[Signal, bytes], None]
"""Receives each accepted OTLP request as protobuf bytes; the receivers' ``signal_sink``."""

_PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
_POLICIES: tuple[DropPolicy, ...] = ("drop_oldest", "drop_newest")
_COMPRESSIONS: tuple[Compression, ...] = ("gzip", "none")
SIGNAL_NAMES: tuple[Signal, ...] = ("traces", "metrics", "logs")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ForwardTls:
    """gRPC: ``insecure`` sends in clear text, otherwise TLS. HTTP: the endpoint's
    scheme decides. TLS servers are verified with ``ca_file`` or the system roots."""

    insecure: bool = False
    ca_file: Path | None = None

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ForwardTls:
        section = Section(mapping, path)
        ca_file = section.optional_string("ca_file")
        config = cls(
            insecure=section.boolean("insecure", cls.insecure),
            ca_file=Path(ca_file) if ca_file is not None else None,
        )
        if config.insecure and config.ca_file is not None:
            raise section.error("ca_file", "cannot be combined with insecure: true")
        section.finish()
        return config


@dataclass(frozen=True)
class ForwardBatch:
    """A batch leaves when it holds ``max_requests`` or ``max_bytes``, or ``delay`` after
    its first request."""

    max_requests: int = 64
    max_bytes: int = 4 * _MIB
    delay_s: float = 0.2

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ForwardBatch:
        section = Section(mapping, path)
        config = cls(
            max_requests=section.integer("max_requests", cls.max_requests, minimum=1),
            max_bytes=section.size("max_bytes", cls.max_bytes),
            delay_s=section.duration("delay", cls.delay_s),
        )
        section.finish()
        return config


@dataclass(frozen=True)
class ForwardRetry:
    """Exponential backoff with jitter from ``initial_backoff`` up to ``max_backoff``;
    a batch is dropped once ``max_elapsed`` has passed since its first attempt."""

    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_elapsed_s: float = 300.0

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ForwardRetry:
        section = Section(mapping, path)
        config = cls(
            initial_backoff_s=section.duration(
                "initial_backoff", cls.initial_backoff_s, positive=True
            ),
            max_backoff_s=section.duration("max_backoff", cls.max_backoff_s, positive=True),
            max_elapsed_s=section.duration("max_elapsed", cls.max_elapsed_s),
        )
        if config.max_backoff_s < config.initial_backoff_s:
            raise section.error("max_backoff", "must not be below initial_backoff")
        section.finish()
        return config


@dataclass(frozen=True)
class ExporterConfig:
    """One downstream OTLP receiver (Jaeger, Tempo, another collector...)."""

    name: str
    protocol: Protocol
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    tls: ForwardTls = field(default_factory=ForwardTls)
    compression: Compression = "none"
    signals: tuple[Signal, ...] = SIGNAL_NAMES
    queue_size: int = 1000
    queue_bytes: int = 64 * _MIB
    drop_policy: DropPolicy = "drop_oldest"
    timeout_s: float = 10.0
    batch: ForwardBatch = field(default_factory=ForwardBatch)
    retry: ForwardRetry = field(default_factory=ForwardRetry)

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ExporterConfig:
        section = Section(mapping, path)
        name = section.optional_string("name")
        if name is None:
            raise section.error("name", "every exporter needs a name")
        protocol = section.choice("protocol", "grpc", _PROTOCOLS)
        endpoint = section.optional_string("endpoint")
        if endpoint is None:
            raise section.error("endpoint", "every exporter needs an endpoint")
        _check_endpoint(section, protocol, endpoint)
        headers: dict[str, str] = {}
        for key, value in section.string_map("headers").items():
            if value is None:
                raise InvalidSetting(f"{section.key('headers')}.{key}", "expected a string")
            headers[key.lower()] = value
        signals = section.string_list("signals", SIGNAL_NAMES)
        unknown = [signal for signal in signals if signal not in SIGNAL_NAMES]
        if unknown or not signals:
            raise section.error("signals", f"expected some of {', '.join(SIGNAL_NAMES)}")
        config = cls(
            name=name,
            protocol=protocol,
            endpoint=endpoint,
            headers=headers,
            tls=ForwardTls.from_mapping(section.raw("tls"), section.key("tls")),
            compression=section.choice("compression", "none", _COMPRESSIONS),
            signals=tuple(s for s in SIGNAL_NAMES if s in signals),
            queue_size=section.integer("queue_size", cls.queue_size, minimum=1),
            queue_bytes=section.size("queue_bytes", cls.queue_bytes),
            drop_policy=section.choice("drop_policy", "drop_oldest", _POLICIES),
            timeout_s=section.duration("timeout", cls.timeout_s, positive=True),
            batch=ForwardBatch.from_mapping(section.raw("batch"), section.key("batch")),
            retry=ForwardRetry.from_mapping(section.raw("retry"), section.key("retry")),
        )
        section.finish()
        return config


def _check_endpoint(section: Section, protocol: Protocol, endpoint: str) -> None:
    if protocol == "grpc":
        if "://" in endpoint:
            raise section.error(
                "endpoint", f"expected host:port for grpc (TLS is set by tls:), got {endpoint!r}"
            )
        try:
            parse_endpoint(endpoint)
        except ValueError as exc:
            raise section.error("endpoint", str(exc)) from None
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise section.error("endpoint", f"expected an http(s) URL, got {endpoint!r}")


@dataclass(frozen=True)
class ForwardConfig:
    """The ``forward:`` list; empty forwards nothing."""

    exporters: tuple[ExporterConfig, ...] = ()

    @classmethod
    def from_mapping(cls, value: object, path: str = "forward") -> ForwardConfig:
        if value is None:
            return cls()
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise InvalidSetting(path, "expected a list of exporters")
        exporters = tuple(
            ExporterConfig.from_mapping(item, f"{path}[{index}]")
            for index, item in enumerate(value)
        )
        names = [exporter.name for exporter in exporters]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise InvalidSetting(f"{path}[{index}].name", f"duplicate exporter name {name!r}")
        return cls(exporters=exporters)
