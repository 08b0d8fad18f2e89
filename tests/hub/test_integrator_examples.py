"""The integrators' examples of docs/examples/ played against a real hub on a real Mosquitto.

The Node-RED flow is read as Node-RED would import it, and its MQTT traffic is played by a
client standing in for Node-RED: its `mqtt in` topics, and what its function nodes publish
(their JavaScript is not run: `show_what_was_heard` and `not_understood` below say in Python
what the function nodes do, and the test checks the JavaScript still says the same). The
zigbee2mqtt home is loaded as the hub loads a home file, and its bulb's set topic is watched.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub.test_hub_voice import say
from tests.support import Received, Recorder, record
from xiaozhi.commands import parse_parameters
from xiaozhi.payloads import CommandPayload
from xiaozhi.topics import TopicKind, TopicTree
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_hub.home import load_home
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
FLOW = EXAMPLES / "node-red-voice-flow.json"
Z2M_HOME = EXAMPLES / "zigbee2mqtt-home.yaml"


# -- the flow as Node-RED imports it ------------------------------------------------------------


def load_flow() -> list[dict[str, Any]]:
    flow = json.loads(FLOW.read_text(encoding="utf-8"))
    assert isinstance(flow, list), "a flow export is a JSON array of nodes"
    assert flow
    return flow


def nodes_of(flow: list[dict[str, Any]], node_type: str) -> list[dict[str, Any]]:
    return [node for node in flow if node["type"] == node_type]


def by_name(flow: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (node,) = [node for node in flow if node.get("name") == name]
    return node


def test_the_node_red_flow_imports_as_one_tab_on_one_broker() -> None:
    flow = load_flow()
    ids = [node["id"] for node in flow]
    assert len(ids) == len(set(ids)), "node ids are unique"
    (tab,) = nodes_of(flow, "tab")
    (broker,) = nodes_of(flow, "mqtt-broker")
    assert (broker["broker"], broker["port"]) == ("localhost", "1883")
    for node in flow:
        if node["type"] in ("tab", "mqtt-broker"):
            continue
        assert node["z"] == tab["id"], f"{node['name']} is on the flow's tab"
        for output in node["wires"]:
            assert all(target in ids for target in output), f"{node['name']} wires to a node"
        if node["type"].startswith("mqtt "):
            assert node["broker"] == broker["id"]
    # What the hub produces and accepts (docs/topics.md §1), read by their kind.
    tree = TopicTree()
    kinds = {
        tree.parse(node["topic"].replace("+", "demo_kitchen")).kind
        for node in nodes_of(flow, "mqtt in")
    }
    assert kinds == {
        TopicKind.VOICE_COMMAND_EVENTS,
        TopicKind.DEVICE_VOICE_COMMAND,
        TopicKind.DEVICE_EVENTS,
    }
    assert all(node["datatype"] == "json" for node in nodes_of(flow, "mqtt in"))
    (out,) = nodes_of(flow, "mqtt out")
    # Commands are QoS 1 and never retained; the topic comes from the function (msg.topic).
    options = tree.publish_options(tree.command("demo_kitchen"))
    assert (int(out["qos"]), out["retain"] == "true") == (int(options.qos), options.retain)
    assert out["topic"] == ""


# -- the function nodes, said in Python -----------------------------------------------------------


def show_what_was_heard(topic: str, heard: dict[str, Any], base: str) -> tuple[str, dict[str, Any]]:
    """The "show what was heard" function node: an alert on the speaker's command topic."""
    levels = topic.split("/")
    device = levels[-1] if levels[-2] == "voice_command" else heard["device_id"]
    return f"{base}/commands/{device}", {
        "command": "alert",
        "parameters": {
            "status": "info",
            "message": "Heard: " + heard["command"],
            "emotion": "neutral",
        },
        "message_id": f"nodered-{heard['message_id']}",
        "device_id": device,
    }


def not_understood(event: dict[str, Any]) -> dict[str, Any] | None:
    """The "not understood" function node: the hub's responses that executed nothing."""
    if event.get("event_type") != "response" or event.get("executed") is not False:
        return None
    return {
        "device_id": event["device_id"],
        "heard": event["stt"],
        "error": event["error"],
        "answer": event["text"],
    }


def test_the_function_nodes_say_what_the_python_says() -> None:
    flow = load_flow()
    show = by_name(flow, "show what was heard")["func"]
    assert 'const base = "xiaozhi";' in show
    assert 'levels[levels.length - 2] === "voice_command" ? levels[levels.length - 1]' in show
    assert 'msg.topic = base + "/commands/" + device;' in show
    for fragment in (
        'command: "alert"',
        'parameters: {status: "info", message: "Heard: " + heard.command, emotion: "neutral"}',
        'message_id: "nodered-" + (heard.message_id',
        "device_id: device",
    ):
        assert fragment in show
    missed = by_name(flow, "not understood")["func"]
    assert 'event.event_type !== "response"' in missed
    assert "event.executed !== false" in missed
    assert (
        "{device_id: event.device_id, heard: event.stt, error: event.error, answer: event.text}"
        in missed
    )


# -- the flow's traffic against the hub -----------------------------------------------------------


