"""Simulated fleets stay out of the way (issue 17, point 7): a real simulator device, through a
real edge, on a real Mosquitto, is marked ``simulated`` in the hub's registry, gets no Home
Assistant discovery, and goes with one bulk request; a real-looking device beside it is
discovered and left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import StartEdge
from tests.hub.conftest import WRITE_KEY
from tests.support import Recorder
from xiaozhi.payloads import CommandPayload
from xiaozhi.topics import TopicTree
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_edge.server import EdgeServer
from xiaozhi_hub.device_tools import DeviceTools
from xiaozhi_hub.http import RunningHub, run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

pytestmark = pytest.mark.integration  # a real Mosquitto, edge and simulator

REAL = "kitchen_box_real"  # no simulator mark: what a real board's MQTT client publishes


@pytest.fixture
def sim_settings(mosquitto: ManagedMosquitto, hub_settings: HubSettings) -> SimSettings:
    """The simulator on the hub's broker and base topic, without a setup endpoint."""
    return SimSettings(
        mqtt_url=mosquitto.url,
        base_topic=hub_settings.base_topic,
        sim_ota_url="",
        sim_token="",
        sim_binary_version=1,
        sim_seed=0,
    )


@contextlib.asynccontextmanager
async def sim_device(
    sim_settings: SimSettings, edge: EdgeServer, name: str
) -> AsyncIterator[WsDevice]:
    """A simulator WebSocket device connected to ``edge`` (woken, so its socket is open)."""
    url = f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/"
    device = WsDevice(make_identity(name=name), sim_settings.model_copy(update={"sim_ws_url": url}))
    await device.start()
    try:
        await device.wake()
        yield device
    finally:
        await device.stop()


def configs_of(watcher: Recorder, prefix: str, device_id: str) -> list[Any]:
    """Non-empty Home Assistant discovery configs published for ``device_id``."""
    return [
        m
        for m in watcher.messages
        if m.topic.startswith(f"{prefix}/") and f"xiaozhi_{device_id}" in m.topic and m.payload
    ]


async def devices_snapshot(watcher: Recorder, topics: TopicTree, check: Any) -> dict[str, dict]:
    def find() -> dict[str, dict] | None:
        for snapshot in reversed(watcher.json(topics.bridge_devices())):
            by_id = {d["id"]: d for d in snapshot}
            if check(by_id):
                return by_id
        return None

    return await watcher.wait_for(find)


async def real_looking_device(watcher: Recorder, topics: TopicTree) -> None:
    status = {"status": "connected", "device_id": REAL, "transport": "mqtt", "uptime": 5}
    await watcher.publish(topics.status(REAL), status, retain=True)


async def test_a_simulated_device_is_marked_kept_out_of_home_assistant_and_removed_in_bulk(
    hub: HubService,
    hub_settings: HubSettings,
    watcher: Recorder,
    start_edge: StartEdge,
    sim_settings: SimSettings,
) -> None:
    t = hub.topics
    prefix = hub_settings.discovery_prefix
    edge = await start_edge(base_topic=hub_settings.base_topic)
    async with sim_device(sim_settings, edge, "bulk-removal") as device:
        sim_id = device.identity.device_id
        # The edge says so in the device's status and connection event...
        status = await watcher.expect(t.status(sim_id), lambda s: s["status"] == "connected")
        assert status["simulated"] is True
        event = await watcher.expect(t.device_connected(), lambda e: e["device_id"] == sim_id)
        assert event["simulated"] is True
        # ... and the hub's registry records it, in the retained snapshot as well.
        await devices_snapshot(watcher, t, lambda d: d.get(sim_id, {}).get("simulated"))
        record = hub.registry.device(sim_id)
        assert record is not None
        assert "simulated" not in record.telemetry  # a mark, not a Home Assistant sensor

        # A real-looking device, heard after it, is discovered; once its configs are out,
        # the simulated one's (handled before) would be too: there are none.
        await real_looking_device(watcher, t)
        await watcher.wait_for(lambda: configs_of(watcher, prefix, REAL))
        snapshot = await devices_snapshot(watcher, t, lambda d: REAL in d)
        assert snapshot[REAL]["simulated"] is False
        assert configs_of(watcher, prefix, sim_id) == []
    await watcher.expect(
        t.device_disconnected(), lambda e: e["device_id"] == sim_id and e["simulated"]
    )
    await watcher.wait_for(lambda: not hub.registry.device(sim_id).connected)  # type: ignore[union-attr]

    # One request removes every simulated device, and only those.
    start = watcher.mark()
    await watcher.publish(t.bridge_request("device/remove_simulated"), {"transaction": "bulk"})
    answer = await watcher.expect(
        t.bridge_response("device/remove_simulated"), lambda r: r["transaction"] == "bulk"
    )
    assert (answer["status"], answer["data"]) == ("ok", {"removed": [sim_id]})
    snapshot = await devices_snapshot(watcher, t, lambda d: sim_id not in d)
    assert REAL in snapshot
    assert hub.registry.device(REAL) is not None
    # Its retained status is cleared, so nothing brings it back at the next start.
    await watcher.first(lambda m: m.topic == t.status(sim_id) and m.payload == b"", after=start)
    assert configs_of(watcher, prefix, REAL)  # untouched: no empty config followed
    assert not [
        m
        for m in watcher.messages[start:]
        if m.topic.startswith(f"{prefix}/") and f"xiaozhi_{REAL}" in m.topic and not m.payload
    ]


