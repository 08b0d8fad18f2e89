"""Configuration helpers every process shares: the broker URL and settings error reports.

Pure: they parse strings and format pydantic's validation errors; reading the environment
stays with each process's pydantic-settings class (design.md section 3).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import AfterValidator, ValidationError

__all__ = [
    "ENV_PREFIX",
    "MQTTS_PORT",
    "MQTT_PORT",
    "MqttUrl",
    "MqttUrlSetting",
    "describe_invalid_settings",
    "parse_mqtt_url",
    "redact_mqtt_url",
]

ENV_PREFIX = "XIAOZHI_"
_SECRET_SETTINGS = frozenset(
    {
        "SECRET",
        "JWT_SECRET",
        "DEVICE_TOKEN_KEY",
        "ACTIVATION_HMAC_KEYS",
        "API_KEYS",
        "STT_API_KEY",
        "MONITOR_API_KEY",
        "DEVICE_MQTT_SIGNATURE_KEY",
        "GATEWAY_SECRET",
    }
)


MQTT_PORT, MQTTS_PORT = 1883, 8883  # the IANA ports of MQTT and MQTT over TLS


class MqttUrl(NamedTuple):
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False  # mqtts://: the connection is TLS, the broker's certificate verified


def redact_mqtt_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs, banners and error messages
    (``mqtt://hub:***@broker:1883``); a URL without a password is returned as it is."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def parse_mqtt_url(url: str) -> MqttUrl:
    """Split ``mqtt://[user:password@]host[:port]`` (port 1883 by default) or
    ``mqtts://...`` (TLS, port 8883 by default).

    Raises:
        ValueError: another scheme, or no host; the message quotes the URL and the form.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
        shown = redact_mqtt_url(url)
        raise ValueError(f"expected mqtt[s]://[user:password@]host[:port], got {shown!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return MqttUrl(
        parts.hostname,
        parts.port or (MQTTS_PORT if tls else MQTT_PORT),
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        tls,
    )


def _checked_mqtt_url(value: str) -> str:
    parse_mqtt_url(value)
    return value


MqttUrlSetting = Annotated[str, AfterValidator(_checked_mqtt_url)]
"""The type of every ``mqtt_url`` setting: a string :func:`parse_mqtt_url` accepts, checked
when the settings load so a bad URL is reported with the other invalid settings."""


def describe_invalid_settings(
    err: ValidationError, *, hidden: Collection[str] = _SECRET_SETTINGS
) -> str:
    """Every invalid setting on its own line, as the operator sets it, with the value it had::

        invalid settings:
          XIAOZHI_EDGE_PORT='70000': Input should be less than or equal to 65535

    Values of ``hidden`` settings (secrets) are not repeated.
    """
    lines = []
    for error in err.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names them
            lines.append(f"  {message}")
            continue
        name = "_".join(str(part) for part in error["loc"]).upper()
        value = error.get("input")
        if name == "MQTT_URL" and isinstance(value, str):
            value = redact_mqtt_url(value)  # the URL may carry the broker password
        shown = "<hidden>" if name in hidden else repr(value)
        lines.append(f"  {ENV_PREFIX}{name}={shown}: {message}")
    return "invalid settings:\n" + "\n".join(lines)
