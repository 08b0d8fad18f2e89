"""`xiaozhi up` with its three demo devices, as `make up` shows them to a newcomer: the two
WebSocket devices connect, each of the three says a demo phrase that the hub answers, and
Ctrl-C stops the devices with everything else."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.system import UpProcess

pytestmark = pytest.mark.integration  # a real Mosquitto

DEMO_DEVICES = ("demo_living_room", "demo_kitchen", "demo_office")  # WS v1, WS v3, MQTT
SPEAK_SECONDS = 15.0  # each speaks within one 2 s period; this only bounds a failure
README = Path(__file__).resolve().parents[2] / "README.md"
SUMMARY = re.compile(r"^(?=[a-z ]{10})([a-z]+) +(?! )")  # `broker    mqtt://...`


def readme_output() -> list[str]:
    """The terminal output README's "What you see" shows for `make up`."""
    section = README.read_text(encoding="utf-8").split("## What you see", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line for line in block.splitlines() if line]


def normalised(line: str) -> str:
    """A summary line without what changes from run to run: numbers (ports, pids, the demo
    period), the API key, the edge id, the state folder, what a device said and the answer."""
    line = re.sub(r"X-API-Key: [^)]*", "X-API-Key: K", line)
    line = re.sub(r"^logs      \S+/logs/", "logs      S/logs/", line)
    line = re.sub(r"XIAOZHI_STATE_DIR=\S+", "XIAOZHI_STATE_DIR=S", line)
    line = re.sub(r"edge-[\w-]+", "edge-E", line)
    line = re.sub(r'"[^"]*"', '"T"', line)
    line = re.sub(r" -> [^\"]+ -> ", " -> A -> ", line)
    return re.sub(r"\d+", "N", line)


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
    # What README shows is what a newcomer sees: the same summary lines, in the same order,
    # and no summary line README leaves out.
    printed = [
        line
        for line in up.started
        if SUMMARY.match(line) and not line.startswith(("device ", "voice "))
    ]
    shown = readme_output()
    summary = [line for line in shown if not line.startswith(("device ", "voice "))]
    assert [normalised(line) for line in printed] == [normalised(line) for line in summary]
    seen = {normalised(line) for line in up.out.lines}
    missing = [line for line in shown if normalised(line) not in seen]
    assert not missing, f"README shows lines `up` does not print: {missing}"
    lines = up.ctrl_c()

    voices = [line for line in lines if line.startswith("voice ")]
    shape = re.compile(r'^voice     (\w+)  "[^"]+" -> (.+) -> "[^"]+"$')
    for line in voices:
        found = shape.match(line)
        assert found, line
        assert found.group(1) in DEMO_DEVICES, line
        assert not found.group(2).startswith("nothing"), f"a demo phrase did nothing: {line}"
    assert not [line for line in lines if "Traceback" in line or "[error" in line], lines
