"""TLS for the broker link (``mqtts://``) and the device port (``wss://``).

Why here: both contexts read certificate files, which the pure ``xiaozhi/`` core never does,
and every process builds them the same way. The broker's certificate is always verified
(hostname included); a private CA is trusted by naming it (``XIAOZHI_MQTT_CA_FILE``), never by
turning verification off, for which there is no setting.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from xiaozhi.config import parse_mqtt_url
from xiaozhi.errors import ConfigurationError

__all__ = ["MqttTlsSettings", "device_tls_context", "mqtt_tls_context"]


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


def device_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server context of the device port (``wss://``): this certificate chain and key.

    Raises:
        ConfigurationError: a file is missing or not PEM of the right kind; the message names
            the settings and the files.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigurationError(
            f"XIAOZHI_EDGE_TLS_CERT_FILE={str(cert_file)!r} / "
            f"XIAOZHI_EDGE_TLS_KEY_FILE={str(key_file)!r}: {err}"
        ) from err
    return context
