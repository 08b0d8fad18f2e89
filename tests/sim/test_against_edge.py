"""Simulated devices against the real edge (in process) and a real Mosquitto.

Issue 5, point 8: each WebSocket flavour and binary version, MCP, TTS audio, token auth, a
scenario and a mixed fleet, with ``xiaozhi_edge.server.EdgeServer`` on a free port instead of
the protocol peer of edge_peer.py. An integrator (a ``Recorder``) watches the tree and
publishes commands, each once the device's ``connected`` status is out; every wait has a
timeout, nothing sleeps.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import StartEdge
from tests.support import Recorder, device_token_keys
from xiaozhi.payloads import CommandPayload, DeviceKind
from xiaozhi.tokens import issue_token
from xiaozhi.topics import TopicTree
from xiaozhi.wav import decode_wav
from xiaozhi_edge.server import EdgeServer
from xiaozhi_sim.device import ChannelError, Fault
from xiaozhi_sim.fleet import DeviceSpec, Fleet
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.scenario import load_scenario, run_scenario
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.ws_device import WsDevice

pytestmark = pytest.mark.integration

TOPICS = TopicTree()
SCENARIOS = Path(__file__).resolve().parents[2] / "firmware-sim" / "scenarios"
LIGHT = "turn on the living room light"


def ws_url(edge: EdgeServer) -> str:
    return f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/"


def on_edge(sim_settings: SimSettings, edge: EdgeServer, **extra: Any) -> SimSettings:
    """The simulator's settings pointed at this edge (no setup endpoint: no hub here)."""
    return sim_settings.model_copy(update={"sim_ws_url": ws_url(edge), **extra})


async def command(integrator: Recorder, device_id: str, name: str, **parameters: Any) -> str:
    """Publish one command as an integrator does; return its message_id. Callers wait for
    :func:`connected_on` first: the edge subscribes to the device's commands before that."""
    message_id = uuid.uuid4().hex
    payload = CommandPayload(command=name, parameters=parameters, message_id=message_id)
    await integrator.publish(TOPICS.command(device_id), payload.to_wire())
    return message_id


def results(inbox: Recorder, device_id: str, message_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in inbox.json(TOPICS.device_events(device_id))
        if e.get("event_type") == "command_result" and e.get("message_id") == message_id
    ]


async def connected_on(inbox: Recorder, edge: EdgeServer, device_id: str) -> dict[str, Any]:
    """The `connected` status this edge published for the device (its subscription is live)."""

    def found() -> list[dict[str, Any]]:
        return [
            s
            for s in inbox.json(TOPICS.status(device_id))
            if s.get("status") == "connected" and s.get("edge_id") == edge.settings.edge_id
        ]

    await inbox.wait_for(found)
    return found()[-1]


def received(device: WsDevice, **fields: Any) -> list[dict[str, Any]]:
    """Server messages in the device's inbox with these fields."""
    return [
        r.payload
        for r in device.inbox
        if r.kind == "message" and all(r.payload.get(k) == v for k, v in fields.items())
    ]


# -- 1. a firmware device per binary version -------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_a_firmware_device_says_a_command_in_each_binary_version(
    start_edge: StartEdge,
    integrator: Recorder,
    sim_settings: SimSettings,
    device_name: str,
    version: int,
) -> None:
    inbox = integrator
    edge = await start_edge()
    identity = make_identity(name=device_name)
    settings = on_edge(sim_settings, edge, sim_token="opaque-token")
    device = WsDevice(identity, settings, binary_version=version)
    try:
        await device.start()
        assert edge.connections == set()  # lazy: no socket before the wake
        await device.say(LIGHT)
        assert device.connected
        status = await connected_on(inbox, edge, identity.device_id)
        assert (status["protocol_version"], status["device_kind"]) == (version, "firmware")
        assert status["simulated"] is True  # its User-Agent says xiaozhi-sim: kept out of HA
        # the edge saw the four headers and the hello
        conn = edge.by_device[identity.device_id]
        assert conn.session.identity is not None
        assert conn.session.identity.raw_device_id == identity.mac
        assert conn.session.identity.client_id == identity.client_id
        assert conn.session.identity.protocol_version == version
        # what the device sent in its handshake (the edge drops the headers once read)
        assert device._ws is not None
        assert device._ws.request is not None
        assert device._ws.request.headers["Authorization"] == "Bearer opaque-token"
        assert conn.session.binary_version == version
        assert conn.session.features_mcp is True

        def heard() -> list[dict[str, Any]]:
            return [
                v
                for v in inbox.json(TOPICS.voice_command_events())
                if v.get("device_id") == identity.device_id
            ]

        await inbox.wait_for(heard)
        voice = heard()[0]
        assert voice["command"] == LIGHT
        assert voice["edge_id"] == edge.settings.edge_id
        assert device.stats.error_count == 0, device.stats.errors
    finally:
        await device.stop()
    await inbox.wait_for(
        lambda: inbox.json(TOPICS.status(identity.device_id))[-1]["status"] == "disconnected"
    )


