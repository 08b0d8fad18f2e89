"""`xiaozhi up` with its three demo devices, as `make up` shows them to a newcomer: the two
WebSocket devices connect, each of the three says a demo phrase that the hub answers, and
Ctrl-C stops the devices with everything else."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.e2e.system import UpProcess

pytestmark = pytest.mark.integration  # a real Mosquitto

DEMO_DEVICES = ("demo_living_room", "demo_kitchen", "demo_office")  # WS v1, WS v3, MQTT
SPEAK_SECONDS = 15.0  # each speaks within one 2 s period; this only bounds a failure


def test_the_demo_devices_connect_and_speak(run_up: Callable[..., UpProcess]) -> None:
    up = run_up(XIAOZHI_DEMO_DEVICES="true", XIAOZHI_DEMO_SAY_EVERY_SECONDS="2")
    assert "devices   3 simulated (WS v1, WS v3, MQTT), each speaking every 2 s" in up.started

    def spoke() -> bool:
        lines = up.out.lines
        connected = all(
            any(line.startswith(f"device    {ws} connected (websocket, edge-") for line in lines)
            for ws in DEMO_DEVICES[:2]
        )
        voices = all(
            any(line.startswith(f"voice     {device}  ") for line in lines)
            for device in DEMO_DEVICES
        )
        return connected and voices

    up.out.until(spoke, SPEAK_SECONDS, "both WS demo devices connected, all three spoke")
    lines = up.ctrl_c()

    voices = [line for line in lines if line.startswith("voice ")]
    shape = re.compile(r'^voice     (\w+)  "[^"]+" -> (.+) -> "[^"]+"$')
    for line in voices:
        found = shape.match(line)
        assert found, line
        assert found.group(1) in DEMO_DEVICES, line
        assert not found.group(2).startswith("nothing"), f"a demo phrase did nothing: {line}"
    assert not [line for line in lines if "Traceback" in line or "[error" in line], lines
