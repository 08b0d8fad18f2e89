"""Settings of an edge process (prefix `XIAOZHI_`, design.md section 3).

Limits carry their unit in the name and map one to one onto :class:`EdgeLimits`; the docs
(docs/edge.md) give each default and the worst-case memory per connection they imply.
"""

from __future__ import annotations

import enum
import os
import re
import socket
import ssl
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from xiaozhi.config import MqttUrlSetting, describe_invalid_settings
from xiaozhi.errors import ConfigurationError
from xiaozhi.tokens import (
    DEFAULT_GATEWAY_TOKEN_MAX_AGE_SECONDS,
    Ed25519PublicKey,
    public_key_from_text,
)
from xiaozhi_edge.limits import EdgeLimits
from xiaozhi_edge.session import DEFAULT_WAKE_WORDS
from xiaozhi_runtime.tls import MqttTlsSettings, server_tls_context

__all__ = [
    "PUBLIC_KEY_FILE_NAME",
    "DeviceAuth",
    "EdgeSettings",
    "EdgeSettingsError",
    "load_edge_settings",
]

PUBLIC_KEY_FILE_NAME = "device_token_key.pub"
"""Where the hub writes its device token public key in the shared state directory."""

_MIN_GATEWAY_SECRET_CHARS = 8  # what the xinnan gateway asks of its own MQTT_SIGNATURE_KEY


class DeviceAuth(enum.StrEnum):
    """How the edge decides who may connect (checked in the WebSocket handshake)."""

    TOKEN = "token"  # a token the hub's /xiaozhi/ota/ issued, checked with its public key
    ALLOWLIST = "allowlist"  # device ids listed in XIAOZHI_ALLOWED_DEVICES
    OPEN = "open"  # anyone: development only, logged as a warning


def _default_edge_id() -> str:
    host = re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().lower())[:40] or "host"
    return f"edge-{host}-{os.getpid()}"


class EdgeSettingsError(ConfigurationError):
    """Invalid edge settings; the message lists every one with the value it got."""