# -- 2. a command becomes an MCP tool call on the simulated firmware ---------------------------


async def test_set_volume_reaches_the_simulated_mcp_server(
    start_edge: StartEdge,
    integrator: Recorder,
    sim_settings: SimSettings,
    device_name: str,
) -> None:
    inbox = integrator
    edge = await start_edge()
    device = WsDevice(make_identity(name=device_name), on_edge(sim_settings, edge))
    try:
        await device.wake()
        await connected_on(inbox, edge, device.device_id)
        assert device.model.volume != 80
        message_id = await command(integrator, device.device_id, "set_volume", volume=80)
        await inbox.wait_for(lambda: results(inbox, device.device_id, message_id))
        result = results(inbox, device.device_id, message_id)[0]
        assert (result["status"], result["tool"]) == ("ok", "self.audio_speaker.set_volume")
        assert device.model.volume == 80
        # the edge learnt the simulator's board from MCP initialize and its full tool list
        tools = [
            e
            for e in inbox.json(TOPICS.device_events(device.device_id))
            if e.get("event_type") == "mcp_tools"
        ]
        assert tools
        assert {
            "self.get_device_status",
            "self.audio_speaker.set_volume",
            "self.light.turn_on",
            "self.light.turn_off",
            "self.reboot",
        } <= set(tools[0]["tools"])
        assert device.stats.error_count == 0, device.stats.errors
    finally:
        await device.stop()


# -- 3. respond: stt, tts and real Opus audio, decoded and written as WAV --------------------


async def test_respond_is_heard_as_opus_and_recorded_as_wav(
    start_edge: StartEdge,
    integrator: Recorder,
    sim_settings: SimSettings,
    device_name: str,
    tmp_path: Path,
) -> None:
    inbox = integrator
    edge = await start_edge()
    record = tmp_path / "answer.wav"
    device = WsDevice(
        make_identity(name=device_name),
        on_edge(sim_settings, edge),
        binary_version=2,
        record_path=record,
    )
    text = "The living room light is on."
    try:
        await device.wake()
        await connected_on(inbox, edge, device.device_id)
        message_id = await command(integrator, device.device_id, "respond", text=text, stt=LIGHT)
        assert await device.wait_until(lambda: bool(received(device, type="tts", state="stop")), 10)
        assert received(device, type="stt")[0]["text"] == LIGHT
        assert received(device, type="tts", state="sentence_start")[0]["text"] == text
        assert device.model.last_response == text
        assert device.state is DeviceState.LISTENING  # auto mode: back to listening
        assert device.audio_packets > 5
        assert device.stats.audio_dropped == 0  # the edge paces its TTS
        assert device.recorder is not None
        assert (device.recorder.packets, device.recorder.errors) == (device.audio_packets, 0)
        await inbox.wait_for(lambda: results(inbox, device.device_id, message_id))
        assert results(inbox, device.device_id, message_id)[0]["status"] == "ok"
    finally:
        await device.stop()
    fmt, pcm = decode_wav(record.read_bytes())
    assert (fmt.sample_rate, fmt.channels, fmt.bits_per_sample) == (
        device.recorder.sample_rate,
        1,
        16,
    )
    samples_per_packet = fmt.sample_rate * 60 // 1000
    assert len(pcm) == device.audio_packets * samples_per_packet * 2
    assert any(pcm), "the decoded TTS is not silence"


# -- 4. a seed-flavour device gets commands as JSON --------------------------------------------


