"""200 firmware devices on MQTT + UDP beside 200 on WebSocket (issue 16 point 6): one
simulated fleet, one token-mode edge with its firmware MQTT listener, the hub and Mosquitto.

What a user notices: every device takes its setup answer (``mqtt`` for the ones the home model
puts on MQTT + UDP, ``websocket`` for the rest), connects, and the hub lists all 400 as
connected, each by its own transport, on this edge. A different volume sent through the hub's
REST API to each of them reaches that device and no other: each gets exactly one tool call and
ends at its own volume, and the hub hears each ``command_result``.

Speed is the benchmark's business (``xiaozhi bench``, case ``talking_devices``); this test
only bounds how long a failure takes to show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.hub.conftest import WRITE_KEY
from tests.hub.test_mqtt_udp_devices import client, edge
from tests.support import Recorder
from xiaozhi.payloads import DeviceTransport
from xiaozhi_edge.server import EdgeServer
from xiaozhi_hub.activations import DeviceApproval
from xiaozhi_hub.home import Device, Home
from xiaozhi_hub.http import RunningHub
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.device import SimulatedDevice
from xiaozhi_sim.fleet import DeviceSpec, Fleet
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mqtt_udp_device import MqttUdpDevice
from xiaozhi_sim.settings import SimSettings

pytestmark = pytest.mark.integration  # a real Mosquitto

__all__ = ["client", "edge"]  # fixtures, used by name

EACH = 200  # devices per transport
SEED = 1616
WAIT_SECONDS = 45.0  # seconds on a loaded 2-core machine; this only bounds a failure


def _volume(index: int) -> int:
    """Each device's own volume: neighbours (one of each transport) always differ."""
    return 1 + (index * 37) % 100


def _on_mqtt_udp(home: Home, device_ids: list[str]) -> Home:
    """A copy of the home with these devices set to MQTT + UDP, as an operator lists them
    (a copy: the session's home is shared by every hub test)."""
    copy = home.model_copy(deep=True)
    copy.devices.extend(
        Device(id=device_id, name=f"Fleet speaker {n}", transport="mqtt-udp")
        for n, device_id in enumerate(device_ids)
    )
    copy.model_post_init(None)
    return copy


async def _all(recorder: Recorder, pending: set[str], done: Callable[[str], bool]) -> None:
    """Wait until ``done`` holds for every id of ``pending``; ids are dropped as they pass,
    so a check after each message costs what is still missing, not the whole fleet."""

    def check() -> bool:
        pending.difference_update([i for i in pending if done(i)])
        return not pending

    await recorder.wait_for(check, within=WAIT_SECONDS)


async def test_200_mqtt_udp_devices_beside_200_websocket_devices(
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.AsyncClient,
    edge: EdgeServer,
    hub_settings: HubSettings,
    running_hub: RunningHub,
    watcher: Recorder,
) -> None:
    service = running_hub.service
    hub_settings.device_approval = DeviceApproval.AUTO  # 400 operators' clicks
    hub_settings.edge_port = edge.port  # the WebSocket URL the setup answer gives
    # Even fleet members on MQTT + UDP, odd ones on WebSocket: side by side in one fleet.
    specs = [DeviceSpec("mqtt-udp" if i % 2 == 0 else "ws") for i in range(2 * EACH)]
    on_udp = [make_identity(seed=SEED, index=i).device_id for i in range(0, 2 * EACH, 2)]
    monkeypatch.setattr(service, "home", _on_mqtt_udp(service.home, on_udp))
    settings = SimSettings(
        mqtt_url=hub_settings.mqtt_url,
        base_topic=hub_settings.base_topic,
        sim_ota_url=f"{running_hub.url}/xiaozhi/ota/",
        sim_ws_url="ws://127.0.0.1:9/xiaozhi/v1/",  # unused: the setup answer says
        sim_token="",
        sim_seed=SEED,
    )
    fleet = Fleet(settings, specs, wake_on_start=True)
    try:
        await fleet.start()
        assert await fleet.wait_connected(WAIT_SECONDS), fleet.summary_line()
        devices: dict[str, SimulatedDevice] = {d.device_id: d for d in fleet.devices}
        udp = {d.device_id for d in fleet.devices if isinstance(d, MqttUdpDevice)}
        assert udp == set(on_udp)
        assert all(isinstance(d, MqttUdpDevice) == (d.device_id in udp) for d in devices.values())

        # The hub lists all 400 as connected, each by its own transport, on this edge.
        def listed(device_id: str) -> bool:
            record = service.registry.device(device_id)
            transport = DeviceTransport.MQTT_UDP if device_id in udp else DeviceTransport.WEBSOCKET
            return (
                record is not None
                and record.connected
                and record.transport is transport
                and record.edge_id == edge.settings.edge_id
            )

        await _all(watcher, set(devices), listed)
        assert edge.mqtt_udp is not None
        assert edge.mqtt_udp.stats()["voice_sessions"] == EACH
        assert set(edge.by_device) == set(devices)

        # Each gets its own volume through the hub; the commands all go out at once.
        order = list(devices)
        headers = {"X-API-Key": WRITE_KEY}

        in_flight = asyncio.Semaphore(50)  # under the client's pool of 100: no pool timeouts

        async def send(index: int, device_id: str) -> str:
            body = {"command": "set_volume", "parameters": {"volume": _volume(index)}}
            async with in_flight:
                answer = await client.post(
                    f"/api/v1/devices/{device_id}/command", headers=headers, json=body
                )
            assert answer.status_code == 202, answer.text
            data: dict[str, Any] = answer.json()["data"]
            assert data["connected"] is True
            return str(data["message_id"])

        sent = await asyncio.gather(*(send(i, d) for i, d in enumerate(order)))
        message_ids = dict(zip(order, sent, strict=True))
        results: dict[str, dict[str, Any]] = {}
        read = 0

        def answered(device_id: str) -> bool:
            nonlocal read
            for message in watcher.messages[read:]:
                event = message.obj
                if event.get("event_type") == "command_result":
                    results[str(event.get("message_id"))] = event
            read = len(watcher.messages)
            return message_ids[device_id] in results

        await _all(watcher, set(devices), answered)
        assert {results[m]["status"] for m in sent} == {"ok"}
        assert {results[m]["device_id"] for m in sent} == set(devices)
    finally:
        await fleet.stop()

    # None affected another: each device ran exactly one call, with its own volume.
    for index, device_id in enumerate(order):
        device = devices[device_id]
        calls = [
            r.payload["payload"]["params"]
            for r in device.inbox
            if r.kind == "message"
            and r.payload.get("type") == "mcp"
            and r.payload.get("payload", {}).get("method") == "tools/call"
        ]
        assert calls == [
            {"name": "self.audio_speaker.set_volume", "arguments": {"volume": _volume(index)}}
        ], device_id
        assert device.model.volume == _volume(index), device_id
    assert fleet.stats.error_count == 0, fleet.stats.errors
