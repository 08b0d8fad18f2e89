"""The hub's MQTT units against a real Mosquitto: registry feed, fan-out, bridge requests,
Home Assistant discovery, an edge's last will, scale-out and a broker that lost its state.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support import Recorder, record
from xiaozhi.payloads import VoiceCommandEvent
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings

pytestmark = pytest.mark.integration  # a real Mosquitto

HA_ID = re.compile(r"[a-zA-Z0-9_-]+")


def status(device_id: str, transport: str = "websocket", **extra: Any) -> dict[str, Any]:
    return {"status": "connected", "device_id": device_id, "transport": transport, **extra}


async def snapshot_shows(watcher: Recorder, hub: HubService, check: Any) -> list[dict]:
    """Wait for a ``bridge/devices`` snapshot for which ``check(devices_by_id)`` holds."""

    def find() -> list[dict] | None:
        for snapshot in reversed(watcher.json(hub.topics.bridge_devices())):
            if check({d["id"]: d for d in snapshot}):
                return snapshot  # type: ignore[return-value]
        return None

    return await watcher.wait_for(find)


# -- group and broadcast fan-out ----------------------------------------------------------


async def test_group_commands_fan_out_to_members_and_broadcasts_are_left_alone(
    hub: HubService, watcher: Recorder
) -> None:
    t = hub.topics
    for device, transport in [
        ("demo_living_room", "websocket"),
        ("demo_kitchen", "mqtt"),
        ("demo_office", "websocket"),
    ]:
        await watcher.publish(t.status(device), status(device, transport), retain=True)
    await snapshot_shows(
        watcher, hub, lambda d: all(d[k]["transport"] for k in ("demo_kitchen", "demo_office"))
    )

    start = watcher.mark()
    alert = {"status": "info", "message": "dinner", "emotion": "happy"}
    await watcher.publish(
        t.group_command("downstairs"),
        {"command": "alert", "parameters": alert, "message_id": "g-1"},
    )
    for member in ("demo_living_room", "demo_kitchen"):
        command = await watcher.expect(
            t.command(member), lambda m: m["message_id"] == "g-1", after=start
        )
        assert command["device_id"] == member
        assert command["parameters"] == alert
    assert not watcher.json(t.command("demo_office"), after=start)

    # A broadcast is not republished: every device reads the broadcast topic (MQTT devices
    # themselves, WebSocket devices through their edge), so a copy on a device's own topic
    # would reach it twice. The group command after it shows the hub has read both.
    start = watcher.mark()
    await watcher.publish(t.broadcast_command(), {"command": "get_status"})
    await watcher.publish(t.group_command("downstairs"), {"command": "reboot", "message_id": "g-3"})
    for member in ("demo_living_room", "demo_kitchen"):
        await watcher.expect(t.command(member), lambda m: m["message_id"] == "g-3", after=start)
    for member in ("demo_living_room", "demo_kitchen", "demo_office"):
        assert [m["command"] for m in watcher.json(t.command(member), after=start)] in (
            [],
            ["reboot"],
        )

    start = watcher.mark()
    await watcher.publish(t.group_command("nobody"), {"command": "reboot"})
    await watcher.publish(t.group_command("downstairs"), b"{not json")
    await watcher.publish(
        t.group_command("all_speakers"), {"command": "reboot", "message_id": "g-2"}
    )
    await watcher.expect(t.command("demo_office"), lambda m: m["message_id"] == "g-2", after=start)
    fanned = [m["message_id"] for m in watcher.json(t.command("demo_kitchen"), after=start)]
    assert fanned == ["g-2"]
    assert 'xiaozhi_hub_invalid_messages_total{kind="command"} 2.0' in (
        hub.metrics.exposition().decode()
    )


# -- bridge requests -----------------------------------------------------------------------


async def request(
    watcher: Recorder, hub: HubService, path: str, payload: Any, *, transaction: Any = None
) -> dict[str, Any]:
    start = watcher.mark()
    await watcher.publish(hub.topics.bridge_request(path), payload)
    return await watcher.expect(
        hub.topics.bridge_response(path),
        lambda m: m.get("transaction") == transaction,
        after=start,
    )


async def test_bridge_requests_edit_the_registry_and_echo_the_transaction(
    hub: HubService, watcher: Recorder
) -> None:
    t = hub.topics
    answer = await request(
        watcher,
        hub,
        "device/rename",
        {"id": "demo_kitchen", "name": "Cooking corner", "transaction": 1},
        transaction=1,
    )
    assert answer == {
        "status": "ok",
        "data": {"id": "demo_kitchen", "from": "Kitchen speaker", "to": "Cooking corner"},
        "transaction": 1,
    }
    await snapshot_shows(watcher, hub, lambda d: d["demo_kitchen"]["name"] == "Cooking corner")
    config = t.discovery_config("number", "xiaozhi_demo_kitchen", "volume")
    renamed = await watcher.expect(config, lambda c: c["device"]["name"] == "Cooking corner")
    assert renamed["unique_id"] == "xiaozhi_demo_kitchen_volume"  # stable across renames

    answer = await request(
        watcher, hub, "group/add", {"id": "quiet", "name": "Quiet", "transaction": "t2"},
        transaction="t2",
    )  # fmt: skip
    assert answer["data"] == {"id": "quiet", "name": "Quiet"}
    answer = await request(
        watcher,
        hub,
        "group/members/add",
        {"group": "quiet", "device": "demo_office", "transaction": 3},
        transaction=3,
    )
    assert answer["status"] == "ok"
    groups = await watcher.expect(
        t.bridge_groups(),  # type: ignore[arg-type]
        lambda g: any(x["id"] == "quiet" and x["members"] == ["demo_office"] for x in g),
    )
    assert groups
    start = watcher.mark()
    await watcher.publish(t.group_command("quiet"), {"command": "reboot", "message_id": "q-1"})
    await watcher.expect(t.command("demo_office"), lambda m: m["message_id"] == "q-1", after=start)
    group_status = await watcher.expect(t.group_status("quiet"), lambda g: g["members"])
    assert group_status["members"] == ["demo_office"]
    assert group_status["status"] == "disconnected"  # never seen

    answer = await request(
        watcher,
        hub,
        "intent/test",
        {"text": "turn on the living room light", "transaction": 4},
        transaction=4,
    )
    assert answer["data"]["actions"] == [
        {
            "type": "homeassistant",
            "action": "turn_on",
            "entity_id": "light.living_room",
            "parameters": {},
        }
    ]
    assert (answer["data"]["executed"], answer["data"]["would_execute"]) == (False, True)
    assert hub.states["light.living_room"]["state"] == "off"  # nothing was executed

    answer = await request(watcher, hub, "health_check", {"transaction": 5}, transaction=5)
    assert answer["data"]["healthy"] is True
    assert answer["data"]["intents_loaded"] is True


async def test_bridge_edits_survive_a_hub_restart(
    hub: HubService, watcher: Recorder, hub_settings: HubSettings, engine: IntentEngine
) -> None:
    """Renames, areas, groups and removals are the operator's: a restarted hub keeps them (as
    zigbee2mqtt keeps them in its configuration), and a removed device's retained status,
    still on the broker, does not bring it back."""
    t = hub.topics
    await watcher.publish(t.status("aa11"), status("aa11"), retain=True)
    await watcher.publish(t.status("bb22"), status("bb22"), retain=True)
    await snapshot_shows(watcher, hub, lambda d: {"aa11", "bb22"} <= d.keys())
    edits = [
        ("device/rename", {"id": "demo_kitchen", "name": "Cooking corner"}),
        ("device/rename", {"id": "aa11", "name": "Hall speaker"}),
        ("device/area", {"id": "aa11", "area": "office"}),
        ("device/area", {"id": "demo_office", "area": None}),
        ("group/add", {"id": "upstairs", "name": "Upstairs"}),
        ("group/members/add", {"group": "upstairs", "device": "aa11"}),
        ("group/remove", {"id": "all_speakers"}),
        ("device/remove", {"id": "bb22"}),
    ]
    for number, (path, payload) in enumerate(edits):
        answer = await request(
            watcher, hub, path, {**payload, "transaction": number}, transaction=number
        )
        assert answer["status"] == "ok", (path, answer)
    await hub.stop()

    again = HubService(hub_settings, home=engine.home, engine=engine)
    await again.start()
    try:
        # Mosquitto sends a subscription's retained messages before anything published
        # after it: once this live status is in, the retained ones (bb22's too) were read.
        await watcher.publish(t.status("cc33"), status("cc33"))
        await watcher.wait_for(lambda: again.registry.device("cc33"))
        registry = again.registry
        kitchen, hall, office = (
            registry.device(d) for d in ("demo_kitchen", "aa11", "demo_office")
        )
        assert kitchen is not None
        assert kitchen.name == "Cooking corner"
        assert hall is not None
        assert (hall.name, hall.area) == ("Hall speaker", "office")
        assert office is not None
        assert office.area is None
        assert registry.device("bb22") is None, (
            "a removed device came back from its retained status"
        )
        assert {g.group_id: g.members for g in registry.groups()} == {
            "downstairs": ["demo_living_room", "demo_kitchen"],
            "upstairs": ["aa11"],
        }
        # A removed device that really speaks again is known again.
        await watcher.publish(t.status("bb22"), status("bb22"), retain=True)
        await watcher.wait_for(lambda: again.registry.device("bb22"))
    finally:
        await again.stop()


async def test_bridge_request_errors_are_answered(hub: HubService, watcher: Recorder) -> None:
    answer = await request(
        watcher, hub, "device/rename", {"id": "nope", "name": "x", "transaction": 6},
        transaction=6,
    )  # fmt: skip
    assert answer == {"status": "error", "data": {}, "error": "unknown device 'nope'",
                      "transaction": 6}  # fmt: skip
    answer = await request(watcher, hub, "device/remove", {"transaction": 8}, transaction=8)
    assert answer["error"] == "missing required field 'id'"
    answer = await request(watcher, hub, "device/frobnicate", {"transaction": 7}, transaction=7)
    assert answer["error"].startswith("unknown request 'device/frobnicate'")
    answer = await request(watcher, hub, "group/add", b"{oops")
    assert answer["status"] == "error"
    assert "invalid JSON" in answer["error"]

    # A path outside the id grammar cannot be answered on a topic: counted and logged.
    start = watcher.mark()
    bad = hub.topics.bridge_requests().removesuffix("#") + "Device/Rename"
    await watcher.publish(bad, {"transaction": 9})
    await request(watcher, hub, "health_check", {"transaction": 10}, transaction=10)
    responses = [m.topic for m in watcher.messages[start:] if "/bridge/response/" in m.topic]
    assert responses == [hub.topics.bridge_response("health_check")]
    assert 'xiaozhi_hub_invalid_messages_total{kind="bridge_request"} 1.0' in (
        hub.metrics.exposition().decode()
    )


# -- Home Assistant discovery ---------------------------------------------------------------


async def test_discovery_clears_stale_configs_publishes_new_devices_and_resends(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    prefix = hub_settings.discovery_prefix
    ghost = f"{prefix}/sensor/xiaozhi_ghost/uptime/config"
    foreign = f"{prefix}/sensor/other_bridge/temperature/config"
    await watcher.publish(ghost, {"name": "ghost"}, retain=True)
    await watcher.publish(foreign, {"name": "not ours"}, retain=True)
    await watcher.expect(foreign)

    hub = HubService(hub_settings, home=engine.home, engine=engine)
    await hub.start()
    try:
        t = hub.topics
        assert b"" in await watcher.wait_for(lambda: watcher.payloads(ghost)[1:])  # cleared
        assert b"" not in watcher.payloads(foreign)

        # A device that appears gets its configs (retained), with HA's required fields.
        device = "aabbccddeeff"
        await watcher.publish(
            t.status(device), status(device, firmware_version="1.8.2"), retain=True
        )
        topic = t.discovery_config("binary_sensor", f"xiaozhi_{device}", "status")
        config = await watcher.expect(topic)
        assert config["unique_id"] == f"xiaozhi_{device}_status"
        assert config["device"]["identifiers"] == [f"xiaozhi_{device}"]
        assert config["device"]["sw_version"] == "1.8.2"
        assert config["origin"]["name"] == "xiaozhi-hub"
        assert config["state_topic"] == t.status(device)
        await watcher.publish(
            t.sensor(device, "temperature"),
            {"sensor_type": "temperature", "value": 22.5, "unit": "°C", "device_id": device},
            retain=True,
        )
        sensor = t.discovery_config("sensor", f"xiaozhi_{device}", "temperature")
        reading = await watcher.expect(sensor)
        assert reading["device_class"] == "temperature"
        assert [a["topic"] for a in reading["availability"]] == [
            t.bridge_state(),
            t.status(device),
        ]
        assert reading["availability_mode"] == "all"

        late_filter = f"{prefix}/+/xiaozhi_{device}/+/config"
        async with record(hub_settings.mqtt_url, late_filter, name="late") as late:
            # retained: a subscriber arriving later gets every one of them
            await late.wait_for(lambda: {m.topic for m in late.messages if m.payload} >= {sensor})
            for found in late.messages:
                assert found.retain
                _, component, node, object_id, _ = found.topic.split("/")
                assert HA_ID.fullmatch(node)
                assert HA_ID.fullmatch(object_id)
                assert component in {"binary_sensor", "sensor", "number", "button", "event"}

        # Home Assistant restarted: everything is sent again.
        start = watcher.mark()
        await watcher.publish(t.ha_status(), b"online", qos=0)
        await watcher.expect(topic, after=start)
        await watcher.expect(t.discovery_config("number", "xiaozhi_demo_office", "volume"),
                             after=start)  # fmt: skip
        await watcher.expect(t.bridge_state(), lambda s: s["state"] == "online", after=start)

        # Removed: every config of the device is cleared with an empty retained payload.
        start = watcher.mark()
        answer = await request(watcher, hub, "device/remove", {"id": device, "transaction": 1},
                               transaction=1)  # fmt: skip
        assert answer["status"] == "ok"
        await watcher.wait_for(lambda: b"" in watcher.payloads(sensor, after=start))
        assert b"" in watcher.payloads(topic, after=start)
    finally:
        await hub.stop()
    state = await watcher.expect(t.bridge_state(), lambda s: s["state"] == "offline")
    assert state == {"state": "offline"}


# -- an edge's last will ---------------------------------------------------------------------

_EDGE = """
import asyncio, sys
from xiaozhi.topics import TopicTree
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

