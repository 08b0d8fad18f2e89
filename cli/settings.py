"""Settings of `xiaozhi up`: where the broker is, or where to run the managed one.

Names are the stable ones of design.md section 3 (prefix `XIAOZHI_`). Invalid values are all
reported at once, each quoting the bad value (see `load_settings`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from xiaozhi.config import MqttUrlSetting, describe_invalid_settings
from xiaozhi.errors import ConfigurationError

__all__ = ["SettingsError", "UpSettings", "load_settings"]


class SettingsError(ConfigurationError):
    """One or more settings are invalid; the message lists every one of them."""


class UpSettings(BaseSettings):
    """What `xiaozhi up` needs before any component starts."""

    model_config = SettingsConfigDict(env_prefix="XIAOZHI_", extra="ignore")

    mqtt_url: MqttUrlSetting | None = Field(
        default=None,
        description="External broker (mqtt://host:port). Unset: start a managed Mosquitto.",
    )
    broker_port: int = Field(default=1883, ge=0, le=65535, description="Managed broker port.")
    broker_host: str = Field(
        default="127.0.0.1",
        description="Managed broker listen address. Loopback by default: the dev broker has "
        "no passwords, so expose it on purpose (0.0.0.0) only on a trusted network.",
    )
    state_dir: Path = Field(
        default=Path("var"),
        description="Where runtime state lives: broker persistence, the secret, the API key.",
    )
    log_level: str = Field(
        default="info", description="Log level of the components (debug, info, warning, error)."
    )
    demo_devices: bool | None = Field(
        default=None,
        description="Start three simulated devices (WS v1, WS v3, MQTT). Unset: only with the "
        "managed broker, so `up` on a real installation's broker (XIAOZHI_MQTT_URL) adds no "
        "fake devices to it unless asked.",
    )
    demo_bindings: bool | None = Field(
        default=None,
        description="Let the demo home's bindings reach real topics (its kitchen light is "
        "bound to zigbee2mqtt/kitchen_light/set). Unset: only with the managed broker.",
    )
    demo_say_every_seconds: float = Field(
        default=20.0, gt=0, description="How often each demo device says a demo phrase."
    )

    @property
    def with_demo_devices(self) -> bool:
        """Whether to start the demo devices (see ``demo_devices``)."""
        return self.demo_devices if self.demo_devices is not None else self.mqtt_url is None

    @property
    def with_demo_bindings(self) -> bool:
        """Whether the demo home may act on real topics (see ``demo_bindings``)."""
        return self.demo_bindings if self.demo_bindings is not None else self.mqtt_url is None


def load_settings() -> UpSettings:
    """Read the environment; raise `SettingsError` listing every invalid field and value."""
    try:
        return UpSettings()
    except ValidationError as err:
        raise SettingsError(describe_invalid_settings(err)) from err
