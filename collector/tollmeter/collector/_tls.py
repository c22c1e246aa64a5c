"""TLS for every listening port, with certificates that can be swapped while serving.

One :class:`ServerTls` serves both stacks: the HTTP listeners (uvicorn) share
one ``ssl.SSLContext``, the gRPC receiver gets dynamic credentials whose
fetcher is asked for the current certificates at each new handshake.
:meth:`ServerTls.reload` reads and checks the new files first and only then
swaps them in, so a bad file leaves the certificates in force untouched.
Connections already open keep the session they negotiated.

What a reload cannot change without a restart: turning TLS or client
certificates on or off, and forgetting a client CA that the HTTP listeners
already trust (``ssl.SSLContext`` can add CAs, never remove them).
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

import grpc

from tollmeter.collector._edge_config import TlsConfig
from tollmeter.collector.errors import TlsError

__all__ = ["ServerTls"]


@dataclass(frozen=True, slots=True)
class _Material:
    certificate: bytes
    key: bytes
    client_ca: bytes | None


def _read(config: TlsConfig) -> _Material:
    if config.cert_file is None:
        raise TlsError("TLS needs a certificate file")
    try:
        certificate = config.cert_file.read_bytes()
        key = certificate if config.key_file is None else config.key_file.read_bytes()
        client_ca = None if config.client_ca_file is None else config.client_ca_file.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read TLS files: {exc}") from None
    return _Material(certificate, key, client_ca)


def _load_into(context: ssl.SSLContext, config: TlsConfig) -> None:
    try:
        context.load_cert_chain(str(config.cert_file), config.key_file and str(config.key_file))
        if config.client_ca_file is not None:
            context.load_verify_locations(cafile=str(config.client_ca_file))
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"unusable TLS files ({config.cert_file}): {exc}") from None


def _new_context(config: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_into(context, config)
    context.verify_mode = ssl.CERT_REQUIRED if config.client_ca_file is not None else ssl.CERT_NONE
    return context


class ServerTls:
    """The TLS settings of every listener; build with a config whose ``cert_file`` is set."""

    def __init__(self, config: TlsConfig) -> None:
        self._config = config
        material = _read(config)
        self.ssl_context = _new_context(config)
        self._lock = threading.Lock()
        self._material = material
        self._grpc_served: _Material | None = None

    @property
    def client_certificates(self) -> bool:
        return self._config.client_ca_file is not None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``grpc.aio.Server.add_secure_port`` that follow :meth:`reload`."""
        initial = self._grpc_configuration(self._material)
        self._grpc_served = self._material
        return grpc.dynamic_ssl_server_credentials(
            initial, self._fetch_grpc_configuration, self.client_certificates
        )

    def reload(self, config: TlsConfig) -> bool:
        """Swap in the files of ``config``; returns whether anything changed.

        Raises :class:`TlsError` (and changes nothing) when a file cannot be
        read or used, or when ``config`` would turn TLS or client certificates
        on or off, which needs a restart.
        """
        if not config.enabled:
            raise TlsError("turning TLS off needs a restart")
        if (config.client_ca_file is None) != (self._config.client_ca_file is None):
            raise TlsError("turning client certificates on or off needs a restart")
        material = _read(config)
        # A scratch context proves the files work before the live one is touched.
        _new_context(config)
        with self._lock:
            if material == self._material:
                return False
            _load_into(self.ssl_context, config)
            self._config = config
            self._material = material
        return True

    def _fetch_grpc_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC for each new handshake: ``None`` keeps what it has.
        with self._lock:
            material = self._material
        if material == self._grpc_served:
            return None
        self._grpc_served = material
        return self._grpc_configuration(material)

    @staticmethod
    def _grpc_configuration(material: _Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.certificate)], root_certificates=material.client_ca
        )
