"""The broker URL and the settings error report every process uses."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError, model_validator

from xiaozhi.config import (
    MqttUrl,
    MqttUrlSetting,
    describe_invalid_settings,
    parse_mqtt_url,
    redact_mqtt_url,
)


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("mqtt://127.0.0.1", MqttUrl("127.0.0.1", 1883)),
        ("mqtt://broker:1884", MqttUrl("broker", 1884)),
        ("tcp://broker:1884", MqttUrl("broker", 1884)),
        ("mqtt://edge:p%40ss@broker:8883", MqttUrl("broker", 8883, "edge", "p@ss")),
        ("mqtts://broker", MqttUrl("broker", 8883, tls=True)),
        ("mqtts://edge:pw@broker:8884", MqttUrl("broker", 8884, "edge", "pw", tls=True)),
        ("ssl://broker", MqttUrl("broker", 8883, tls=True)),
    ],
)
def test_broker_urls_are_split(url: str, parsed: MqttUrl) -> None:
    assert parse_mqtt_url(url) == parsed


@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "mqtts://", "broker:1883", ""])
def test_other_urls_are_refused_quoting_the_form(url: str) -> None:
    with pytest.raises(ValueError, match=r"expected mqtt\[s\]://\[user:password@\]host\[:port\]"):
        parse_mqtt_url(url)


class _Settings(BaseModel):
    edge_port: int = Field(le=65535)
    secret: str = Field(min_length=8)


def test_every_invalid_setting_is_listed_and_secrets_are_not_echoed() -> None:
    with pytest.raises(ValidationError) as info:
        _Settings(edge_port=70000, secret="short")
    text = describe_invalid_settings(info.value)
    assert text.splitlines()[0] == "invalid settings:"
    assert "  XIAOZHI_EDGE_PORT=70000: Input should be less than or equal to 65535" in text
    assert "XIAOZHI_SECRET=<hidden>" in text
    assert "short" not in text


class _WithBroker(BaseModel):
    mqtt_url: MqttUrlSetting = "mqtt://127.0.0.1:1883"


def test_the_mqtt_url_setting_type_refuses_a_bad_url_among_the_other_settings() -> None:
    assert _WithBroker(mqtt_url="mqtt://broker:1884").mqtt_url == "mqtt://broker:1884"
    with pytest.raises(ValidationError) as caught:
        _WithBroker(mqtt_url="http://broker")
    assert "XIAOZHI_MQTT_URL='http://broker'" in describe_invalid_settings(caught.value)


def test_a_refused_mqtt_url_is_quoted_without_its_password() -> None:
    with pytest.raises(ValidationError) as caught:
        _WithBroker(mqtt_url="http://edge:s3cret@broker")
    text = describe_invalid_settings(caught.value)
    assert "s3cret" not in text
    assert "XIAOZHI_MQTT_URL='http://edge:***@broker'" in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://hub:s3cret@broker:1883", "mqtt://hub:***@broker:1883"),
        ("mqtt://hub:p%40ss%3Aword@10.0.0.2", "mqtt://hub:***@10.0.0.2"),
        ("mqtt://:only-a-password@broker", "mqtt://:***@broker"),
        ("mqtt://hub@broker:1883", "mqtt://hub@broker:1883"),  # no password: as it is
        ("mqtt://broker", "mqtt://broker"),
    ],
)
def test_passwords_are_redacted_wherever_a_url_is_shown(url: str, shown: str) -> None:
    assert redact_mqtt_url(url) == shown


def test_a_refused_url_does_not_quote_its_password() -> None:
    with pytest.raises(ValueError, match=r"expected mqtt\[s\]://") as info:
        parse_mqtt_url("http://hub:s3cret@broker:1883")
    assert "s3cret" not in str(info.value)
    assert "hub:***@broker" in str(info.value)


class _Paired(BaseModel):
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _together(self) -> _Paired:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("XIAOZHI_CERT_FILE and XIAOZHI_KEY_FILE go together")
        return self


def test_a_rule_across_settings_is_listed_by_its_own_message() -> None:
    with pytest.raises(ValidationError) as caught:
        _Paired(cert_file="server.crt")
    assert describe_invalid_settings(caught.value) == (
        "invalid settings:\n  XIAOZHI_CERT_FILE and XIAOZHI_KEY_FILE go together"
    )