async def test_discover_simulated_puts_them_in_home_assistant(
    hub_settings: HubSettings, engine: Any, watcher: Recorder
) -> None:
    settings = hub_settings.model_copy(update={"discover_simulated": True})
    hub = HubService(settings, home=engine.home, engine=engine)
    await hub.start()
    try:
        t = hub.topics
        status = {"status": "connected", "device_id": "simbox", "transport": "mqtt"}
        await watcher.publish(t.status("simbox"), {**status, "simulated": True}, retain=True)
        await watcher.wait_for(lambda: configs_of(watcher, settings.discovery_prefix, "simbox"))
        assert hub.registry.device("simbox").simulated  # type: ignore[union-attr]
    finally:
        await hub.stop()


async def test_rest_removes_devices_silent_for_long_and_refuses_an_empty_filter(
    running_hub: RunningHub, watcher: Recorder
) -> None:
    hub = running_hub.service
    t = hub.topics
    long_ago = "2026-01-01T00:00:00.000Z"
    gone = {"status": "disconnected", "device_id": "oldbox", "timestamp": long_ago}
    await watcher.publish(t.status("oldbox"), gone, retain=True)
    await real_looking_device(watcher, t)
    await devices_snapshot(watcher, t, lambda d: {"oldbox", REAL} <= d.keys())
    url = f"http://127.0.0.1:{running_hub.port}/api/v1/devices/remove"
    headers = {"X-API-Key": WRITE_KEY}
    async with httpx.AsyncClient() as client:
        empty = await client.post(url, json={}, headers=headers)
        assert empty.status_code == 422
        answer = await client.post(url, json={"not_seen_for_seconds": 3600}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"removed": ["oldbox"]}
    snapshot = await devices_snapshot(watcher, t, lambda d: "oldbox" not in d)
    assert REAL in snapshot  # connected and just heard from: stays


async def tools_kept(hub: HubService, device_id: str) -> DeviceTools:
    """What the hub kept of ``device_id``'s ``mcp_tools`` event, once it has (10 s at most)."""
    unit = hub.device_tools
    async with asyncio.timeout(10):
        while (kept := unit.of(device_id)) is None:
            unit.updated.clear()
            if (kept := unit.of(device_id)) is None:
                await unit.updated.wait()
    return kept


