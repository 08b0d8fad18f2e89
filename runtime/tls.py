"""TLS for the broker link (``mqtts://``), the device port (``wss://``) and the hub's HTTP port.

Why here: the contexts read certificate files, which the pure ``xiaozhi/`` core never does,
and every process builds them the same way. The broker's certificate is always verified
(hostname included); a private CA is trusted by naming it (``XIAOZHI_MQTT_CA_FILE``), never by
turning verification off, for which there is no setting.

:func:`self_signed_certificate` makes (once, then reuses) a certificate for a server that has
none: the hub's dashboard needs https on a LAN address for the browser to give it a secure
context, and a LAN rarely has a certificate authority.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, Field, model_validator

from xiaozhi.config import parse_mqtt_url
from xiaozhi.errors import ConfigurationError
from xiaozhi_runtime.secrets_file import write_private_file

__all__ = [
    "MqttTlsSettings",
    "machine_names",
    "mqtt_tls_context",
    "self_signed_certificate",
    "server_tls_context",
]

_VALID_DAYS = 825
"""A self-signed certificate's lifetime: the longest Apple's platforms accept for a server."""
_RENEW_DAYS = 30
"""A kept certificate this close to its end is made again."""


class MqttTlsSettings(BaseModel):
    """The broker link's TLS settings, mixed into each process's settings beside
    ``mqtt_url`` (``class EdgeSettings(BaseSettings, MqttTlsSettings)``).

    They apply to an ``mqtts://`` URL only; set with an ``mqtt://`` one they are refused at
    load, since an operator who names a CA expects the link to be encrypted.
    """

    mqtt_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the broker's certificate (mqtts://); "
        "unset: the system's trust store",
    )
    mqtt_cert_file: Path | None = Field(
        default=None,
        description="PEM client certificate for brokers that require one (mqtts://), with "
        "XIAOZHI_MQTT_KEY_FILE",
    )
    mqtt_key_file: Path | None = Field(
        default=None, description="the private key of XIAOZHI_MQTT_CERT_FILE"
    )

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> MqttTlsSettings:
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("XIAOZHI_MQTT_CERT_FILE and XIAOZHI_MQTT_KEY_FILE go together")
        named = self.mqtt_ca_file or self.mqtt_cert_file
        url: str | None = getattr(self, "mqtt_url", None)
        if named is not None and url is not None and not parse_mqtt_url(url).tls:
            raise ValueError(
                "XIAOZHI_MQTT_CA_FILE / XIAOZHI_MQTT_CERT_FILE are for TLS: "
                "XIAOZHI_MQTT_URL must then be mqtts://"
            )
        return self

    def mqtt_tls(self) -> ssl.SSLContext | None:
        """The context for ``mqtt_url`` (None for ``mqtt://``); see :func:`mqtt_tls_context`."""
        url: str = getattr(self, "mqtt_url", "") or ""
        return mqtt_tls_context(
            url,
            ca_file=self.mqtt_ca_file,
            cert_file=self.mqtt_cert_file,
            key_file=self.mqtt_key_file,
        )


def mqtt_tls_context(
    url: str,
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext | None:
    """A client context for an ``mqtts://`` broker, None for ``mqtt://`` (or no URL).

    Verifies the broker's certificate and host name against ``ca_file`` (else the system
    trust store); presents ``cert_file``/``key_file`` when given.

    Raises:
        ConfigurationError: a file is missing or not PEM of the right kind; the message names
            the setting and the file.
    """
    if not url or not parse_mqtt_url(url).tls:
        return None
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigurationError(f"XIAOZHI_MQTT_CA_FILE={str(ca_file)!r}: {err}") from err
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigurationError(
                f"XIAOZHI_MQTT_CERT_FILE={str(cert_file)!r} / "
                f"XIAOZHI_MQTT_KEY_FILE={str(key_file)!r}: {err}"
            ) from err
    return context


def server_tls_context(
    cert_file: Path, key_file: Path, *, setting: str = "XIAOZHI_EDGE_TLS"
) -> ssl.SSLContext:
    """A server context with this certificate chain and key: the device port (``wss://``),
    the hub's HTTP port (``https://``).

    Args:
        setting: the settings' common prefix, named in the error (``XIAOZHI_HUB_TLS``).

    Raises:
        ConfigurationError: a file is missing or not PEM of the right kind; the message names
            the settings and the files.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigurationError(
            f"{setting}_CERT_FILE={str(cert_file)!r} / {setting}_KEY_FILE={str(key_file)!r}: {err}"
        ) from err
    return context


def machine_names(host: str = "") -> list[str]:
    """The names a browser on the LAN may reach this machine by: ``localhost``, the loopback
    addresses, the host name (and its fully qualified one), the addresses it resolves to, the
    address of the default route's interface, and ``host`` unless it is a wildcard.

    The default route's address comes from a UDP socket "connected" to a private address: the
    kernel picks the source address, and no packet is sent. Without a route, it is left out.
    """
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    names += [hostname, socket.getfqdn()]
    with contextlib.suppress(OSError):
        names += [str(info[4][0]) for info in socket.getaddrinfo(hostname, None)]
    for family, probe in ((socket.AF_INET, "10.254.254.254"), (socket.AF_INET6, "fd00::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            names.append(udp.getsockname()[0])
    if host not in ("", "0.0.0.0", "::"):
        names.append(host)
    kept: list[str] = []
    for name in names:
        if name and "%" not in name and name not in kept:  # fe80::1%eth0: no scope in a SAN
            kept.append(name)
    return kept


def _alternative_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _covers(cert_file: Path, key_file: Path, names: list[str]) -> bool:
    """True when the kept certificate and key load, name every one of ``names`` and are not
    about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=_RENEW_DAYS)
    return cert.not_valid_after_utc > soon and set(_alternative_names(names)) <= set(san)


def self_signed_certificate(
    directory: Path, names: list[str], *, stem: str = "hub-tls"
) -> tuple[Path, Path, bool]:
    """``<directory>/<stem>-cert.pem`` and ``-key.pem``: a self-signed certificate for
    ``names`` (host names and IP addresses), made with the ``cryptography`` package.

    Kept from one start to the next, so a browser's exception for it (or the certificate
    imported as trusted) stays valid; made again only when it is missing, unreadable, about
    to expire, or does not name one of ``names`` (a new LAN address). EC P-256, valid
    825 days; both files are written mode 0600, whole (the certificate is no secret: copy
    it to the browsers that should trust it).

    Returns:
        The certificate's path, the key's path, and True when it was made now.

    Raises:
        OSError: ``directory`` cannot be written.
    """
    cert_file = directory / f"{stem}-cert.pem"
    key_file = directory / f"{stem}-key.pem"
    if _covers(cert_file, key_file, names):
        return cert_file, key_file, False
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "xiaozhi")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alternative_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(key_file, key_pem.decode("ascii"))
    write_private_file(cert_file, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return cert_file, key_file, True