@pytest.fixture
async def mqtt_device(
    mosquitto: ManagedMosquitto, hub_settings: HubSettings
) -> AsyncIterator[MqttDevice]:
    """A simulated MQTT device on the hub's topic tree, subscribed to its command topics."""
    settings = SimSettings(
        mqtt_url=mosquitto.url,
        base_topic=hub_settings.base_topic,
        sim_ota_url="",
        sim_token="",
        sim_reconnect_delay_seconds=0.2,
        sim_heartbeat_interval_seconds=30.0,
        sim_seed=0,
    )
    paho = PahoAsyncio()
    device = MqttDevice(make_identity(name=f"nodered-{uuid.uuid4().hex[:6]}"), settings, paho=paho)
    topics = TopicTree(base=hub_settings.base_topic)
    try:
        async with record(mosquitto.url, topics.status(device.device_id), name="up") as ready:
            await device.start()
            assert await device.wait_connected(10), "the device did not connect"
            # Its retained `connected` status comes after its subscriptions, on one connection.
            await ready.first(lambda m: m.obj.get("status") == "connected")
        yield device
    finally:
        await device.stop()
        await paho.close()


def on_base(topic: str, base: str) -> str:
    """A flow topic on the hub's base topic (the tests' hub has a base topic of its own)."""
    assert topic.startswith("xiaozhi/")
    return base + topic.removeprefix("xiaozhi")


def matches(topic_filter: str, topic: str) -> bool:
    return re.fullmatch(re.escape(topic_filter).replace(r"\+", "[^/]+"), topic) is not None


@pytest.mark.integration
async def test_the_node_red_flow_hears_voice_commands_and_its_command_reaches_the_device(
    mosquitto: ManagedMosquitto, hub: HubService, watcher: Recorder, mqtt_device: MqttDevice
) -> None:
    flow = load_flow()
    base = hub.settings.base_topic
    voice_in = [
        on_base(by_name(flow, name)["topic"], base)
        for name in ("voice commands (edges)", "voice commands (MQTT devices)")
    ]
    events_in = on_base(by_name(flow, "device events (hub answers)")["topic"], base)
    did = mqtt_device.device_id

    async with record(mosquitto.url, *voice_in, events_in, name="node-red") as node_red:

        def heard_on_flow(message: Received) -> bool:
            return any(matches(f, message.topic) for f in voice_in) and (
                message.obj.get("event_type") == "voice_command"
            )

        # A device says something: it publishes on its own topic, the hub acts on it, and the
        # flow's `mqtt in` gets the command as it was heard.
        await mqtt_device.say("turn on the living room light")
        heard = await node_red.first(lambda m: heard_on_flow(m) and m.obj["device_id"] == did)
        assert heard.topic == hub.topics.device_voice_command(did)
        await watcher.expect(
            hub.topics.device_events(did),
            lambda e: e["event_type"] == "response" and e["executed"] is True,
        )

        # The function node's command, published as the `mqtt out` node does: a command the
        # hub's vocabulary accepts, run by the device, which answers with its result.
        topic, command = show_what_was_heard(heard.topic, heard.obj, base)
        assert topic == hub.topics.command(did)
        assert parse_parameters(CommandPayload.model_validate(command)) is not None
        await node_red.publish(topic, command)
        result = await watcher.expect(
            hub.topics.device_events(did),
            lambda e: (
                e.get("event_type") == "command_result"
                and e.get("message_id") == command["message_id"]
            ),
        )
        assert (result["command"], result["status"]) == ("alert", "ok")
        assert mqtt_device.model.last_alert == {
            "status": "info",
            "message": "Heard: turn on the living room light",
            "emotion": "neutral",
        }

        # As an edge speaks for its WebSocket devices: the fleet-wide topic, the speaker in
        # the payload; the flow answers that device. The hub did not understand this one: its
        # `response` reaches the flow's third `mqtt in`, in the shape "not understood" reads.
        mark = node_red.mark()
        message_id = await say(watcher, hub, "open the pod bay doors", did)
        heard = await node_red.first(
            lambda m: heard_on_flow(m) and m.obj.get("message_id") == message_id, after=mark
        )
        assert heard.topic == hub.topics.voice_command_events()
        assert show_what_was_heard(heard.topic, heard.obj, base)[0] == hub.topics.command(did)
        answer = await node_red.first(
            lambda m: (
                matches(events_in, m.topic)
                and m.obj.get("event_type") == "response"
                and m.obj.get("message_id") == message_id
            ),
            after=mark,
        )
        missed = not_understood(answer.obj)
        assert missed is not None
        assert missed["device_id"] == did
        assert missed["heard"] == "open the pod bay doors"
        assert missed["error"] == "unknown_name"
        assert missed["answer"] == "I don't know a device called pod bay doors."


# -- the zigbee2mqtt home -------------------------------------------------------------------------


@pytest.fixture
async def z2m_hub(hub_settings: HubSettings, watcher: Recorder) -> AsyncIterator[HubService]:
    """A hub on the example zigbee2mqtt home, loaded as `xiaozhi hub --config` loads it."""
    home = load_home(Z2M_HOME)
    service = HubService(hub_settings, home=home, engine=IntentEngine(home))
    await service.start()
    yield service
    await service.stop()


@pytest.mark.integration
async def test_the_zigbee2mqtt_home_drives_the_bulb_and_the_plug_on_their_set_topics(
    z2m_hub: HubService, watcher: Recorder
) -> None:
    bulb, plug = "zigbee2mqtt/hallway_bulb/set", "zigbee2mqtt/coffee_plug/set"
    for text, device, topic, payload in (
        ("turn on the hallway light", "somebody", bulb, {"state": "ON"}),
        ("set the hall light to 50%", "somebody", bulb, {"state": "ON", "brightness": 127}),
        ("turn off the light", "hallway_speaker", bulb, {"state": "OFF"}),  # its area's
        ("turn on the coffee maker", "somebody", plug, {"state": "ON"}),
    ):
        mark = watcher.mark()
        await say(watcher, z2m_hub, text, device)
        assert await watcher.expect(topic, after=mark) == payload, text
