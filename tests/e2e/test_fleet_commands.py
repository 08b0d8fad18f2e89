"""Fleet commands end to end: `xiaozhi up`, a WebSocket and an MQTT device, and an
integrator's `mosquitto_pub` sending a broadcast and a group command.

Each device must get each command once: a broadcast without a `message_id` has nothing a
device could drop a repeat by, so it must not travel two paths to the same device.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.system import UpProcess, demo_speakers
from xiaozhi_sim import PahoAsyncio, SimulatedDevice

pytestmark = pytest.mark.integration  # a real Mosquitto

WAIT_SECONDS = 10.0  # delivery takes milliseconds; this only bounds a failure


def _publish(port: int, topic: str, payload: dict[str, Any]) -> None:
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-m", json.dumps(payload)],
        check=True,
        timeout=WAIT_SECONDS,
    )


def _alerts(device: SimulatedDevice, since: float) -> list[str]:
    """The alert messages the device showed, in order (WS: `alert` messages on the socket;
    MQTT: `alert` commands)."""
    shown, ids = [], set()
    for received in device.received_since(since):
        payload = received.payload
        if received.kind == "message" and payload.get("type") == "alert":
            shown.append(str(payload.get("message")))
        elif received.kind == "command" and payload.get("command") == "alert":
            # An MQTT device reads its group's topic and the hub's copy on its own: it runs
            # a repeated message_id once.
            if (message_id := payload.get("message_id")) in ids:
                continue
            ids.add(message_id)
            shown.append(str(payload.get("parameters", {}).get("message")))
    return shown


async def test_a_broadcast_reaches_each_device_once(run_up: Callable[..., UpProcess]) -> None:
    up = await asyncio.to_thread(run_up, XIAOZHI_DEMO_DEVICES="false")
    paho = PahoAsyncio()
    ws, mqtt = demo_speakers(up, paho)
    try:
        await ws.wake()  # firmware opens its channel on the wake word, and keeps it open
        await mqtt.start()
        assert await mqtt.wait_connected(WAIT_SECONDS)
        # The edge subscribes for its device before it announces it (one MQTT connection,
        # in order): once `up` prints the device, the broadcast has somewhere to go.
        await asyncio.to_thread(
            up.out.until,
            lambda: any(
                line.startswith("device    demo_living_room connected") for line in up.out.lines
            ),
            WAIT_SECONDS,
            "the WS device connected",
        )
        since = ws.now()
        alert = {"status": "info", "emotion": "happy"}
        await asyncio.to_thread(
            _publish,
            up.broker_port,
            "xiaozhi/commands/broadcast",
            {"command": "alert", "parameters": {**alert, "message": "dinner is ready"}},
        )
        # A group command after it: the hub reads both in order, so once each device has
        # this one, any copy of the broadcast the hub made would have arrived too.
        await asyncio.to_thread(
            _publish,
            up.broker_port,
            "xiaozhi/commands/group/all_speakers",
            {
                "command": "alert",
                "parameters": {**alert, "message": "last call"},
                "message_id": "fleet-1",
            },
        )
        for device in (ws, mqtt):
            assert await device.wait_until(
                lambda d=device: "last call" in _alerts(d, since), WAIT_SECONDS
            ), (device.device_id, _alerts(device, since))
            assert _alerts(device, since) == ["dinner is ready", "last call"], device.device_id
    finally:
        await ws.stop()
        await mqtt.stop()
        await paho.close()
