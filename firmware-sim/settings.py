"""Settings of the simulator (`xiaozhi sim ...`): one pydantic-settings class, prefix ``XIAOZHI_``.

The shared names (``XIAOZHI_MQTT_URL``, ``XIAOZHI_BASE_TOPIC``) are the ones every process reads
(design.md section 3); the simulator's own ones carry ``SIM_``. Defaults follow the firmware and
the seeds: the setup endpoint on the hub port 8003 and the device WebSocket on the edge port 8000
(reference section 3.1 and 5.1), reconnect every 5 s for 10 attempts (seed 003's client).

Settings are passed in explicitly (never read from a global); :func:`load_sim_settings` reports
*every* invalid field at once, quoting the value it got.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from xiaozhi.config import MqttUrlSetting, describe_invalid_settings, parse_mqtt_url
from xiaozhi.errors import ConfigurationError
from xiaozhi.messages import ListenMode
from xiaozhi.topics import TopicTree

__all__ = ["SimSettings", "SimSettingsError", "load_sim_settings"]


class SimSettingsError(ConfigurationError):
    """One or more settings are invalid; the message lists every one of them."""


class SimSettings(BaseSettings):
    """Everything a simulated device or fleet needs to know about its world."""

    model_config = SettingsConfigDict(env_prefix="XIAOZHI_", extra="ignore")

    mqtt_url: MqttUrlSetting = Field(
        default="mqtt://127.0.0.1:1883",
        description="Broker of the MQTT devices (mqtt://host:port).",
    )
    base_topic: str = Field(default="xiaozhi", description="First level of the topic tree.")
    sim_ota_url: str = Field(
        default="http://127.0.0.1:8003/xiaozhi/ota/",
        description="Setup endpoint a WebSocket device POSTs to at boot (reference 3.1). "
        "Empty: skip setup and use the settings below.",
    )
    sim_ws_url: str = Field(
        default="ws://127.0.0.1:8000/xiaozhi/v1/",
        description="Device WebSocket when the setup endpoint does not name one.",
    )
    sim_token: str = Field(
        default="", description="Bearer token when the setup endpoint does not issue one."
    )
    sim_activation_poll_seconds: float = Field(
        default=3.0,
        gt=0,
        description="Activation poll period while the hub has not approved the device "
        "(firmware: 3 s after a 202).",
    )
    sim_binary_version: int = Field(
        default=1, ge=1, le=3, description="Binary protocol version unless setup says otherwise."
    )
    sim_listen_mode: ListenMode = Field(
        default=ListenMode.AUTO, description="Listening mode: auto, manual or realtime."
    )
    sim_heartbeat_interval_seconds: float = Field(
        default=30.0, gt=0, description="Status and sensor publish period of MQTT devices."
    )
    sim_reconnect_delay_seconds: float = Field(
        default=5.0, gt=0, description="First reconnect delay (seed 003: 5 s), doubled per try."
    )
    sim_reconnect_max_delay_seconds: float = Field(
        default=60.0, gt=0, description="Cap of the reconnect delay (firmware: 60 s)."
    )
    sim_reconnect_attempts: int = Field(
        default=10, ge=0, description="Reconnect attempts before giving up (seed 003: 10)."
    )
    sim_keepalive_seconds: int = Field(
        default=60, ge=5, description="MQTT keepalive (seed 003: 60 s)."
    )
    sim_seed: int = Field(default=0, description="Seed of every random choice (ids, drift).")
    sim_board: str = Field(default="bread-compact-wifi", description="Board name (User-Agent).")
    sim_firmware_version: str = Field(default="1.8.2", description="Firmware version reported.")
    sim_language: str = Field(default="en-US", description="Accept-Language of the device.")

    @field_validator("sim_ws_url")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError(f"expected ws://host:port/path, got {value!r}")
        return value

    @field_validator("sim_ota_url")
    @classmethod
    def _check_ota_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"expected http(s)://host:port/path or empty, got {value!r}")
        return value

    @field_validator("base_topic")
    @classmethod
    def _check_base(cls, value: str) -> str:
        TopicTree(base=value)
        return value

    @property
    def topics(self) -> TopicTree:
        """The topic tree under :attr:`base_topic`."""
        return TopicTree(base=self.base_topic)

    @property
    def mqtt_address(self) -> tuple[str, int]:
        """``(host, port)`` of :attr:`mqtt_url`."""
        host, port = parse_mqtt_url(self.mqtt_url)[:2]
        return host, port


def load_sim_settings(**overrides: Any) -> SimSettings:
    """Read the environment (``overrides`` win, e.g. from CLI flags).

    Raises:
        SimSettingsError: listing every invalid field and the value it got.
    """
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return SimSettings(**clean)
    except ValidationError as err:
        raise SimSettingsError(describe_invalid_settings(err)) from err
