"""TLS settings as an operator meets them: a mistake is refused at start, naming the setting
and the file, never discovered later as a connection that silently is not encrypted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.production_broker import make_certificate
from xiaozhi_edge.settings import EdgeSettingsError, load_edge_settings
from xiaozhi_hub.settings import HubSettingsError, load_hub_settings
from xiaozhi_runtime.tls import device_tls_context, mqtt_tls_context

OPEN = {"device_auth": "open"}


def test_a_ca_file_with_a_plain_mqtt_url_is_refused() -> None:
    with pytest.raises(EdgeSettingsError, match="XIAOZHI_MQTT_URL must then be mqtts://"):
        load_edge_settings(mqtt_url="mqtt://broker:1883", mqtt_ca_file="ca.crt", **OPEN)


def test_a_client_certificate_needs_its_key_and_the_device_certificate_too() -> None:
    with pytest.raises(EdgeSettingsError, match="XIAOZHI_MQTT_CERT_FILE and XIAOZHI_MQTT_KEY"):
        load_edge_settings(mqtt_url="mqtts://broker", mqtt_cert_file="edge.crt", **OPEN)
    with pytest.raises(EdgeSettingsError, match="XIAOZHI_EDGE_TLS_CERT_FILE and XIAOZHI_EDGE"):
        load_edge_settings(edge_tls_key_file="server.key", **OPEN)


def test_a_missing_certificate_file_is_named_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.crt"
    with pytest.raises(EdgeSettingsError, match=f"XIAOZHI_MQTT_CA_FILE='{missing}'"):
        load_edge_settings(mqtt_url="mqtts://broker", mqtt_ca_file=missing, **OPEN)
    with pytest.raises(HubSettingsError, match=f"XIAOZHI_MQTT_CA_FILE='{missing}'"):
        load_hub_settings(mqtt_url="mqtts://broker", mqtt_ca_file=missing)
    with pytest.raises(EdgeSettingsError, match=f"XIAOZHI_EDGE_TLS_CERT_FILE='{missing}'"):
        load_edge_settings(edge_tls_cert_file=missing, edge_tls_key_file=missing, **OPEN)
    with pytest.raises(EdgeSettingsError, match=f"XIAOZHI_MQTT_CERT_FILE='{missing}'"):
        load_edge_settings(
            mqtt_url="mqtts://broker", mqtt_cert_file=missing, mqtt_key_file=missing, **OPEN
        )


def test_contexts_are_made_only_for_tls(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    assert mqtt_tls_context("mqtt://broker") is None
    with_client_cert = mqtt_tls_context(
        "mqtts://broker", cert_file=certificate, key_file=tmp_path / "server.key"
    )
    assert with_client_cert is not None
    assert device_tls_context(certificate, tmp_path / "server.key") is not None
    assert load_edge_settings(**OPEN).device_tls() is None