class EdgeSettings(BaseSettings, MqttTlsSettings):
    model_config = SettingsConfigDict(env_prefix="XIAOZHI_", extra="ignore")

    mqtt_url: MqttUrlSetting = "mqtt://127.0.0.1:1883"  # or mqtts:// (MqttTlsSettings)
    edge_host: str = "0.0.0.0"  # devices connect from the LAN
    edge_port: int = Field(default=8000, ge=0, le=65535)
    edge_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain of the device port: with XIAOZHI_EDGE_TLS_KEY_FILE "
        "devices connect with wss:// (unset: ws://, TLS left to a load balancer)",
    )
    edge_tls_key_file: Path | None = Field(
        default=None, description="the private key of XIAOZHI_EDGE_TLS_CERT_FILE"
    )
    edge_id: str = Field(default_factory=_default_edge_id, pattern=r"^[a-z0-9_-]{1,64}$")
    base_topic: str = "xiaozhi"
    device_auth: DeviceAuth = DeviceAuth.TOKEN
    device_token_public_key: str | None = Field(
        default=None,
        description="the hub's device token public key (43 base64url characters); unset: "
        "read from <state_dir>/device_token_key.pub, which the hub writes. An edge holds no "
        "secret that could mint a token.",
    )
    device_token_public_key_file: Path | None = Field(
        default=None,
        description="file holding that public key (the hub writes it); unset: "
        "<state_dir>/device_token_key.pub",
    )
    gateway_secret: SecretStr | None = Field(
        default=None,
        description="the SERVER_SECRET of a xiaozhi-mqtt-gateway in front of devices: with "
        "XIAOZHI_DEVICE_AUTH=token, its ?from=mqtt_gateway connections are admitted when their "
        "HMAC token verifies with it (unset: refused). It can mint such tokens, keep it secret",
    )
    gateway_token_max_age_seconds: int = Field(
        default=DEFAULT_GATEWAY_TOKEN_MAX_AGE_SECONDS,
        gt=0,
        le=3600,
        description="how far a gateway token's timestamp may be from the edge's clock, either "
        "way (the gateway signs each connection afresh)",
    )
    allowed_devices: Annotated[frozenset[str], NoDecode] = frozenset()
    state_dir: Path = Path("var")
    language: str = "en"
    forward_utterances: bool = Field(
        default=True,
        description="publish each finished utterance's audio on xiaozhi/utterances/{id} for "
        "speech workers (the hub transcribes them); off: only the utterance event",
    )
    stream_utterances: bool = Field(
        default=True,
        description="offer each utterance to the speech workers as it begins and stream its "
        "frames to the one that claims it, so it is decoded while the user speaks; "
        "unclaimed, it is sent whole at the end (with forward_utterances)",
    )
    wake_words: Annotated[tuple[str, ...], NoDecode] = DEFAULT_WAKE_WORDS
    monitor_api_key: str | None = Field(
        default=None, description="required on /api/ws/audio when set (query key=...)"
    )
    log_level: str = "info"

    # Real firmware's MQTT + UDP transport (docs/edge.md "MQTT + UDP devices"): off unless a
    # port is set, since it opens two more device ports and the hub must hand out `mqtt`.
    device_mqtt_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="TCP port where firmware in MQTT mode connects (0: a free port); unset: off",
    )
    device_udp_port: int = Field(
        default=0, ge=0, le=65535, description="UDP audio port (0: a free one, sent in the hello)"
    )
    device_udp_host: str | None = Field(
        default=None,
        description="the address the hello gives devices for UDP audio; unset: the address "
        "the device reached the MQTT listener on",
    )
    device_mqtt_signature_key: SecretStr | None = Field(
        default=None,
        description="also accept the xinnan gateway's HMAC passwords signed with this key "
        "(fleets moving from a xinnan server); it can mint passwords, keep it secret",
    )

    max_frame_bytes: int = Field(default=65_536, gt=0)
    max_messages_per_second: float = Field(default=50.0, gt=0)
    burst_messages: int = Field(default=100, gt=0)
    hello_timeout_seconds: float = Field(default=10.0, gt=0)
    idle_timeout_seconds: float = Field(default=120.0, gt=0)
    max_utterance_seconds: float = Field(default=15.0, gt=0)
    mcp_call_timeout_seconds: float = Field(default=10.0, gt=0)
    max_queued_mqtt_messages: int = Field(default=200_000, gt=0)
    max_queued_mqtt_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="the same queue bounded in bytes (topic + payload + 200 per message), so "
        "its memory is bounded whatever the size of the messages",
    )
    shutdown_timeout_seconds: float = Field(default=5.0, ge=0)

    @field_validator("allowed_devices", mode="before")
    @classmethod
    def _split_devices(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("gateway_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_GATEWAY_SECRET_CHARS:
            raise ValueError(
                f"at least {_MIN_GATEWAY_SECRET_CHARS} characters: it can mint gateway tokens"
            )
        return value

    @field_validator("wake_words", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @model_validator(mode="after")
    def _device_tls_pair(self) -> EdgeSettings:
        if (self.edge_tls_cert_file is None) != (self.edge_tls_key_file is None):
            raise ValueError("XIAOZHI_EDGE_TLS_CERT_FILE and XIAOZHI_EDGE_TLS_KEY_FILE go together")
        return self

    def device_tls(self) -> ssl.SSLContext | None:
        """The device port's TLS context (wss://), or None (ws://)."""
        if self.edge_tls_cert_file is None or self.edge_tls_key_file is None:
            return None
        return server_tls_context(self.edge_tls_cert_file, self.edge_tls_key_file)

    def limits(self) -> EdgeLimits:
        return EdgeLimits(
            max_frame_bytes=self.max_frame_bytes,
            max_messages_per_second=self.max_messages_per_second,
            burst_messages=self.burst_messages,
            hello_timeout_seconds=self.hello_timeout_seconds,
            idle_timeout_seconds=self.idle_timeout_seconds,
            max_utterance_seconds=self.max_utterance_seconds,
            mcp_call_timeout_seconds=self.mcp_call_timeout_seconds,
        )

    @property
    def public_key_file(self) -> Path:
        return self.device_token_public_key_file or self.state_dir / PUBLIC_KEY_FILE_NAME

    def token_public_key(self) -> Ed25519PublicKey | None:
        """XIAOZHI_DEVICE_TOKEN_PUBLIC_KEY, else the file the hub writes at start
        (XIAOZHI_DEVICE_TOKEN_PUBLIC_KEY_FILE, default ``<state_dir>/device_token_key.pub``);
        None when neither is there.

        Raises:
            ConfigurationError: the key is not 43 base64url characters of an Ed25519 key.
        """
        text = self.device_token_public_key
        if not text:
            stored = self.public_key_file
            if not stored.is_file():
                return None
            text = stored.read_text(encoding="ascii").strip()
        return public_key_from_text(text)


def load_edge_settings(**overrides: object) -> EdgeSettings:
    """Read the environment (plus overrides); raise listing every invalid field and value."""
    try:
        settings = EdgeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise EdgeSettingsError(describe_invalid_settings(err)) from err
    try:  # a missing or unreadable certificate is a setting error, reported now
        settings.mqtt_tls()
        settings.device_tls()
    except ConfigurationError as err:
        raise EdgeSettingsError(f"invalid settings:\n  {err}") from err
    if settings.device_auth is DeviceAuth.TOKEN:
        try:
            key = settings.token_public_key()
        except (ConfigurationError, OSError, UnicodeDecodeError) as err:
            raise EdgeSettingsError(
                f"invalid settings:\n  XIAOZHI_DEVICE_TOKEN_PUBLIC_KEY: {err}"
            ) from err
        if key is None:
            raise EdgeSettingsError(
                "invalid settings:\n  XIAOZHI_DEVICE_TOKEN_PUBLIC_KEY is unset: "
                "XIAOZHI_DEVICE_AUTH=token needs the hub's device token public key (or run "
                f"the hub first, which writes it to {settings.public_key_file})"
            )
    return settings
