"""Every ``TOLLMETER_*`` environment variable the collector and its CLI read.

One table, one place: each variable names the configuration key it overrides
(``key``), its documented default and how its text is parsed (``kind``).
Precedence is command-line flag > environment variable > configuration file >
default. ``docs/configuration.md`` lists the same table; a test keeps them in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ADMIN_KEY",
    "ADMIN_KEYS",
    "BODY_TIMEOUT",
    "COLLECTOR_ID",
    "CONFIG",
    "DATA_DIR",
    "DEDUPE_WINDOW",
    "DEFAULT_TENANT",
    "GRPC_ENDPOINT",
    "HEADER_TIMEOUT",
    "HTTP_ENDPOINT",
    "IDLE_TIMEOUT",
    "INGEST_KEYS",
    "LOG_LEVEL",
    "MANAGEMENT_ENDPOINT",
    "MAX_CONNECTIONS",
    "SETTINGS",
    "SHUTDOWN_GRACE",
    "STORAGE_URL",
    "TLS_CERT_FILE",
    "TLS_CLIENT_CA_FILE",
    "TLS_KEY_FILE",
    "URL",
    "Setting",
    "environment_overrides",
]

SettingKind = Literal["text", "list", "keymap"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable.

    ``key`` is the dotted configuration key it overrides, or ``None`` for
    variables read by a CLI command only. ``kind`` says how the text is parsed:
    ``text`` as is, ``list`` comma-separated, ``keymap`` comma-separated
    ``key`` or ``key=tenant`` items.
    """

    name: str
    default: str | None
    doc: str
    key: str | None = None
    kind: SettingKind = "text"


CONFIG = Setting("TOLLMETER_CONFIG", None, "YAML configuration file to load.")
COLLECTOR_ID = Setting(
    "TOLLMETER_COLLECTOR_ID",
    None,
    "Identifier written on every usage event (default: the host name).",
    key="collector_id",
)
DATA_DIR = Setting(
    "TOLLMETER_DATA_DIR", "./tollmeter-data", "Directory for the ledger.", key="data_dir"
)
STORAGE_URL = Setting(
    "TOLLMETER_STORAGE_URL",
    None,
    "Ledger URL (default: sqlite:///<data_dir>/ledger.db).",
    key="storage.url",
)
GRPC_ENDPOINT = Setting(
    "TOLLMETER_GRPC_ENDPOINT",
    "127.0.0.1:4317",
    "OTLP/gRPC listen address.",
    key="receivers.grpc.endpoint",
)
HTTP_ENDPOINT = Setting(
    "TOLLMETER_HTTP_ENDPOINT",
    "127.0.0.1:4318",
    "OTLP/HTTP listen address.",
    key="receivers.http.endpoint",
)
MANAGEMENT_ENDPOINT = Setting(
    "TOLLMETER_MANAGEMENT_ENDPOINT",
    "127.0.0.1:4319",
    "Management API listen address.",
    key="management.endpoint",
)
ADMIN_KEYS = Setting(
    "TOLLMETER_ADMIN_KEYS",
    None,
    "Comma-separated keys accepted as 'Authorization: Bearer' on /api/v1/*.",
    key="management.admin_keys",
    kind="list",
)
INGEST_KEYS = Setting(
    "TOLLMETER_INGEST_KEYS",
    None,
    "Comma-separated ingest keys, each 'key' (any tenant) or 'key=tenant' (bound).",
    key="management.ingest_keys",
    kind="keymap",
)
HEADER_TIMEOUT = Setting(
    "TOLLMETER_HEADER_TIMEOUT",
    "10s",
    "Every port: time for a request's headers to arrive (gRPC: the handshake).",
    key="server.header_timeout",
)
BODY_TIMEOUT = Setting(
    "TOLLMETER_BODY_TIMEOUT",
    "60s",
    "Every port: time for a request's body to arrive after its headers.",
    key="server.body_timeout",
)
IDLE_TIMEOUT = Setting(
    "TOLLMETER_IDLE_TIMEOUT",
    "60s",
    "Every port: an idle keep-alive connection is closed after this long.",
    key="server.idle_timeout",
)
MAX_CONNECTIONS = Setting(
    "TOLLMETER_MAX_CONNECTIONS",
    "1000",
    "Every port: open connections allowed; more are refused.",
    key="server.max_connections",
)
TLS_CERT_FILE = Setting(
    "TOLLMETER_TLS_CERT_FILE",
    None,
    "PEM server certificate (chain): turns on TLS on every port.",
    key="server.tls.cert_file",
)
TLS_KEY_FILE = Setting(
    "TOLLMETER_TLS_KEY_FILE",
    None,
    "PEM private key of the server certificate.",
    key="server.tls.key_file",
)
TLS_CLIENT_CA_FILE = Setting(
    "TOLLMETER_TLS_CLIENT_CA_FILE",
    None,
    "PEM CA bundle: clients must present a certificate it signed (mutual TLS).",
    key="server.tls.client_ca_file",
)
DEFAULT_TENANT = Setting(
    "TOLLMETER_DEFAULT_TENANT",
    "unknown",
    "Tenant of usage that names none.",
    key="ingest.default_tenant",
)
DEDUPE_WINDOW = Setting(
    "TOLLMETER_DEDUPE_WINDOW",
    "7d",
    "How long a reported call is remembered to drop repeats.",
    key="ingest.dedupe_window",
)
SHUTDOWN_GRACE = Setting(
    "TOLLMETER_SHUTDOWN_GRACE",
    "10s",
    "How long a graceful shutdown waits for pending spans to commit.",
    key="shutdown_grace",
)
LOG_LEVEL = Setting(
    "TOLLMETER_LOG_LEVEL", "info", "Log level of the collector process.", key="log_level"
)
URL = Setting(
    "TOLLMETER_URL",
    "http://127.0.0.1:4319",
    "Management API queried by 'tollmeter usage'.",
)
ADMIN_KEY = Setting(
    "TOLLMETER_ADMIN_KEY",
    None,
    "Admin key sent by 'tollmeter usage' as 'Authorization: Bearer'.",
)

SETTINGS: tuple[Setting, ...] = (
    CONFIG,
    COLLECTOR_ID,
    DATA_DIR,
    STORAGE_URL,
    GRPC_ENDPOINT,
    HTTP_ENDPOINT,
    MANAGEMENT_ENDPOINT,
    ADMIN_KEYS,
    INGEST_KEYS,
    HEADER_TIMEOUT,
    BODY_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TLS_CLIENT_CA_FILE,
    DEFAULT_TENANT,
    DEDUPE_WINDOW,
    SHUTDOWN_GRACE,
    LOG_LEVEL,
    URL,
    ADMIN_KEY,
)


def _parse(setting: Setting, text: str) -> object:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if setting.kind == "list":
        return items
    if setting.kind == "keymap":
        keymap: dict[str, str | None] = {}
        for item in items:
            key, sep, tenant = item.partition("=")
            keymap[key.strip()] = tenant.strip() if sep else None
        return keymap
    return text


def environment_overrides(environ: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    """Configuration overrides found in ``environ``: ``{key: (value, source)}``.

    Empty variables are ignored, as if unset.
    """
    overrides: dict[str, tuple[object, str]] = {}
    for setting in SETTINGS:
        text = environ.get(setting.name, "")
        if setting.key is not None and text.strip():
            overrides[setting.key] = (
                _parse(setting, text),
                f"environment variable {setting.name}",
            )
    return overrides
