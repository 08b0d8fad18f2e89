"""``xiaozhi watch`` (issue 15, point 2), the real command against a running hub's stream: a
device that connects through a real edge shows up in its output."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.test_up import XIAOZHI
from tests.conftest import StartEdge
from tests.hub.conftest import READ_KEY
from tests.support import LineReader
from xiaozhi.stream_frame import MessageType, StreamMessage, StreamVersion
from xiaozhi_cli.watch import Fleet, describe
from xiaozhi_hub.http import RunningHub
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice


def watch_env(state_dir: Path) -> dict[str, str]:
    """No key in the environment: the command finds it in the state dir, as after `up`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    return {**env, "XIAOZHI_STATE_DIR": str(state_dir)}


def start_watch(args: list[str], state_dir: Path) -> tuple[subprocess.Popen[str], LineReader]:
    process = subprocess.Popen(
        [XIAOZHI, "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # its "# watching ..." line says it has subscribed
        text=True,
        env=watch_env(state_dir),
    )
    return process, LineReader(process)


@pytest.mark.integration
async def test_a_device_that_connects_shows_up_in_the_watch_output(
    running_hub: RunningHub, hub_settings: HubSettings, start_edge: StartEdge, tmp_path: Path
) -> None:
    (tmp_path / "api_key").write_text(READ_KEY + "\n")
    base = hub_settings.base_topic
    edge = await start_edge(base_topic=base)
    identity = make_identity(name="watched-one")
    device_id = identity.device_id
    url = running_hub.url
    everything, lines = start_watch(["--url", url, "--topic", f"{base}/#"], tmp_path)
    filtered, only = start_watch(
        [
            "--url",
            url,
            "--plain",
            "--device",
            device_id,
            "--event",
            "device_connected",
            "--count",
            "1",
        ],
        tmp_path,
    )
    try:
        # Not a TTY: plain lines. Once subscribed, the hub's retained state comes first.
        await asyncio.to_thread(only.wait_for, "# watching")
        await asyncio.to_thread(lines.wait_for, "# watching")
        await asyncio.to_thread(lines.wait_for, "bridge_state")
        sim = SimSettings(
            mqtt_url=hub_settings.mqtt_url,
            base_topic=base,
            sim_ota_url="",
            sim_token="",
            sim_ws_url=f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/",
        )
        device = WsDevice(identity, sim)
        await device.start()
        try:
            await device.wake()
            line = await asyncio.to_thread(lines.wait_for, f"device_connected {device_id}")
            assert "websocket" in line
            status = await asyncio.to_thread(lines.wait_for, f"status           {device_id}")
            assert "status=connected" in status
            (_, shown) = await asyncio.to_thread(only.rest, 15)
            assert "device_connected" in shown
            assert device_id in shown
            assert filtered.wait(10) == 0
        finally:
            await device.stop()
        await asyncio.to_thread(lines.wait_for, "device_disconnected")
    finally:
        everything.terminate()
        everything.wait(10)
        filtered.kill()
        filtered.wait(10)


def test_without_a_key_it_says_where_to_find_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [XIAOZHI, "watch", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=watch_env(tmp_path),
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "no API key" in done.stderr
    assert "xiaozhi up" in done.stderr


def message(
    data: dict[str, object], kind: MessageType = MessageType.ANOMALY_ALERT
) -> StreamMessage:
    return StreamMessage(kind, data, StreamVersion.V3, timestamp_us=1_800_000_000_000_000)


def test_lines_and_the_fleet_table() -> None:
    status = message(
        {
            "seq": 1,
            "kind": "status",
            "device_id": "kitchen",
            "retained": True,
            "payload": {"status": "connected", "transport": "websocket", "wifi_signal": -50},
        },
        MessageType.ECG_DATA,
    )
    assert describe(status).endswith(
        "status           kitchen          status=connected transport=websocket wifi_signal=-50"
        "  (retained)"
    )
    event = message(
        {
            "kind": "device_events",
            "device_id": "kitchen",
            "event_type": "response",
            "payload": {
                "event_type": "response",
                "device_id": "kitchen",
                "text": "Done.",
                "intent": "HassTurnOn",
            },
        },
        MessageType.PREDICTION_RESULT,
    )
    assert describe(event).endswith('response         kitchen          says "Done." (HassTurnOn)')
    dropped = message({"dropped": 7, "queued": 3}, MessageType.HEARTBEAT)
    assert "7 dropped" in describe(dropped)
    error = message({"code": 0x101, "message": "CRC"}, MessageType.ERROR)
    assert "ERROR            0x101 CRC" in describe(error)
    log = message(
        {
            "kind": "log",
            "topic": "xiaozhi/bridge/hubs/h1/log",
            "payload": {"level": "warning", "event": "mqtt_message_refused", "kind": "status"},
        }
    )
    assert describe(log).endswith(
        'log warning                       mqtt_message_refused {"kind": "status"}'
    )
    pending = {"change": "pending", "device_id": "aabb", "client_id": "c1", "code": "402719"}
    activation = message({"kind": "activation", "device_id": "aabb", "payload": pending})
    assert describe(activation).endswith(
        "activation       aabb             pending client c1 code 402719 (unknown board)"
    )
    approved = {"change": "approved", "device_id": "aabb", "client_id": "c1", "by": "rest:x"}
    activation = message({"kind": "activation", "device_id": "aabb", "payload": approved})
    assert describe(activation).endswith("activation       aabb             approved client c1")
    fleet = Fleet()
    fleet.apply(status, describe(status))
    fleet.apply(event, describe(event))
    screen = fleet.render(100, 20)
    assert "1 devices, 1 connected" in screen
    assert "kitchen" in screen.splitlines()[2]
    assert screen.splitlines()[-1].endswith('says "Done." (HassTurnOn)')


def test_last_seen_is_the_messages_own_time_not_when_watch_received_it() -> None:
    """A retained status replayed at start shows when the device was last heard (its
    ``timestamp``), not when ``xiaozhi watch`` started; any later message naming the device
    (a voice command says it in its payload only) moves it on, an older one never back."""
    fleet = Fleet()

    def apply(data: dict[str, object], kind: MessageType = MessageType.ANOMALY_ALERT) -> str:
        msg = message(data, kind)  # sent at 2027-01-15 (timestamp_us): never what is shown
        fleet.apply(msg, describe(msg))
        return fleet.render(120, 20).splitlines()[2]

    left = "2026-03-01T08:15:00Z"
    status = {"status": "disconnected", "device_id": "hall", "timestamp": left}
    row = apply({"kind": "status", "device_id": "hall", "retained": True, "payload": status})
    assert row.endswith(time.strftime("%Y-%m-%d %H:%M", time.localtime(1772352900)))
    unstamped = {"status": "connected", "device_id": "hall"}  # replayed, with no time
    apply({"kind": "status", "device_id": "hall", "retained": True, "payload": unstamped})
    assert fleet.devices["hall"]["_at"] == 1772352900  # it says nothing about when
    heard = {"event_type": "voice_command", "device_id": "hall", "command": "hi"}
    heard["timestamp"] = "2026-03-02T09:00:00Z"
    apply({"kind": "voice_command_events", "payload": heard}, MessageType.PREDICTION_RESULT)
    assert fleet.devices["hall"]["_at"] == 1772442000
    older = dict(heard, timestamp="2026-03-01T00:00:00Z")
    apply({"kind": "device_events", "device_id": "hall", "payload": older})
    assert fleet.devices["hall"]["_at"] == 1772442000  # not taken back
    live = {"event_type": "command_result", "device_id": "hall"}  # live, unstamped: now
    apply({"kind": "device_events", "device_id": "hall", "payload": live})
    assert fleet.devices["hall"]["_at"] == 1_800_000_000
    fresh = Fleet()
    msg = message({"kind": "status", "device_id": "new", "retained": True, "payload": unstamped})
    fresh.apply(msg, describe(msg))
    assert fresh.render(120, 20).splitlines()[2].endswith("-")  # unknown, not "now"