async def test_a_seed_device_registers_and_runs_a_json_command(
    start_edge: StartEdge,
    integrator: Recorder,
    sim_settings: SimSettings,
    device_name: str,
) -> None:
    inbox = integrator
    edge = await start_edge()
    device = WsDevice(
        make_identity(name=device_name), on_edge(sim_settings, edge), flavour=DeviceKind.SEED
    )
    try:
        await device.start()
        assert await device.wait_connected(10)
        status = await connected_on(inbox, edge, device.device_id)
        assert (status["device_kind"], status["device_type"]) == ("seed", "esp32s3")
        assert status["hardware_info"]["chip_model"] == "ESP32-S3"
        # registration confirmed with a `response`; the first heartbeat's `ping` with a `pong`
        assert await device.wait_until(lambda: bool(received(device, type="pong")), 5)
        assert received(device, type="response")[0]["data"]["status"] == "registered"

        message_id = await command(integrator, device.device_id, "set_volume", volume=80)
        assert await device.wait_until(lambda: any(r.kind == "command" for r in device.inbox), 10)
        got = next(r.payload for r in device.inbox if r.kind == "command")
        assert got["type"] == "command"
        assert got["data"] == {
            "command": "set_volume",
            "parameters": {"volume": 80},
            "message_id": message_id,
        }
        assert device.model.volume == 80  # the simulator ran it, as its MQTT twin does
        await inbox.wait_for(lambda: results(inbox, device.device_id, message_id))
        result = results(inbox, device.device_id, message_id)[0]
        assert (result["status"], result["result"]) == ("ok", "delivered")

        await device.say(LIGHT)  # seed `voice_command` envelope
        await inbox.wait_for(
            lambda: any(
                v.get("device_id") == device.device_id and v.get("command") == LIGHT
                for v in inbox.json(TOPICS.voice_command_events())
            )
        )
        assert device.stats.error_count == 0, device.stats.errors
    finally:
        await device.stop()


# -- 5. token auth ---------------------------------------------------------------------------


async def test_token_mode_admits_a_signed_device_and_refuses_a_forged_token(
    start_edge: StartEdge,
    integrator: Recorder,
    sim_settings: SimSettings,
    device_name: str,
) -> None:
    inbox = integrator
    key, public = device_token_keys()
    edge = await start_edge(device_auth="token", device_token_public_key=public)
    identity = make_identity(name=device_name)
    token = issue_token(
        key,
        client_id=identity.client_id,
        device_id=identity.mac,
        issued_at=int(time.time()),
    )
    good = WsDevice(identity, on_edge(sim_settings, edge, sim_token=token))
    forged = WsDevice(
        make_identity(name=f"{device_name}-forged"), on_edge(sim_settings, edge, sim_token=token)
    )
    try:
        await good.wake()
        assert good.connected
        await connected_on(inbox, edge, identity.device_id)
        admitted = edge.by_device[identity.device_id].session.identity
        assert admitted is not None
        assert admitted.authenticated

        # another device presenting that token: 401 at the handshake, never a socket
        with pytest.raises(ChannelError, match="handshake refused: HTTP 401"):
            await forged.say(LIGHT)
        assert not forged.connected
        assert forged.state is DeviceState.IDLE
        assert forged.stats.errors["connect"] == 1
        failure = next(r.payload for r in forged.inbox if r.kind == "error")
        assert failure == {"type": "connect_failed", "error": "handshake refused: HTTP 401"}

        # the fault injection reports the same verdict; the real token still works after it
        result = await good.inject(Fault.BAD_TOKEN)
        assert (result.refused, result.detail) == (True, "handshake refused: HTTP 401")
        await good.wake()
        assert good.connected
    finally:
        await good.stop()
        await forged.stop()
    assert edge.counters.errors.get("AUTHENTICATION_FAILED", 0) >= 2, edge.counters.errors


async def test_the_shipped_auth_scenario_passes_with_a_token_from_the_hubs_key(
    start_edge: StartEdge, sim_settings: SimSettings
) -> None:
    """ws_auth.yaml needs the hub only to issue the token: issue it here instead."""
    key, public = device_token_keys()
    edge = await start_edge(device_auth="token", device_token_public_key=public)
    door = make_identity(seed=sim_settings.sim_seed, name="door")
    token = issue_token(
        key, client_id=door.client_id, device_id=door.mac, issued_at=int(time.time())
    )
    lines: list[str] = []
    report = await run_scenario(
        load_scenario(SCENARIOS / "ws_auth.yaml"),
        on_edge(sim_settings, edge, sim_token=token),
        show=lines.append,
    )
    assert report.exit_code == 0, "\n".join(lines)


# -- 6. scenarios: the shipped ws_faults (minus the hub) passes, a wrong expectation fails -------


EDGE_ANSWERS = f"""
- command: {{device: bystander, command: respond, parameters: {{text: It is on., stt: {LIGHT}}}}}
- expect: {{device: bystander, what: response, match: {{type: stt, text: {LIGHT}}}, within: 5}}
- expect: {{device: bystander, what: event, match: {{event_type: command_result, status: ok}}}}
"""