async def main() -> None:
    url, base, edge, device = sys.argv[1:5]
    t = TopicTree(base=base)
    owner = MqttOwner(
        url, client_id=edge,
        will=OutMessage(t.bridge_edge(edge), b'{"state":"offline"}', 1, True),
        birth=[OutMessage(t.bridge_edge(edge), b'{"state":"online"}', 1, True)],
    )
    await owner.start(wait_connected=15)
    event = ('{"event_type":"device_connected","device_id":"%s","transport":"websocket",'
             '"edge_id":"%s"}' % (device, edge))
    owner.publish_nowait(OutMessage(t.device_connected(), event.encode(), 1))
    await owner.wait_flushed()
    print("online", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_an_edges_last_will_disconnects_its_devices(
    hub: HubService, watcher: Recorder, mosquitto: ManagedMosquitto
) -> None:
    t = hub.topics
    edge, device = f"edge-{hub.settings.hub_id}", "112233445566"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _EDGE, mosquitto.url, t.base, edge, device,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        while (line := await asyncio.wait_for(process.stdout.readline(), 15)) != b"online\n":
            assert line, "the edge process ended before it came online"
        await snapshot_shows(
            watcher, hub, lambda d: device in d and d[device]["status"] == "connected"
        )
    finally:
        process.kill()  # no DISCONNECT: the broker fires the edge's will
        await process.wait()
    gone = await watcher.expect(t.status(device), lambda s: s["status"] == "disconnected")
    assert gone["edge_id"] == edge
    event = await watcher.expect(t.device_disconnected(), lambda e: e["device_id"] == device)
    assert event["reason"] == "edge_offline"
    await snapshot_shows(
        watcher, hub, lambda d: device in d and d[device]["status"] == "disconnected"
    )
    assert hub.edges[edge].value == "offline"


# -- bounded by what is there ---------------------------------------------------------------


async def test_a_burst_of_devices_makes_a_few_snapshots_not_one_each(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    interval = 0.5
    settings = hub_settings.model_copy(update={"snapshot_min_interval_seconds": interval})
    hub = HubService(settings, home=engine.home, engine=engine)
    await hub.start()
    try:
        t = hub.topics
        start, began = watcher.mark(), asyncio.get_running_loop().time()
        devices = [f"burst{n:02d}" for n in range(40)]
        for device in devices:
            await watcher.publish(t.status(device), status(device))
        await snapshot_shows(watcher, hub, lambda d: set(devices) <= d.keys())
        elapsed = asyncio.get_running_loop().time() - began
        snapshots = watcher.json(t.bridge_devices(), after=start)
        assert len(snapshots) <= elapsed / interval + 2, (len(snapshots), elapsed)
    finally:
        await hub.stop()


async def test_learnt_devices_gone_long_enough_are_forgotten_everywhere(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    """A one-time id (a simulator run, a device sold) does not stay in the registry, in Home
    Assistant or in the broker's retained store forever."""
    settings = hub_settings.model_copy(update={"device_expire_after_seconds": 0.5})
    hub = HubService(settings, home=engine.home, engine=engine)
    t = hub.topics
    left = "2026-01-01T00:00:00.000Z"  # a retained "disconnected" from long ago
    await watcher.publish(
        t.status("oldtimer"), status("oldtimer", status="disconnected", timestamp=left), retain=True
    )
    await watcher.publish(
        t.sensor("oldtimer", "temperature"),
        {"sensor_type": "temperature", "value": 20, "device_id": "oldtimer"},
        retain=True,
    )
    await watcher.publish(t.status("present"), status("present"), retain=True)
    await hub.start()
    try:
        cleared = await watcher.first(
            lambda m: m.topic == t.status("oldtimer") and m.payload == b"" and not m.retain
        )
        assert cleared is not None
        await watcher.first(
            lambda m: m.topic == t.sensor("oldtimer", "temperature") and m.payload == b""
        )
        await watcher.wait_for(lambda: hub.registry.device("oldtimer") is None)
        await snapshot_shows(watcher, hub, lambda d: "oldtimer" not in d and "present" in d)
        # Its Home Assistant entities are deleted (empty retained configs).
        prefix = f"{settings.discovery_prefix}/"
        await watcher.first(
            lambda m: m.topic.startswith(prefix) and "xiaozhi_oldtimer" in m.topic and not m.payload
        )
        assert hub.registry.device("present") is not None  # connected: stays
    finally:
        await hub.stop()


# -- scale-out -------------------------------------------------------------------------------


async def test_two_hubs_on_a_shared_subscription_handle_each_command_once(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    second = hub_settings.model_copy(update={"hub_id": hub_settings.hub_id + "-b"})
    hubs = [HubService(s, home=engine.home, engine=engine) for s in (hub_settings, second)]
    for hub in hubs:
        await hub.start()
    try:
        t = hubs[0].topics
        devices = ["demo_living_room", "demo_kitchen", "demo_office"]
        total = 24
        sent = {}
        for i in range(total):
            device = devices[i % 3]
            message_id = f"scale-{i}"
            sent[message_id] = device
            event = VoiceCommandEvent(
                device_id=device, command="lock the front door", confidence=1.0,
                language="en", message_id=message_id,
            )  # fmt: skip
            await watcher.publish(t.voice_command_events(), event.to_wire())

        def responds() -> Counter[str]:
            return Counter(
                m["message_id"]
                for device in devices
                for m in watcher.json(t.command(device))
                if m["command"] == "respond"
            )

        await watcher.wait_for(lambda: set(responds()) >= set(sent), within=20)
        # Two more commands (one per replica, round-robin) as a barrier for late duplicates.
        for message_id in ("barrier-1", "barrier-2"):
            event = VoiceCommandEvent(
                device_id="demo_office", command="turn on the light", confidence=1.0,
                language="en", message_id=message_id,
            )  # fmt: skip
            await watcher.publish(t.voice_command_events(), event.to_wire())
        await watcher.wait_for(lambda: {"barrier-1", "barrier-2"} <= set(responds()))
        counts = responds()
        assert all(counts[m] == 1 for m in sent), counts
        handled = [
            sum(
                s.value
                for metric in hub.metrics.registry.collect()
                if metric.name == "xiaozhi_hub_voice_commands"
                for s in metric.samples
                if s.name.endswith("_total")
            )
            for hub in hubs
        ]
        assert sum(handled) == total + 2
        assert all(n > 0 for n in handled), handled  # both replicas took a share
    finally:
        for hub in hubs:
            await hub.stop()


# -- a broker restart that lost everything ----------------------------------------------------


@pytest.fixture
def own_broker(tmp_path: Path) -> Any:
    with ManagedMosquitto(tmp_path / "broker") as broker:
        yield broker


async def test_retained_state_is_republished_after_a_broker_lost_it(
    own_broker: ManagedMosquitto, hub_settings: HubSettings, engine: IntentEngine
) -> None:
    settings = hub_settings.model_copy(update={"mqtt_url": own_broker.url})
    hub = HubService(settings, home=engine.home, engine=engine)
    await hub.start()
    try:
        await asyncio.wait_for(hub.owner.wait_flushed(), 15)
        await asyncio.to_thread(own_broker.kill)
        (own_broker.state_dir / "mosquitto.db").unlink(missing_ok=True)
        await asyncio.wait_for(hub.owner.disconnected.wait(), 15)
        await asyncio.to_thread(own_broker.start)
        await asyncio.wait_for(hub.owner.connected.wait(), 30)
        await asyncio.wait_for(hub.owner.wait_flushed(), 30)

        t = hub.topics
        config = t.discovery_config("number", "xiaozhi_demo_kitchen", "volume")
        wanted = {t.bridge_devices(), t.bridge_info(), t.bridge_state(), config}
        async with record(own_broker.url, *wanted, name="late") as late:
            await late.wait_for(lambda: {m.topic for m in late.messages if m.payload} >= wanted)
            assert late.json(t.bridge_state()) == [{"state": "online"}]
    finally:
        await hub.stop()
