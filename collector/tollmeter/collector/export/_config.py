"""The ``export:`` configuration section.

Example::

    export:
      enabled: true
      directory: ./tollmeter-data/export   # default: <data_dir>/export
      interval: 5m                         # how often the collector exports
      timezone: UTC                        # of the date=YYYY-MM-DD partitions
      batch_size: 100000                   # events per read; bounds memory
      row_group_size: 100000
      compression_level: 3                 # zstd, 1..22
      timeout: 5m                          # longest run (and wait for a running one)

Or, to S3-compatible object storage instead of ``directory``::

    export:
      url: s3://billing-bucket/tollmeter   # bucket and optional key prefix
      s3:
        endpoint_url: https://minio.internal:9000   # default: AWS for the region
        region: eu-west-1
        access_key_id: ...         # both or neither; neither: the AWS default chain
        secret_access_key: ...     # (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, roles...)
        connect_timeout: 5s
        request_timeout: 30s
        max_attempts: 3            # per request, with the AWS SDK's backoff
"""

from __future__ import annotations

import re
import urllib.parse
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

from tollmeter.collector._config_values import Problems, Section
from tollmeter.collector.errors import InvalidSetting

__all__ = ["ExportConfig", "S3Location", "S3Settings"]

_LIMITS = {
    "batch_size": (1, 10_000_000),
    "row_group_size": (1, 10_000_000),
    "compression_level": (1, 22),
}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MAX_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://bucket/prefix``: objects go under ``prefix`` (no slashes at either end)."""

    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @classmethod
    def parse(cls, url: str, key: str) -> S3Location:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "s3":
            raise InvalidSetting(key, f"expected s3://bucket/prefix, got {url!r}")
        if not _BUCKET.match(parts.netloc) or ".." in parts.netloc:
            raise InvalidSetting(key, f"{parts.netloc!r} is not a valid S3 bucket name")
        if parts.query or parts.fragment:
            raise InvalidSetting(key, "expected s3://bucket/prefix without ? or #")
        return cls(parts.netloc, parts.path.strip("/"))


@dataclass(frozen=True)
class S3Settings:
    """Connection to S3-compatible storage. Secrets are kept out of ``repr``."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    max_attempts: int = 3

    @classmethod
    def from_section(cls, section: Section) -> S3Settings:
        problems = Problems()
        values: dict[str, object] = {}
        for name in ("endpoint_url", "region", "access_key_id", "secret_access_key"):
            with problems.collect():
                values[name] = section.optional_string(name)
        with problems.collect():
            values["session_token"] = section.optional_string("session_token")
        for name in ("connect_timeout", "request_timeout"):
            with problems.collect():
                values[f"{name}_s"] = section.duration(
                    name, getattr(cls, f"{name}_s"), positive=True
                )
        with problems.collect():
            attempts = section.integer("max_attempts", cls.max_attempts, minimum=1)
            if attempts > _MAX_ATTEMPTS:
                raise section.error("max_attempts", f"expected at most {_MAX_ATTEMPTS}")
            values["max_attempts"] = attempts
        endpoint = values.get("endpoint_url")
        if isinstance(endpoint, str):
            parts = urllib.parse.urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
                problems.add(
                    section.key("endpoint_url"),
                    f"expected http(s)://host[:port], got {endpoint!r}",
                )
        if (values.get("access_key_id") is None) != (values.get("secret_access_key") is None):
            problems.add(
                section.key("secret_access_key"),
                "access_key_id and secret_access_key go together (or leave both out "
                "to use the AWS environment variables and default credential chain)",
            )
        if values.get("session_token") is not None and values.get("access_key_id") is None:
            problems.add(section.key("session_token"), "needs access_key_id and secret_access_key")
        with problems.collect():
            section.finish()
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ExportConfig:
    """Typed ``export:`` section. ``directory`` ``None`` means ``<data_dir>/export``;
    ``s3_url`` set means object storage instead of a directory."""

    enabled: bool = True
    directory: Path | None = None
    interval_s: float = 300.0
    timezone: str = "UTC"
    batch_size: int = 100_000
    row_group_size: int = 100_000
    compression_level: int = 3
    timeout_s: float = 300.0
    s3_url: S3Location | None = None
    s3: S3Settings = field(default_factory=S3Settings)

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidSetting(
                "export.timezone", f"unknown time zone {self.timezone!r}"
            ) from None
        for name, (low, high) in _LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidSetting(f"export.{name}", f"expected an integer in [{low}, {high}]")
        for name in ("interval_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidSetting(f"export.{name.removesuffix('_s')}", "must be positive")
        if self.s3_url is not None and self.directory is not None:
            raise InvalidSetting("export.url", "set either export.url or export.directory")

    @classmethod
    def from_mapping(cls, mapping: object, path: str = "export") -> ExportConfig:
        section = Section(mapping, path)
        problems = Problems()
        values: dict[str, object] = {}
        with problems.collect():
            directory = section.optional_string("directory")
            values["directory"] = Path(directory) if directory is not None else None
        with problems.collect():
            timezone = section.string("timezone", cls.timezone)
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise section.error("timezone", f"unknown time zone {timezone!r}") from None
            values["timezone"] = timezone
        for name, (low, high) in _LIMITS.items():
            with problems.collect():
                number = section.integer(name, getattr(cls, name), minimum=low)
                if number > high:
                    raise section.error(name, f"expected at most {high}, got {number}")
                values[name] = number
        with problems.collect():
            values["enabled"] = section.boolean("enabled", cls.enabled)
        for name in ("interval", "timeout"):
            with problems.collect():
                values[f"{name}_s"] = section.duration(
                    name, getattr(cls, f"{name}_s"), positive=True
                )
        url: str | None = None
        with problems.collect():
            url = section.optional_string("url")
            if url is not None:
                values["s3_url"] = S3Location.parse(url, section.key("url"))
                if values.get("directory") is not None:
                    raise section.error("url", "set either export.url or export.directory")
        s3_given = section.raw("s3") is not None
        with problems.collect():
            values["s3"] = S3Settings.from_section(section.section("s3"))
            if s3_given and url is None:
                raise section.error("s3", "only used with export.url: s3://bucket/prefix")
        with problems.collect():
            section.finish()
        problems.raise_any()
        return cls(**values)  # type: ignore[arg-type]

    def resolve_directory(self, data_dir: Path) -> Path:
        return self.directory if self.directory is not None else data_dir / "export"
