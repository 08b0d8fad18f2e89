"""End to end, as a newcomer runs it: `xiaozhi up` on free ports, an integrator's
`mosquitto_sub`, and two simulated devices (the real firmware's WebSocket protocol, and an MQTT
device) saying every demo phrase of hub/demo_home.yaml.

For each phrase: the action appears on MQTT (the hub's `action`/`action_result` events, the
zigbee2mqtt bulb's set topic, a device command), the answer reaches the device that spoke, and
`up` prints one `voice` line. Then Ctrl-C stops everything, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.system import MqttLog, Subscriber, UpProcess, demo_speakers, matches
from xiaozhi_sim import (
    PahoAsyncio,
    SimulatedDevice,
    WsDevice,
)

pytestmark = pytest.mark.integration  # a real Mosquitto

ANSWER_SECONDS = 10.0  # a voice round trip takes milliseconds; this only bounds a failure


@dataclass(frozen=True)
class Phrase:
    """A demo phrase and what it must do.

    Attributes:
        text: what the device says.
        answer: a regex the spoken answer must match.
        action: `action entity_id` executed (`{device}` is the speaker); None: nothing.
        result: a subset of the `action_result` event's `result`.
        effects: (topic, payload subset) that must appear on MQTT after the voice command;
            `{device}` and `{mid}` (the voice command's message id) are filled in.
        error: the response's `error` when nothing is executed because of it.
    """

    text: str
    answer: str
    action: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    effects: tuple[tuple[str, dict[str, Any]], ...] = ()
    error: str | None = None


PHRASES = (
    Phrase(
        "turn on the living room light",
        r"^Turning on the living room light\.$",
        "turn_on light.living_room",
        result={"state": {"state": "on"}},
    ),
    Phrase(  # the kitchen light is a zigbee2mqtt bulb (binding type mqtt)
        "turn off the kitchen lights",
        r"^Turning off the kitchen light\.$",
        "turn_off light.kitchen",
        result={"topic": "zigbee2mqtt/kitchen_light/set"},
        effects=(("zigbee2mqtt/kitchen_light/set", {"state": "OFF"}),),
    ),
    Phrase(
        "set the bedroom brightness to 50%",
        r"bedroom light.* 50% brightness",
        "turn_on light.bedroom",
        result={"state": {"state": "on", "brightness": 128}},
    ),
    Phrase("what is the temperature in the office", r"^The office is 21 degrees\.$"),
    Phrase(  # the speaker's own volume: a device command on its topic, and its result
        "set volume to 80",
        r"^Setting the volume to 80%\.$",
        "volume_set media_player.xiaozhi_{device}",
        effects=(
            (
                "xiaozhi/commands/{device}",
                {"command": "set_volume", "parameters": {"volume": 80}, "message_id": "{mid}-1"},
            ),
            (
                "xiaozhi/events/{device}",
                {
                    "event_type": "command_result",
                    "command": "set_volume",
                    "status": "ok",
                    "message_id": "{mid}-1",
                },
            ),
        ),
    ),
    Phrase(
        "lock the front door",
        r"^Locking the front door\.$",
        "lock lock.front_door",
        result={"state": {"state": "locked"}},
    ),
    Phrase(  # the office light is the LED of the office's xiaozhi device (an MQTT device)
        "turn on the office light",
        r"^Turning on the office light\.$",
        "turn_on light.office",
        effects=(
            (
                "xiaozhi/commands/demo_office",
                {"command": "led", "parameters": {"on": True}, "message_id": "{mid}-1"},
            ),
            (
                "xiaozhi/events/demo_office",
                {"event_type": "command_result", "command": "led", "status": "ok"},
            ),
        ),
    ),
    Phrase(
        "turn on the garage light",
        r"don't know a device called garage light",
        error="unknown_name",
    ),
)


def _fill(value: Any, **names: str) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {key: _fill(item, **names) for key, item in value.items()}
    return value


async def _answer_at_device(device: SimulatedDevice, phrase: Phrase, since: float) -> str:
    """What the device was told: `stt` + `tts` over WebSocket, a `respond` command over MQTT."""

    def _payloads(kind: str) -> list[dict[str, Any]]:
        return [r.payload for r in device.received_since(since, kind)]

    if isinstance(device, WsDevice):

        def done() -> bool:
            return any(
                p.get("type") == "tts" and p.get("state") == "stop" for p in _payloads("message")
            )

        assert await device.wait_until(done, ANSWER_SECONDS), (
            f"{device.device_id} got no `tts stop` for {phrase.text!r}: {_payloads('message')}"
        )
        messages = _payloads("message")
        assert {"type": "stt", "text": phrase.text}.items() <= next(
            p for p in messages if p.get("type") == "stt"
        ).items(), messages
        spoken = [p["text"] for p in messages if p.get("state") == "sentence_start"]
        assert len(spoken) == 1, messages
        return str(spoken[0])

    def responded() -> list[dict[str, Any]]:
        return [p for p in _payloads("command") if p.get("command") == "respond"]

    assert await device.wait_until(lambda: bool(responded()), ANSWER_SECONDS), (
        f"{device.device_id} got no `respond` for {phrase.text!r}: {_payloads('command')}"
    )
    (respond,) = responded()
    assert respond["parameters"]["stt"] == phrase.text, respond
    return str(respond["parameters"]["text"])


def _check_on_mqtt(log: MqttLog, device: str, phrase: Phrase, answer: str) -> str:
    """What the integrator's `mosquitto_sub` saw for this command; returns the `voice` line
    `up` must print for it."""
    # An edge publishes on the fleet-wide topic, an MQTT device on its own one.
    said = {"device_id": device, "command": phrase.text}
    heard = log.until(
        lambda: (
            log.find("xiaozhi/events/voice_command", said)
            + log.find(f"xiaozhi/events/voice_command/{device}", said)
        ),
        ANSWER_SECONDS,
        f"voice command {said}",
    )[0]
    mid = heard.payload["message_id"]
    events = f"xiaozhi/events/{device}"
    response = log.wait(
        events, {"event_type": "response", "message_id": mid}, timeout=ANSWER_SECONDS
    ).payload
    respond = log.wait(
        f"xiaozhi/commands/{device}",
        {"command": "respond", "message_id": mid},
        timeout=ANSWER_SECONDS,
    ).payload
    # One answer everywhere: what the device was told is what the integrator saw.
    assert response["text"] == answer, (response, answer)
    assert respond["parameters"]["text"] == answer, respond
    assert response["stt"] == phrase.text, response
    assert re.search(phrase.answer, answer), (phrase.text, answer)

    actions = log.find(events, {"event_type": "action", "message_id": mid})
    results = log.find(events, {"event_type": "action_result", "message_id": mid})
    if phrase.action is None:
        # Executes nothing: no action, no device command but the answer, nothing on any bulb.
        assert not actions, actions
        assert not results, results
        assert response["actions"] == [], response
        assert response.get("executed") is (phrase.error is None), response
        assert response.get("error") == phrase.error, response
        commands = [
            m
            for m in log.find("xiaozhi/commands/+", {})
            if str(m.payload.get("message_id", "")).startswith(mid)
            and m.payload.get("command") != "respond"
        ]
        assert not commands, commands
        assert not log.find("zigbee2mqtt/+/set", {}, after=heard.index)
        done = "nothing" if phrase.error is None else f"nothing ({phrase.error})"
    else:
        name, entity = _fill(phrase.action, device=device).split()
        wanted = {"action": name, "entity_id": entity}
        assert len(actions) == 1, actions
        assert matches(actions[0].payload["action"], wanted), actions[0]
        assert len(results) == 1, results
        assert results[0].payload["status"] == "ok", results[0]
        assert matches(results[0].payload["result"], phrase.result), results[0]
        assert response["executed"] is True, response
        assert [(a["action"], a["entity_id"]) for a in response["actions"]] == [(name, entity)]
        done = f"{name} {entity}"
    for topic, expected in phrase.effects:
        log.wait(
            _fill(topic, device=device),
            _fill(expected, device=device, mid=mid),
            after=heard.index,
            timeout=ANSWER_SECONDS,
        )
    return f'voice     {device}  "{phrase.text}" -> {done} -> "{answer}"'


async def _say_every_phrase(device: SimulatedDevice, up: UpProcess, sub: Subscriber) -> list[str]:
    """The device says each phrase in turn; each is checked before the next is said."""
    lines = []
    for phrase in PHRASES:
        since = device.now()
        await device.say(phrase.text)
        answer = await _answer_at_device(device, phrase, since)
        line = await asyncio.to_thread(_check_on_mqtt, sub.log, device.device_id, phrase, answer)
        await asyncio.to_thread(
            up.out.until, lambda line=line: line in up.out.lines, ANSWER_SECONDS, line
        )
        lines.append(line)
    return lines


async def test_every_demo_phrase_from_a_websocket_and_an_mqtt_device(
    run_up: Callable[..., UpProcess], run_sub: Callable[..., Subscriber]
) -> None:
    up = await asyncio.to_thread(run_up, XIAOZHI_DEMO_DEVICES="false")
    assert f"watch     mosquitto_sub -v -t 'xiaozhi/#' -p {up.broker_port}" in up.started
    sub = await asyncio.to_thread(run_sub, up.broker_port, "xiaozhi/#", "zigbee2mqtt/#")

    paho = PahoAsyncio()
    ws, mqtt = demo_speakers(up, paho)
    try:
        await ws.start()
        assert ws.setup.source == "ota", ws.setup
        assert ws.setup.ws_url == up.ws_url, ws.setup
        await mqtt.start()
        assert await mqtt.wait_connected(ANSWER_SECONDS)

        voice = await _say_every_phrase(ws, up, sub)
        voice += await _say_every_phrase(mqtt, up, sub)

        # The commands reached the devices themselves, not only the broker.
        assert ws.model.volume == 80
        assert mqtt.model.volume == 80
        assert mqtt.model.light_on is True
        assert ws.connected, "the WS device stays connected, for the shutdown below"
        joined = sub.log.find("xiaozhi/events/device_connected", {"device_id": ws.device_id})
        edge_id = joined[0].payload["edge_id"]

        mark = len(sub.log.messages) - 1
        lines = await asyncio.to_thread(up.ctrl_c)
    finally:
        await ws.stop()
        await mqtt.stop()
        await paho.close()

    # One `voice` line per command, each exactly once, and nothing went wrong on the way.
    assert [line for line in lines if line.startswith("voice ")] == voice
    assert f"device    demo_living_room connected (websocket, {edge_id})" in lines
    assert not [line for line in lines if "Traceback" in line or "[error" in line], lines

    # The integrator saw a clean stop, published before the broker went: the edge said its
    # WS device left and that it is offline, the hub that it is offline.
    log = sub.log
    await asyncio.to_thread(
        log.until,
        lambda: (
            log.find("xiaozhi/bridge/state", {"state": "offline"}, mark)
            and log.find(f"xiaozhi/bridge/edges/{edge_id}", {"state": "offline"}, mark)
            and log.find(f"xiaozhi/status/{ws.device_id}", {"status": "disconnected"}, mark)
        ),
        ANSWER_SECONDS,
        "hub and edge offline, WS device disconnected",
    )