async def test_the_tools_a_device_announced_before_any_page_opened_are_served(
    running_hub: RunningHub,
    hub_settings: HubSettings,
    watcher: Recorder,
    start_edge: StartEdge,
    sim_settings: SimSettings,
) -> None:
    """Firmware announces its MCP tools once, on connecting, in a non-retained event: the hub
    keeps the last list of each device, so a dashboard opened later (no stream session was
    ever opened here) lists them from ``GET /devices/{id}``."""
    t = running_hub.service.topics
    edge = await start_edge(base_topic=hub_settings.base_topic)
    async with sim_device(sim_settings, edge, "tools-before") as device:
        sim_id = device.identity.device_id
        event = await watcher.expect(
            t.device_events(sim_id), lambda e: e["event_type"] == "mcp_tools"
        )
        assert running_hub.service.stream.sessions == 0
        await tools_kept(running_hub.service, sim_id)
        async with httpx.AsyncClient(headers={"X-API-Key": WRITE_KEY}, timeout=10) as http:
            one = await http.get(f"{running_hub.url}/api/v1/devices/{sim_id}")
            data = one.json()["data"]
            assert data["mcp_tools"] == sorted(event["tools"])
            assert "self.audio_speaker.set_volume" in data["mcp_tools"]
            assert data["mcp_tools_at"] == event["timestamp"]
            listed = (await http.get(f"{running_hub.url}/api/v1/devices")).json()["data"]
            assert all("mcp_tools" not in d for d in listed)  # a fleet's lists stay out
    await watcher.wait_for(lambda: not running_hub.service.registry.device(sim_id).connected)  # type: ignore[union-attr]
    async with httpx.AsyncClient(headers={"X-API-Key": WRITE_KEY}, timeout=10) as http:
        removed = await http.post(
            f"{running_hub.url}/api/v1/devices/remove", json={"simulated": True}
        )
        assert removed.json()["message"] == "1 device removed"
    assert running_hub.service.device_tools.of(sim_id) is None  # forgotten with the device


async def test_a_hub_started_after_a_device_announced_still_serves_its_tools(
    hub_settings: HubSettings,
    engine: IntentEngine,
    watcher: Recorder,
    start_edge: StartEdge,
    sim_settings: SimSettings,
) -> None:
    """A device that announced its tools before the hub started (a restart, a second
    replica) announced them to nobody: the edge sees the hub replica come online on
    ``bridge/hubs/{hub_id}/state`` and publishes the device's ``mcp_tools`` event again, with
    the stamp of the listing, so the device's page lists them without a reconnect."""
    t = TopicTree(base=hub_settings.base_topic)
    edge = await start_edge(base_topic=hub_settings.base_topic)
    async with sim_device(sim_settings, edge, "tools-hub-later") as device:
        sim_id = device.identity.device_id
        event = await watcher.expect(
            t.device_events(sim_id), lambda e: e["event_type"] == "mcp_tools"
        )
        assert edge.counters.mcp_tools_announced_again == 0  # no hub yet: nobody to tell
        async with run_hub(hub_settings, home=engine.home, engine=engine) as running:
            kept = await tools_kept(running.service, sim_id)
            assert kept == DeviceTools(tuple(sorted(event["tools"])), event["timestamp"])
            async with httpx.AsyncClient(headers={"X-API-Key": WRITE_KEY}, timeout=10) as http:
                data = (await http.get(f"{running.url}/api/v1/devices/{sim_id}")).json()["data"]
            assert data["mcp_tools"] == sorted(event["tools"])
            assert data["mcp_tools_at"] == event["timestamp"]
            assert edge.stats()["counters"]["mcp_tools_announced_again"] == 1

            # The same run's state again (its figures changed) is no start: a command's round
            # trip, after it on the same connections, shows the edge read it and did nothing.
            state = await watcher.expect(
                t.hub_state(hub_settings.hub_id), lambda s: s["state"] == "online"
            )
            mark = watcher.mark()
            await watcher.publish(t.hub_state(hub_settings.hub_id), {**state, "stream_sessions": 9})
            message_id = uuid.uuid4().hex
            command = CommandPayload(command="get_status", parameters={}, message_id=message_id)
            await watcher.publish(t.command(sim_id), command.to_wire())
            await watcher.expect(
                t.device_events(sim_id), lambda e: e.get("message_id") == message_id
            )
            assert edge.counters.mcp_tools_announced_again == 1
            # Another replica coming online is one: the same event again.
            await watcher.publish(t.hub_state("hub-second"), {**state, "hub_id": "hub-second"})
            again = await watcher.first(
                lambda m: m.topic == t.device_events(sim_id) and b'"mcp_tools"' in m.payload,
                after=mark,
            )
            assert json.loads(again.payload) == event
            assert edge.counters.mcp_tools_announced_again == 2
