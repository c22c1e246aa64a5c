"""Export into S3-compatible object storage through ``pyarrow.fs.S3FileSystem``.

S3 has no rename, so each file is encoded in memory and written once at its final
key: S3 makes an object visible only when its upload completes, so a reader sees
the whole file or none, and an interrupted upload leaves nothing at the key. The
size read back after the upload confirms the object is the one just written.

Every request has a connect and a request timeout and at most ``max_attempts``
tries, so no call blocks an export for long. Failures the operator must fix (the
bucket is missing, the credentials are refused, the endpoint does not answer)
become an :class:`~tollmeter.collector.errors.ExportStoreError` with one line
saying which; the exporter keeps its cursor and tries again on its next run.

Credentials come from ``export.s3`` or, when it names none, from the AWS SDK's
default chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, shared files, instance roles). They are never logged: only
the bucket, prefix and endpoint appear in messages.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from tollmeter.collector.errors import ExportStoreError
from tollmeter.collector.export._config import S3Location, S3Settings
from tollmeter.collector.export._local import DirectoryLock
from tollmeter.collector.export._store import (
    MARKER,
    ExportFile,
    ExportStore,
    StoredFile,
    parse_export_file,
)
from tollmeter.collector.export._writer import FileFormat, write_parquet

__all__ = ["S3Store", "explain_s3_error"]

# AWS SDK error names, as pyarrow spells them in its messages, and what they mean here.
_REASONS = (
    (("NO_SUCH_BUCKET",), "the bucket does not exist"),
    (
        (
            "INVALID_ACCESS_KEY_ID",
            "SIGNATURE_DOES_NOT_MATCH",
            "ACCESS_DENIED",
            "EXPIRED_TOKEN",
            "INVALID_CLIENT_TOKEN_ID",
            "UNRECOGNIZED_CLIENT",
            "MISSING_AUTHENTICATION_TOKEN",
        ),
        "the credentials were refused",
    ),
    (
        ("NETWORK_CONNECTION", "REQUEST_TIMEOUT", "curlCode", "ENDPOINT_RESOLUTION"),
        "the endpoint is unreachable",
    ),
)


def explain_s3_error(exc: BaseException, where: str) -> ExportStoreError | None:
    """The one-line error for a failure the operator must fix, ``None`` for others."""
    text = str(exc)
    for names, reason in _REASONS:
        if any(name in text for name in names):
            return ExportStoreError(f"S3 export to {where} failed: {reason}")
    return None


class S3Store(ExportStore):
    """Export files under ``s3://bucket/prefix``.

    The lock is a ``flock`` in ``lock_directory`` (the data directory), so a collector
    and ``tollmeter export`` sharing a ledger take turns.
    """

    def __init__(self, url: S3Location, settings: S3Settings, *, lock_directory: Path) -> None:
        self.location = str(url)
        self._bucket = url.bucket
        self._root = f"{url.bucket}/{url.prefix}" if url.prefix else url.bucket
        self._lock_directory = lock_directory
        self._where = self.location
        options: dict[str, object] = {
            "region": settings.region,
            "connect_timeout": settings.connect_timeout_s,
            "request_timeout": settings.request_timeout_s,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.max_attempts),
        }
        if settings.endpoint_url is not None:
            endpoint = urllib.parse.urlsplit(settings.endpoint_url)
            options["scheme"] = endpoint.scheme
            options["endpoint_override"] = endpoint.netloc
            self._where = f"{self.location} at {endpoint.scheme}://{endpoint.netloc}"
        if settings.access_key_id is not None:
            options["access_key"] = settings.access_key_id
            options["secret_key"] = settings.secret_access_key
            options["session_token"] = settings.session_token
        self._fs = pafs.S3FileSystem(**options)

    @contextmanager
    def _explained(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            explained = explain_s3_error(exc, self._where)
            if explained is None:
                raise
            raise explained from None

    def lock(self, timeout_s: float) -> DirectoryLock:
        return DirectoryLock(self._lock_directory, timeout_s=timeout_s)

    def identity(self) -> str:
        with self._explained():
            info = self._fs.get_file_info(self._bucket)
            if info.type is pafs.FileType.NotFound:
                raise ExportStoreError(
                    f"S3 export to {self._where} failed: the bucket does not exist"
                )
            try:
                with self._fs.open_input_stream(f"{self._root}/{MARKER}") as stream:
                    identity = json.loads(stream.read())["directory_id"]
                if isinstance(identity, str) and identity:
                    return identity
            except FileNotFoundError:
                pass
            except (ValueError, KeyError, TypeError):
                pass  # A damaged marker cannot vouch for the objects beside it.
            identity = secrets.token_hex(16)
            marker = {"directory_id": identity, "format": "tollmeter parquet export"}
            self._put(f"{self._root}/{MARKER}", json.dumps(marker).encode())
            return identity

    def _objects(self) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self._root, recursive=True, allow_not_found=True)
        with self._explained():
            return [
                info for info in self._fs.get_file_info(selector) if info.type is pafs.FileType.File
            ]

    def _relative(self, info: pafs.FileInfo) -> str:
        path: str = info.path
        return path[len(self._root) + 1 :]

    def export_files(self) -> list[ExportFile]:
        found = (parse_export_file(self._relative(info)) for info in self._objects())
        return [file for file in found if file is not None]

    def remove_leftovers(self) -> int:
        # Objects appear only whole: an interrupted upload leaves no object behind.
        return 0

    def delete(self, relative: str) -> None:
        with self._explained(), suppress(FileNotFoundError):
            self._fs.delete_file(f"{self._root}/{relative}")

    def write(
        self,
        relative: str,
        table: pa.Table,
        *,
        file_format: FileFormat,
        metadata: dict[str, str],
        checkpoint: Callable[[str], None],
    ) -> str:
        """Encode in memory, upload to the final key in one go, and check its size;
        ``checkpoint`` is called with ``"uploaded"`` once the object is in place."""
        sink = pa.BufferOutputStream()
        write_parquet(table, sink, file_format=file_format, metadata=metadata)
        body = sink.getvalue()
        with self._explained():
            self._put(f"{self._root}/{relative}", body)
        checkpoint("uploaded")
        return hashlib.sha256(memoryview(body)).hexdigest()

    def write_bytes(self, relative: str, data: bytes) -> None:
        with self._explained():
            self._put(f"{self._root}/{relative}", data)

    def read_bytes(self, relative: str) -> bytes | None:
        with self._explained():
            try:
                with self._fs.open_input_stream(f"{self._root}/{relative}") as stream:
                    data: bytes = stream.read()
            except FileNotFoundError:
                return None
        return data

    def _put(self, key: str, data: bytes | pa.Buffer) -> None:
        # One write of the whole body, then close() completes the upload. Should an
        # object still come out short, the size check fails the run before the cursor
        # moves, and the next run deletes and rewrites every object beyond the cursor.
        with self._fs.open_output_stream(key) as stream:
            stream.write(data)
        stored = self._fs.get_file_info(key).size
        if stored != len(data):
            raise OSError(f"S3 object {key} holds {stored} bytes after writing {len(data)}")

    def list_parquet(self, limit: int) -> tuple[list[StoredFile], bool]:
        found: list[StoredFile] = []
        for info in self._objects():
            if not info.path.endswith(".parquet"):
                continue
            if len(found) >= limit:
                return found, False
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            found.append(StoredFile(self._relative(info), info.size or 0, mtime))
        return found, True
