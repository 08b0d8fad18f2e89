"""Hub settings (every invalid one listed, secrets created once) and the ``xiaozhi hub`` CLI."""

from __future__ import annotations

import argparse
import asyncio
import stat
from pathlib import Path

import pytest

from tests.support import Recorder
from xiaozhi.tokens import public_key_text
from xiaozhi_edge.settings import EdgeSettingsError, load_edge_settings
from xiaozhi_hub.cli import add_hub_parser, serve_hub
from xiaozhi_hub.settings import (
    ApiRole,
    HubSettings,
    HubSettingsError,
    derive_jwt_secret,
    load_hub_settings,
    parse_api_keys,
    parse_hmac_keys,
    resolve_device_token_key,
    resolve_secret,
)


def test_every_invalid_setting_is_listed_with_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIAOZHI_MQTT_URL", "http://broker")
    monkeypatch.setenv("XIAOZHI_HUB_PORT", "70000")
    monkeypatch.setenv("XIAOZHI_API_KEYS", "good,bad:admin")
    monkeypatch.setenv("XIAOZHI_LANGUAGE", "xx")
    monkeypatch.setenv("XIAOZHI_BASE_TOPIC", "a/+/b")
    monkeypatch.setenv("XIAOZHI_DEVICE_BINARY_VERSION", "4")
    with pytest.raises(HubSettingsError) as caught:
        load_hub_settings()
    message = str(caught.value)
    for line in (
        "XIAOZHI_MQTT_URL='http://broker': expected mqtt[s]://[user:password@]host[:port]",
        "XIAOZHI_HUB_PORT='70000'",
        "XIAOZHI_API_KEYS=<hidden>: API key entry ending in ':admin'",
        "XIAOZHI_LANGUAGE='xx': no intents for language 'xx'",
        "XIAOZHI_BASE_TOPIC='a/+/b'",
        "XIAOZHI_DEVICE_BINARY_VERSION='4'",
    ):
        assert line in message


def test_defaults_and_api_keys() -> None:
    settings = HubSettings()
    assert (settings.hub_host, settings.hub_port, settings.base_topic) == (
        "0.0.0.0",
        8003,
        "xiaozhi",
    )
    assert settings.hub_id.startswith("hub-")
    assert parse_api_keys(" a , b:read,c:write ,") == {
        "a": ApiRole.WRITE,
        "b": ApiRole.READ,
        "c": ApiRole.WRITE,
    }
    with pytest.raises(ValueError, match="no key"):
        parse_api_keys(":read")


def test_the_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = HubSettings(state_dir=tmp_path / "state", secret=None)
    first = resolve_secret(settings)
    path = tmp_path / "state" / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_secret(settings) == first
    assert len(first) >= 32
    explicit = HubSettings(state_dir=tmp_path / "other", secret="given")
    assert resolve_secret(explicit) == b"given"
    assert not (tmp_path / "other").exists()
    assert derive_jwt_secret(settings, first) != first
    assert derive_jwt_secret(HubSettings(jwt_secret="j"), first) == b"j"


def test_the_device_token_key_is_the_hubs_and_edges_get_its_public_half(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = HubSettings(state_dir=state, device_token_key=None)
    key = resolve_device_token_key(settings)
    private, public = state / "device_token_key", state / "device_token_key.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().strip() == public_key_text(key)
    assert public_key_text(resolve_device_token_key(settings)) == public_key_text(key)  # kept
    # an edge on this machine reads the public key; it needs no secret at all
    edge = load_edge_settings(device_auth="token", state_dir=state)
    assert public_key_text(edge.token_public_key()) == public_key_text(key)  # type: ignore[arg-type]
    with pytest.raises(EdgeSettingsError, match="XIAOZHI_DEVICE_TOKEN_PUBLIC_KEY is unset"):
        load_edge_settings(device_auth="token", state_dir=tmp_path / "elsewhere")
    with pytest.raises(EdgeSettingsError, match="decodes to 3 bytes"):
        load_edge_settings(device_auth="token", device_token_public_key="abcd")

    given = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
    explicit = HubSettings(state_dir=tmp_path / "other", device_token_key=given)
    resolve_device_token_key(explicit)
    assert not (tmp_path / "other" / "device_token_key").exists()
    assert (tmp_path / "other" / "device_token_key.pub").is_file()
    with pytest.raises(HubSettingsError, match="XIAOZHI_DEVICE_TOKEN_KEY"):
        resolve_device_token_key(HubSettings(state_dir=tmp_path / "x", device_token_key="short"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(HubSettingsError, match="cannot read or create the device token key"):
        resolve_device_token_key(HubSettings(state_dir=blocked / "state"))


def test_activation_hmac_keys_are_serial_equals_hex() -> None:
    assert parse_hmac_keys(" SN1=00ff , ,SN2=0a") == {"SN1": b"\x00\xff", "SN2": b"\x0a"}
    for bad, reason in [("SN1", "serial=hexkey"), ("=00", "serial=hexkey"), ("SN1=zz", "not hex")]:
        with pytest.raises(ValueError, match=reason):
            parse_hmac_keys(bad)
    with pytest.raises(HubSettingsError) as caught:
        load_hub_settings(activation_hmac_keys="SN1=zz")
    assert "XIAOZHI_ACTIVATION_HMAC_KEYS=<hidden>: the HMAC key of serial 'SN1' is not hex" in str(
        caught.value
    )
    assert HubSettings(activation_hmac_keys="SN1=01").hmac_keys == {"SN1": b"\x01"}
    assert HubSettings().hmac_keys == {}


def test_the_cli_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_hub_parser(parser.add_subparsers())
    args = parser.parse_args(["hub", "--mqtt-url", "http://nowhere", "--port", "0"])
    assert args.func(args) == 2
    assert "XIAOZHI_MQTT_URL='http://nowhere'" in capsys.readouterr().err


@pytest.mark.integration
async def test_serve_hub_runs_until_stopped_and_says_offline(
    hub_settings: HubSettings, watcher: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(serve_hub(hub_settings, stop=stop))
    await watcher.expect(hub_settings.topics.bridge_state(), lambda s: s["state"] == "online")
    await watcher.expect(hub_settings.topics.bridge_info())
    start = watcher.mark()
    stop.set()
    assert await task == 0
    state = await watcher.expect(hub_settings.topics.bridge_state(), after=start)
    assert state == {"state": "offline"}
    out = capsys.readouterr().out
    assert "hub       http://127.0.0.1:" in out
    assert "stopped" in out
