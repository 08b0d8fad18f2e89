"""TLS settings as an operator meets them: a mistake is refused at start, naming the setting
and the file, never discovered later as a connection that silently is not encrypted."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from tests.production_broker import make_certificate
from xiaozhi_edge.settings import EdgeSettingsError, load_edge_settings
from xiaozhi_hub.settings import (
    HubCertificate,
    HubSettingsError,
    load_hub_settings,
    resolve_hub_tls,
)
from xiaozhi_runtime.tls import (
    machine_names,
    mqtt_tls_context,
    self_signed_certificate,
    server_tls_context,
)

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
    assert server_tls_context(certificate, tmp_path / "server.key") is not None
    assert load_edge_settings(**OPEN).device_tls() is None


def test_the_hubs_https_settings_are_checked_at_load(tmp_path: Path) -> None:
    with pytest.raises(HubSettingsError, match="XIAOZHI_HUB_TLS_CERT_FILE and XIAOZHI_HUB_TLS"):
        load_hub_settings(hub_tls_cert_file="hub.crt")
    certificate = make_certificate(tmp_path)
    key = tmp_path / "server.key"
    with pytest.raises(HubSettingsError, match="XIAOZHI_HUB_TLS_SELF_SIGNED or XIAOZHI_HUB_TLS"):
        load_hub_settings(
            hub_tls_self_signed=True, hub_tls_cert_file=certificate, hub_tls_key_file=key
        )
    missing = tmp_path / "nowhere.crt"
    with pytest.raises(HubSettingsError, match=f"XIAOZHI_HUB_TLS_CERT_FILE='{missing}'"):
        load_hub_settings(hub_tls_cert_file=missing, hub_tls_key_file=key)
    settings = load_hub_settings(hub_tls_cert_file=certificate, hub_tls_key_file=key)
    assert resolve_hub_tls(settings) == HubCertificate(certificate, key, made=False)
    assert resolve_hub_tls(load_hub_settings()) is None  # plain http by default


def test_a_self_signed_certificate_is_kept_until_a_name_is_new(tmp_path: Path) -> None:
    names = machine_names()
    assert names[:3] == ["localhost", "127.0.0.1", "::1"]
    cert_file, key_file, made = self_signed_certificate(tmp_path, names)
    assert made
    assert key_file.stat().st_mode & 0o077 == 0  # the key: the owner's alone
    first = cert_file.read_bytes()
    cert = x509.load_pem_x509_certificate(first)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert server_tls_context(cert_file, key_file) is not None  # a usable pair

    assert self_signed_certificate(tmp_path, names) == (cert_file, key_file, False)
    assert cert_file.read_bytes() == first
    # a new LAN address (or host name): made again, naming it
    _, _, made = self_signed_certificate(tmp_path, [*names, "192.168.77.5"])
    assert made
    again = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = again.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("192.168.77.5") in san.get_values_for_type(x509.IPAddress)
    key_file.write_text("damaged")  # an unreadable key: made again too
    assert self_signed_certificate(tmp_path, names)[2]