def ws_faults_without_the_hub(tmp_path: Path) -> Path:
    """ws_faults.yaml, its hub step (the bystander's typed command answered by the hub)
    replaced by the integrator's `respond` command, which the edge alone turns into `stt`."""
    scenario = yaml.safe_load((SCENARIOS / "ws_faults.yaml").read_text(encoding="utf-8"))
    *edge_steps, say, expect = scenario["steps"]
    assert say == {"say": {"device": "bystander", "text": LIGHT}}, "ws_faults.yaml changed"
    assert expect["expect"]["match"] == {"type": "stt"}, "ws_faults.yaml changed"
    scenario["steps"] = [*edge_steps, *yaml.safe_load(EDGE_ANSWERS)]
    path = tmp_path / "ws_faults_edge_only.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")
    return path


async def test_the_ws_faults_scenario_passes_against_the_edge(
    start_edge: StartEdge, sim_settings: SimSettings, tmp_path: Path
) -> None:
    edge = await start_edge()
    lines: list[str] = []
    report = await run_scenario(
        load_scenario(ws_faults_without_the_hub(tmp_path)),
        on_edge(sim_settings, edge, sim_seed=61),
        show=lines.append,
    )
    text = "\n".join(lines)
    assert report.exit_code == 0, text
    assert len(report.steps) == 20
    # malformed + truncated answered with errors; version 4 refused with HTTP 400 (the 2 MiB
    # frame is over twice max_frame_bytes: websockets closes 1009 itself, docs/edge.md)
    assert edge.counters.errors.get("INVALID_DATA_FORMAT", 0) == 3, edge.counters.errors


FAILING = """
name: the edge is not the hub - nobody answers a typed command with stt
devices:
  hall: {transport: ws, binary_version: 3}
steps:
  - connect: hall
  - say: {device: hall, text: turn on the hall light}
  - expect: {what: voice_command, device: hall, match: {command: turn on the hall light}}
  - expect: {device: hall, what: response, match: {type: stt}, within: 0.5}
  - disconnect: hall
"""


async def test_a_deliberately_failing_scenario_exits_1(
    start_edge: StartEdge, sim_settings: SimSettings, tmp_path: Path
) -> None:
    edge = await start_edge()
    path = tmp_path / "failing.yaml"
    path.write_text(FAILING, encoding="utf-8")
    lines: list[str] = []
    report = await run_scenario(
        load_scenario(path), on_edge(sim_settings, edge, sim_seed=62), show=lines.append
    )
    assert [s.status for s in report.steps] == ["PASS", "PASS", "PASS", "FAIL", "SKIP"], lines
    assert "no response matched {'type': 'stt'}" in report.steps[3].detail
    assert report.exit_code == 1
    assert lines[-1] == "result    FAIL: 3 passed, 1 failed, 1 skipped"


# -- 7. a mixed fleet ------------------------------------------------------------------------


async def test_a_mixed_fleet_connects_to_the_edge_and_the_broker(
    start_edge: StartEdge, integrator: Recorder, sim_settings: SimSettings
) -> None:
    inbox = integrator
    edge = await start_edge()
    specs = [DeviceSpec("ws", binary_version=1 + i % 3) for i in range(20)]
    specs += [DeviceSpec("mqtt") for _ in range(20)]
    fleet = Fleet(
        on_edge(sim_settings, edge, sim_seed=4077), specs, wake_on_start=True, ramp_per_second=0
    )
    try:
        await fleet.start()
        assert await fleet.wait_connected(20)
        assert (fleet.expected, fleet.connected) == (40, 40)
        assert fleet.summary_line().startswith("connected 40/40 |")
        assert "errors 0" in fleet.summary_line()
        ws_ids = {d.device_id for d in fleet.devices if isinstance(d, WsDevice)}
        mqtt_ids = {d.device_id for d in fleet.devices} - ws_ids
        assert len(mqtt_ids) == 20

        def online(transport: str) -> set[str]:
            """Devices whose live `connected` status says this transport (and this edge)."""
            return {
                m.topic.rsplit("/", 1)[1]
                for m in inbox.messages
                if m.topic.startswith("xiaozhi/status/")
                and (s := json.loads(m.payload or b"{}")).get("status") == "connected"
                and s.get("transport") == transport
                and (transport == "mqtt" or s.get("edge_id") == edge.settings.edge_id)
            }

        await inbox.wait_for(lambda: online("websocket") >= ws_ids and online("mqtt") >= mqtt_ids)
        assert set(edge.by_device) == ws_ids
        versions = [edge.by_device[i].session.binary_version for i in sorted(ws_ids)]
        assert sorted(versions) == sorted(1 + i % 3 for i in range(20))
    finally:
        await fleet.stop()
    report = fleet.report()
    assert report[0] == "devices         40"
    assert report[1] == "connected       0 (connects 40, disconnects 40)"
    assert fleet.stats.error_count == 0, fleet.stats.errors
