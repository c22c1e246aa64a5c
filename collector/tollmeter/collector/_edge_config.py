"""The ``server`` configuration section: what every listening port shares.

The OTLP/gRPC and OTLP/HTTP receivers and the management API all apply the
same timeouts, connection cap and TLS settings, so one section configures the
collector's whole edge. How each protocol enforces them is described in
``docs/security.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tollmeter.collector._config_values import Section

__all__ = ["ServerConfig", "TlsConfig"]


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate and, for mutual TLS, the CA bundle client certificates must chain to.

    TLS is on when ``cert_file`` is set. ``key_file`` may be left out when the
    certificate file also holds the private key. With ``client_ca_file`` set,
    a client without a certificate signed by one of its CAs is refused.
    """

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> TlsConfig:
        section = Section(mapping, path)
        files: dict[str, Path | None] = {}
        for name in ("cert_file", "key_file", "client_ca_file"):
            text = section.optional_string(name)
            if text is not None and not Path(text).is_file():
                raise section.error(name, f"no such file: {text}")
            files[name] = None if text is None else Path(text)
        if files["cert_file"] is None:
            for name in ("key_file", "client_ca_file"):
                if files[name] is not None:
                    raise section.error(name, "needs tls.cert_file (the server certificate)")
        section.finish()
        return cls(**files)


@dataclass(frozen=True)
class ServerConfig:
    """Limits on every listening port, so that slow or idle clients cannot hold it.

    ``header_timeout``: a request's headers must arrive in full within this
    time of the connection opening, or of the request's first byte on a reused
    connection (for gRPC: the TLS and HTTP/2 handshake). ``body_timeout``: its
    body must then arrive within this time. ``idle_timeout``: a connection with
    no request in progress is closed after this long. ``max_connections``: open
    connections per port; beyond it HTTP answers 503 and closes, gRPC refuses.
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_connections: int = 1000
    tls: TlsConfig = field(default_factory=TlsConfig)

    @classmethod
    def from_mapping(cls, mapping: object, path: str) -> ServerConfig:
        section = Section(mapping, path)
        config = cls(
            header_timeout=section.duration("header_timeout", cls.header_timeout, positive=True),
            body_timeout=section.duration("body_timeout", cls.body_timeout, positive=True),
            idle_timeout=section.duration("idle_timeout", cls.idle_timeout, positive=True),
            max_connections=section.integer("max_connections", cls.max_connections, minimum=1),
            tls=TlsConfig.from_mapping(section.raw("tls"), section.key("tls")),
        )
        section.finish()
        return config
