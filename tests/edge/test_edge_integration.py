"""The edge as devices and integrators meet it: real WebSockets, real Mosquitto, real Opus."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import opuslib
import pytest
import websockets

from tests.conftest import StartEdge
from tests.edge.devices import Device, opus_tone_frames
from tests.support import Recorder, device_token_keys, record
from xiaozhi.audio_monitor import decode_audio_packet
from xiaozhi.binary import encode_opus
from xiaozhi.payloads import CommandPayload
from xiaozhi.tokens import issue_token
from xiaozhi.topics import TopicTree
from xiaozhi_bench.loadgen import connect_devices, ws_frame
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_runtime.mqtt import PAHO_BACKLOG_BYTES, MqttOwner, OutMessage

pytestmark = pytest.mark.integration  # a real Mosquitto

TOPICS = TopicTree()


def new_mac() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def device_id_of(mac: str) -> str:
    return mac.replace(":", "")


def _events(inbox: Recorder, device_id: str, event_type: str) -> list[dict[str, Any]]:
    return [e for e in inbox.json(TOPICS.device_events(device_id)) if e["event_type"] == event_type]


def _voice_commands(inbox: Recorder, device_id: str) -> list[dict[str, Any]]:
    return [e for e in inbox.json(TOPICS.voice_command_events()) if e["device_id"] == device_id]


async def _announced(integrator: Recorder, device_id: str) -> None:
    """Wait for the edge's `device_connected` event: the edge subscribes to the device's
    commands before it publishes that, on the same connection, so from now on a command
    published for the device reaches it (a command sent right after the hello could not)."""
    await integrator.expect(TOPICS.device_connected(), lambda e: e["device_id"] == device_id)


async def _command(integrator: Recorder, device_id: str, command: str, **parameters: Any) -> str:
    """Publish a command as an integrator, once the device is announced; its message_id."""
    await _announced(integrator, device_id)
    message_id = uuid.uuid4().hex
    payload = CommandPayload(command=command, parameters=parameters, message_id=message_id)
    await integrator.publish(TOPICS.command(device_id), payload.to_wire())
    return message_id


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_each_binary_version_is_heard_on_mqtt(
    start_edge: StartEdge, integrator: Recorder, version: int
) -> None:
    inbox = integrator
    edge = await start_edge()
    mac = new_mac()
    device_id = device_id_of(mac)
    device = await Device.connect(edge.port, device_id=mac, version=version)
    server_hello = await device.hello()
    assert server_hello["transport"] == "websocket"
    assert set(server_hello["audio_params"]) == {
        "format",
        "sample_rate",
        "channels",
        "frame_duration",
    }
    assert server_hello["session_id"]

    await inbox.wait_for(lambda: inbox.json(TOPICS.status(device_id)))
    status = inbox.json(TOPICS.status(device_id))[-1]
    assert (status["status"], status["edge_id"]) == ("connected", edge.settings.edge_id)

    # ten 60 ms frames of real Opus between listen start and stop: a 600 ms utterance
    await device.send_json({"session_id": server_hello["session_id"], "type": "listen",
                            "state": "start", "mode": "manual"})  # fmt: skip
    await device.send_opus(opus_tone_frames(10), timestamp_ms=120)
    await device.send_json({"type": "listen", "state": "stop"})
    await inbox.wait_for(lambda: _events(inbox, device_id, "utterance"))
    assert _events(inbox, device_id, "utterance")[0]["duration_ms"] == 600

    await device.send_json(
        {"type": "listen", "state": "detect", "text": "turn on the living room light"}
    )
    await inbox.wait_for(lambda: _voice_commands(inbox, device_id))
    voice = _voice_commands(inbox, device_id)[0]
    assert voice["command"] == "turn on the living room light"
    assert voice["edge_id"] == edge.settings.edge_id
    await device.close()
    await inbox.wait_for(
        lambda: inbox.json(TOPICS.status(device_id))[-1]["status"] == "disconnected"
    )


async def test_a_command_reaches_a_seed_device_as_json(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    inbox = integrator
    edge = await start_edge()
    device_id = device_id_of(new_mac())
    device = await Device.connect(edge.port, device_id=None)  # seed clients send no headers
    await device.send_json({"type": "device_register", "data": {"device_id": device_id,
                            "device_type": "esp32s3", "firmware_version": "1.0.0"}})  # fmt: skip
    await inbox.wait_for(lambda: inbox.json(TOPICS.status(device_id)))
    message_id = await _command(integrator, device_id, "set_volume", volume=80)
    command = await device.expect("command")
    assert command["data"]["command"] == "set_volume"
    assert command["data"]["parameters"] == {"volume": 80}
    await inbox.wait_for(lambda: _events(inbox, device_id, "command_result"))
    result = _events(inbox, device_id, "command_result")[0]
    assert (result["message_id"], result["status"]) == (message_id, "ok")
    await device.close()


async def _serve_mcp(device: Device, volume_calls: list[dict[str, Any]]) -> None:
    """Play the firmware's MCP server: initialize, tools/list, tools/call (reference 4)."""
    answered: set[int] = set()
    while True:
        await device.wait_for(
            lambda: any(
                m.get("type") == "mcp" and m["payload"]["id"] not in answered
                for m in device.texts
                if "id" in m.get("payload", {})
            ),
            within=30,
        )
        for message in list(device.texts):
            request = message.get("payload", {}) if message.get("type") == "mcp" else {}
            if "id" not in request or request["id"] in answered:
                continue
            answered.add(request["id"])
            method = request["method"]
            if method == "initialize":
                result: dict[str, Any] = {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "test-board", "version": "1.6.2"},
                }
            elif method == "tools/list":
                schema = {"type": "object", "properties": {"volume": {"type": "integer"}}}
                tool = {"name": "self.audio_speaker.set_volume", "inputSchema": schema}
                result = {"tools": [tool]}
            else:
                volume_calls.append(request["params"])
                result = {"content": [{"type": "text", "text": "true"}], "isError": False}
            reply = {"jsonrpc": "2.0", "id": request["id"], "result": result}
            await device.send_json({"type": "mcp", "payload": reply})


async def test_a_command_reaches_firmware_as_an_mcp_tool_call(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    inbox = integrator
    edge = await start_edge()
    mac = new_mac()
    device_id = device_id_of(mac)
    device = await Device.connect(edge.port, device_id=mac)
    await device.hello(mcp=True)
    calls: list[dict[str, Any]] = []
    server = asyncio.create_task(_serve_mcp(device, calls))
    try:
        await device.wait_for(
            lambda: any(m.get("payload", {}).get("method") == "tools/list" for m in device.texts)
        )
        message_id = await _command(integrator, device_id, "set_volume", volume=80)
        await inbox.wait_for(lambda: _events(inbox, device_id, "command_result"))
    finally:
        server.cancel()
    assert calls == [{"name": "self.audio_speaker.set_volume", "arguments": {"volume": 80}}]
    result = _events(inbox, device_id, "command_result")[0]
    assert (result["message_id"], result["status"]) == (message_id, "ok")
    await device.close()


async def _seed_device(edge_port: int, inbox: Recorder) -> tuple[Device, str]:
    """A seed client, registered and announced (seed clients send no handshake headers)."""
    device_id = device_id_of(new_mac())
    device = await Device.connect(edge_port, device_id=None)
    await device.send_json({"type": "device_register", "data": {"device_id": device_id,
                            "device_type": "esp32s3", "firmware_version": "1.0.0"}})  # fmt: skip
    await _announced(inbox, device_id)
    return device, device_id


async def test_idle_devices_make_their_state_when_they_first_need_it(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    """An idle session holds no utterance buffer, duplicate window or set of command
    holders (docs/benchmarks.md, connections): each is made on first use and works then,
    long after the handshake whose headers were dropped."""
    inbox = integrator
    edge = await start_edge()
    first, first_id = await _seed_device(edge.port, inbox)
    second, second_id = await _seed_device(edge.port, inbox)
    mac = new_mac()
    talker = await Device.connect(edge.port, device_id=mac)
    server_hello = await talker.hello()
    await _announced(inbox, device_id_of(mac))  # named by its dropped Device-Id header

    # The first listen turn makes the utterance buffer.
    await talker.send_json({"session_id": server_hello["session_id"], "type": "listen",
                            "state": "start", "mode": "manual"})  # fmt: skip
    await talker.send_opus(opus_tone_frames(10), timestamp_ms=120)
    await talker.send_json({"type": "listen", "state": "stop"})
    await inbox.wait_for(lambda: _events(inbox, device_id_of(mac), "utterance"))
    assert _events(inbox, device_id_of(mac), "utterance")[0]["duration_ms"] == 600

    # The first command makes the duplicate window: a redelivered id is delivered once.
    repeated = CommandPayload(command="set_volume", parameters={"volume": 10}, message_id="m-1")
    fresh = CommandPayload(command="set_volume", parameters={"volume": 20}, message_id="m-2")
    for payload in (repeated, repeated, fresh):
        await integrator.publish(TOPICS.command(first_id), payload.to_wire())
    await first.expect("command", message_id="m-2")  # after the repeat, on the same topic
    volumes = [m["data"]["parameters"]["volume"] for m in first.texts if m["type"] == "command"]
    assert volumes == [10, 20]
    assert edge.counters.duplicate_commands == 1

    # The broadcast filter, held by both seed devices, stays routed to the one left.
    broadcast = TOPICS.broadcast_command()
    assert set(edge.router.route(broadcast)) == edge.connections  # one filter, three holders
    await second.close()
    await inbox.wait_for(
        lambda: inbox.json(TOPICS.status(second_id))[-1]["status"] == "disconnected"
    )
    to_all = CommandPayload(command="set_volume", parameters={"volume": 30}, message_id="m-3")
    await integrator.publish(broadcast, to_all.to_wire())
    await first.expect("command", message_id="m-3")
    await first.close()
    await talker.close()
    await asyncio.wait_for(edge.idle.wait(), 10)
    assert edge.router.route(broadcast) == ()


async def test_a_response_is_spoken_with_paced_tts_audio(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    edge = await start_edge()
    mac = new_mac()
    device = await Device.connect(edge.port, device_id=mac, version=3)
    await device.hello()
    text = "Turning on the living room light for you right now."
    stt = "turn on the living room light"
    await _command(integrator, device_id_of(mac), "respond", text=text, stt=stt)
    assert (await device.expect("stt"))["text"] == stt
    await device.expect("tts", state="start")
    assert (await device.expect("tts", state="sentence_start"))["text"] == text
    await device.expect("tts", state="stop", within=15)

    frames = [payload for _, payload in device.audio]
    assert len(frames) > 10
    decoder = opuslib.Decoder(16000, 1)
    assert all(len(decoder.decode(f, 960)) == 960 * 2 for f in frames)  # real 60 ms Opus
    # paced: after a 5-frame pre-buffer, one frame per 60 ms (the device drops past 2.4 s)
    spread = device.audio[-1][0] - device.audio[0][0]
    assert spread >= (len(frames) - 5) * 0.060 * 0.8
    stop_index = next(
        i for i, m in enumerate(device.texts) if m.get("type") == "tts" and m.get("state") == "stop"
    )
    assert stop_index == len(device.texts) - 1, "tts stop comes after the audio"
    await device.close()


async def test_abort_stops_the_audio_at_once(start_edge: StartEdge, integrator: Recorder) -> None:
    edge = await start_edge()
    mac = new_mac()
    device = await Device.connect(edge.port, device_id=mac)
    await device.hello()
    await _command(integrator, device_id_of(mac), "respond", text=" ".join(["word"] * 40))
    await device.wait_for(lambda: len(device.audio) >= 6)
    await device.send_json({"type": "abort"})
    await device.expect("tts", state="stop")
    frames_at_stop = len(device.audio)
    # a later exchange proves the socket is live and no frame followed the stop
    await device.send_json({"type": "listen", "state": "detect", "text": "hello there"})
    await device.send_json({"type": "bogus"})
    await device.expect("error")
    assert len(device.audio) == frames_at_stop
    stops = [m for m in device.texts if m.get("type") == "tts" and m.get("state") == "stop"]
    assert len(stops) == 1, "exactly one tts stop per abort"
    await device.close()


async def _neighbour_still_works(
    device: Device, inbox: Recorder, device_id: str, text: str
) -> None:
    await device.send_json({"type": "listen", "state": "detect", "text": text})
    await inbox.wait_for(
        lambda: any(v["command"] == text for v in _voice_commands(inbox, device_id))
    )


HOSTILE: list[tuple[str, Any, str, int | None]] = [
    # name, what the bad device sends, the error code it is answered with, the close code
    ("bad json", "{not json", "INVALID_DATA_FORMAT", None),
    ("unknown type", json.dumps({"type": "teleport"}), "INVALID_MESSAGE_TYPE", None),
    ("missing field", json.dumps({"type": "listen"}), "MISSING_REQUIRED_FIELDS", None),
    ("truncated v3 frame", b"\x00\x00", "INVALID_DATA_FORMAT", None),
    ("lying v3 length", b"\x00\x00\x00\xa0" + b"\x01" * 10, "INVALID_DATA_FORMAT", None),
    ("unknown v3 type", b"\x07\x00\x00\x01\x01", "INVALID_MESSAGE_TYPE", None),
    ("oversize frame", b"\x00\x00\xff\xff" + b"\x00" * 70_000, "MESSAGE_TOO_LARGE", 1009),
    ("flood", [json.dumps({"type": "listen", "state": "stop"})] * 400, "RATE_LIMIT_EXCEEDED", 1008),
    ("garbage streak", ["{garbage"] * 30, "INVALID_DATA_FORMAT", 1008),
]


@pytest.mark.parametrize(
    ("name", "sent", "code", "close_code"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
async def test_bad_input_is_answered_and_the_neighbour_keeps_working(
    start_edge: StartEdge,
    integrator: Recorder,
    name: str,
    sent: Any,
    code: str,
    close_code: int | None,
) -> None:
    inbox = integrator
    edge = await start_edge()
    bad_mac, good_mac = new_mac(), new_mac()
    bad = await Device.connect(edge.port, device_id=bad_mac, version=3)
    good = await Device.connect(edge.port, device_id=good_mac, version=3)
    await bad.hello()
    await good.hello()
    for message in sent if isinstance(sent, list) else [sent]:
        try:
            await bad.ws.send(message)
        except websockets.ConnectionClosed:
            break
    error = await bad.expect("error")
    assert error["data"]["error_code"] == code, error
    if close_code is not None:
        assert (await bad.closed())[0] == close_code
    await _neighbour_still_works(good, inbox, device_id_of(good_mac), f"after {name}")
    assert edge.counters.errors.get(code, 0) >= 1
    await good.close()


async def test_a_silent_connection_is_closed_after_the_hello_timeout(start_edge: StartEdge) -> None:
    edge = await start_edge(hello_timeout_seconds=0.5)
    device = await Device.connect(edge.port, device_id=new_mac())
    code, reason = await device.closed(within=10)
    assert code == 1008
    assert "hello" in (reason or "")


async def test_an_idle_device_is_closed_after_the_idle_timeout(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    inbox = integrator
    edge = await start_edge(idle_timeout_seconds=1.0)
    mac = new_mac()
    device = await Device.connect(edge.port, device_id=mac)
    await device.hello()
    code, _ = await device.closed(within=10)
    assert code == 1001
    status = TOPICS.status(device_id_of(mac))
    await inbox.wait_for(
        lambda: inbox.json(status)[-1:] and inbox.json(status)[-1]["status"] == "disconnected"
    )


async def test_token_auth_admits_a_signed_device_and_refuses_others_with_401(
    start_edge: StartEdge,
) -> None:
    key, public = device_token_keys()
    edge = await start_edge(device_auth="token", device_token_public_key=public)
    mac = new_mac()
    token = issue_token(key, client_id="client-uuid-1", device_id=mac, issued_at=int(time.time()))
    device = await Device.connect(
        edge.port, device_id=mac, headers={"Authorization": f"Bearer {token}"}
    )
    await device.hello()
    await device.close()

    # the same token for another device, no token, a browser with query parameters
    for headers, reason in [
        ({"Authorization": f"Bearer {token}", "Device-Id": new_mac()}, "not valid for this device"),
        ({}, "no token"),
        # a timestamp int() refuses: a clear 401, not a 500 and a traceback
        ({"Authorization": "Bearer abc." + "9" * 5000}, "malformed token"),
        ({"Authorization": "Bearer abc.\u00b2"}, "malformed token"),
    ]:
        with pytest.raises(websockets.InvalidStatus) as info:
            await Device.connect(edge.port, device_id=mac, headers=headers)
        assert info.value.response.status_code == 401
        assert reason in info.value.response.body.decode()
    query = f"/xiaozhi/v1/?device-id={mac}&client-id=client-uuid-1&authorization=Bearer%20{token}"
    browser = await Device.connect(edge.port, device_id=None, headers={"Client-Id": ""}, path=query)
    await browser.hello()
    await browser.close()


async def test_allowlist_mode_refuses_unlisted_devices(start_edge: StartEdge) -> None:
    listed = new_mac()
    edge = await start_edge(device_auth="allowlist", allowed_devices=frozenset({listed}))
    device = await Device.connect(edge.port, device_id=listed)
    await device.hello()
    await device.close()
    with pytest.raises(websockets.InvalidStatus) as info:
        await Device.connect(edge.port, device_id=new_mac())
    assert info.value.response.status_code == 401
    assert b"allow-list" in info.value.response.body


async def test_health_stats_and_metrics_are_served_on_the_device_port(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge()
    device = await Device.connect(edge.port, device_id=new_mac())
    await device.hello()
    await device.ws.send(b"\x00")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}") as http:
        health = (await http.get("/health")).json()
        stats = (await http.get("/stats")).json()
        metrics = (await http.get("/metrics")).text
    assert health["mqtt_connected"] is True
    for key in ("frames_received", "bytes_received", "errors", "uptime_seconds", "fps"):
        assert key in stats
    assert stats["frames_received"] >= 2
    assert "xiaozhi_edge_frames_received" in metrics
    assert "xiaozhi_edge_connections 1.0" in metrics
    await device.close()


async def test_the_audio_monitor_streams_a_devices_uplink_opus(start_edge: StartEdge) -> None:
    edge = await start_edge()
    mac = new_mac()
    device = await Device.connect(edge.port, device_id=mac, version=2)
    await device.hello()
    url = f"ws://127.0.0.1:{edge.port}/api/ws/audio?device_id={device_id_of(mac)}"
    async with websockets.connect(url) as listener:
        attached = json.loads(await asyncio.wait_for(listener.recv(), 10))
        assert attached == {"type": "monitor", "device_id": device_id_of(mac)}
        await device.send_json({"type": "listen", "state": "start", "mode": "manual"})
        frames = opus_tone_frames(5)
        await device.send_opus(frames)
        packets = [decode_audio_packet(await asyncio.wait_for(listener.recv(), 10)) for _ in frames]
    assert [p.opus for p in packets] == frames
    assert [p.sequence for p in packets] == [0, 1, 2, 3, 4]
    assert {p.duration_ms for p in packets} == {60}
    await device.close()


async def test_an_edge_that_stops_closes_its_monitor_listeners(start_edge: StartEdge) -> None:
    """A listener still attached is told the edge is restarting (1012), like its devices,
    instead of holding the stop for the whole shutdown timeout."""
    edge = await start_edge(shutdown_timeout_seconds=30)
    url = f"ws://127.0.0.1:{edge.port}/api/ws/audio?device_id={device_id_of(new_mac())}"
    async with websockets.connect(url) as listener:
        await asyncio.wait_for(listener.recv(), 10)  # attached
        await asyncio.wait_for(edge.stop(), 10)  # far less than the 30 s timeout
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(listener.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012


async def test_the_audio_monitor_hears_a_device_held_by_another_edge(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    holder, other = await start_edge(), await start_edge()
    mac = new_mac()
    device_id = device_id_of(mac)
    device = await Device.connect(holder.port, device_id=mac, version=2)
    await device.hello()
    await _announced(integrator, device_id)
    await device.send_json({"type": "listen", "state": "start", "mode": "manual"})
    audio_topic = TOPICS.monitor_audio(device_id)
    sensor = {"type": "sensor", "data": {"sensor_type": "temp", "value": 20.5, "unit": "C"}}
    # Nobody listens anywhere: the holder publishes no audio. The reading sent after the
    # frames is the barrier: the holder publishes both at QoS 0 on one connection, in order.
    await device.send_opus(opus_tone_frames(3))
    await device.send_json(sensor)
    await integrator.expect(TOPICS.sensor(device_id, "temp"), lambda r: r["value"] == 20.5)
    assert integrator.payloads(audio_topic) == []

    url = f"ws://127.0.0.1:{other.port}/api/ws/audio?device_id={device_id}"
    frames = opus_tone_frames(100)
    heard = []
    async with websockets.connect(url) as listener:
        attached = json.loads(await asyncio.wait_for(listener.recv(), 10))
        assert attached == {"type": "monitor", "device_id": device_id}
        # The device talks in real time, one frame per 60 ms, until the listener on the
        # other edge hears three (the holder learns of the listener through the broker).
        for frame in frames:
            await device.send_opus([frame])
            with contextlib.suppress(TimeoutError):
                heard.append(decode_audio_packet(await asyncio.wait_for(listener.recv(), 0.06)))
            if len(heard) == 3:
                break
    assert len(heard) == 3
    assert all(p.opus in frames for p in heard)
    assert [p.sequence for p in heard] == [0, 1, 2]  # numbered per listener, as on the holder
    assert {p.duration_ms for p in heard} == {60}
    assert device_id not in other.by_device  # the audio crossed the broker
    # Relayed as seed 004 packets on the device's monitor topic, while someone listened.
    assert integrator.payloads(audio_topic)
    await device.close()


@pytest.mark.parametrize("ghost_is", ["edge", "hub"])
async def test_the_monitor_wants_of_an_edge_that_died_are_dropped(
    start_edge: StartEdge, integrator: Recorder, ghost_is: str
) -> None:
    """An edge's will is on ``bridge/edges/{id}``; a hub wants under its hub id, with its will
    on ``bridge/hubs/{id}/state`` (its wants' connection): either way the want goes."""
    holder = await start_edge()
    mac = new_mac()
    device_id = device_id_of(mac)
    device = await Device.connect(holder.port, device_id=mac, version=2)
    await device.hello()
    await _announced(integrator, device_id)
    await device.send_json({"type": "listen", "state": "start", "mode": "manual"})
    ghost = f"edge-ghost-{uuid.uuid4().hex[:8]}"
    want, audio = TOPICS.monitor_listeners(device_id, ghost), TOPICS.monitor_audio(device_id)
    await integrator.publish(want, {"edge_id": ghost}, retain=True)
    # The holder relays once it has the want: talk in real time until the audio shows.
    for frame in opus_tone_frames(100):
        await device.send_opus([frame])
        with contextlib.suppress(AssertionError):
            await integrator.wait_for(lambda: integrator.payloads(audio), within=0.06)
            break
    assert integrator.payloads(audio)
    # The ghost edge's will: the holder drops its want and deletes it at the broker.
    ghost_state = TOPICS.bridge_edge(ghost) if ghost_is == "edge" else TOPICS.hub_state(ghost)
    await integrator.publish(ghost_state, {"state": "offline"}, retain=True)
    await integrator.wait_for(lambda: b"" in integrator.payloads(want))
    mark = integrator.mark()
    await device.send_opus(opus_tone_frames(3))
    sensor = {"type": "sensor", "data": {"sensor_type": "temp", "value": 21.5, "unit": "C"}}
    await device.send_json(sensor)  # the barrier: same connection, same QoS 0, in order
    await integrator.expect(TOPICS.sensor(device_id, "temp"), lambda r: r["value"] == 21.5)
    assert integrator.payloads(audio, after=mark) == []
    # A want it left behind and that comes again (a retained copy) is deleted too.
    await integrator.publish(want, {"edge_id": ghost}, retain=True)
    await integrator.wait_for(lambda: integrator.payloads(want, after=mark)[-1:] == [b""])
    await integrator.publish(ghost_state, b"", retain=True)
    await device.close()


async def test_a_slow_monitor_listener_skips_ahead_and_never_slows_the_device(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    inbox = integrator
    edge = await start_edge(max_messages_per_second=100_000, burst_messages=100_000)
    mac = new_mac()
    device = await Device.connect(edge.port, device_id=mac)
    await device.hello()
    url = f"ws://127.0.0.1:{edge.port}/api/ws/audio?device_id={device_id_of(mac)}"
    listener = await websockets.connect(url, max_queue=1)  # reads nothing: as slow as it gets
    await asyncio.wait_for(listener.recv(), 10)  # attached
    await device.send_json({"type": "listen", "state": "start", "mode": "manual"})
    encoder = opuslib.Encoder(16000, 1, opuslib.APPLICATION_AUDIO)
    encoder.bitrate = 96_000  # large packets, so the listener's socket buffers fill sooner
    noise = os.urandom(960 * 2)
    frame = encode_opus(encoder.encode(noise, 960), 1)
    for _ in range(8000):
        await device.ws.send(frame)
    await device.send_json({"type": "listen", "state": "stop"})
    await _neighbour_still_works(device, inbox, device_id_of(mac), "still here")
    assert edge.counters.monitor_lagged_packets > 0
    await listener.close()
    await device.close()


async def test_a_broker_restart_mid_session_loses_no_voice_command(
    start_edge: StartEdge, tmp_path: Path
) -> None:
    with ManagedMosquitto(tmp_path / "own-broker") as broker:
        inbox = Recorder()
        durable = MqttOwner(
            broker.url, client_id="durable-hub", on_message=inbox, clean_session=False
        )
        await durable.start(wait_connected=15)
        await durable.subscribe([TOPICS.voice_command_events()], qos=1)
        edge = await start_edge(broker, max_messages_per_second=1000, burst_messages=1000)
        mac = new_mac()
        device = await Device.connect(edge.port, device_id=mac)
        await device.hello()
        for i in range(100):
            await device.send_json({"type": "listen", "state": "detect", "text": f"command {i}"})
        assert await asyncio.to_thread(broker.stop) == 0
        await asyncio.wait_for(edge.owner.disconnected.wait(), 15)
        for i in range(100, 200):  # the device stays connected while the broker is away
            await device.send_json({"type": "listen", "state": "detect", "text": f"command {i}"})
        await asyncio.to_thread(broker.start)
        wanted = {f"command {i}" for i in range(200)}
        await inbox.wait_for(
            lambda: wanted <= {v["command"] for v in inbox.json(TOPICS.voice_command_events())}, 30
        )
        assert edge.owner.stats.dropped_qos1 == 0
        # the edge subscribed again: a command published after the restart still arrives
        await durable.wait_flushed()
        payload = CommandPayload(command="alert", parameters={"status": "s", "message": "m"})
        durable.publish_nowait(
            OutMessage(TOPICS.command(device_id_of(mac)), payload.to_wire(), qos=1)
        )
        assert (await device.expect("alert"))["message"] == "m"
        await device.close()
        await durable.stop(flush_seconds=1)
        await edge.stop()  # while its broker runs: it flushes its offline state, no waiting


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_connect_disconnect_cycles_leave_no_growth(start_edge: StartEdge) -> None:
    edge = await start_edge()

    async def cycles(count: int) -> None:
        for index in range(count):
            device = await Device.connect(
                edge.port, device_id=f"02:00:00:00:{index // 256:02x}:{index % 256:02x}"
            )
            await device.hello()
            await device.close()
        await asyncio.wait_for(edge.idle.wait(), 15)
        await asyncio.wait_for(edge.owner.wait_flushed(), 15)

    await cycles(50)  # warm-up: caches, lazy imports, first allocations
    tasks, fds, rss = len(asyncio.all_tasks()), _open_fds(), _rss_kib()
    await cycles(500)
    assert len(asyncio.all_tasks()) <= tasks
    assert _open_fds() <= fds + 2
    assert _rss_kib() - rss < 16 * 1024, "memory grew by more than 16 MiB over 500 cycles"
    assert edge.connections == set()
    assert edge.by_device == {}


async def test_devices_gone_and_failed_upgrades_leave_nothing_behind(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    """An edge's memory follows the devices it holds, not every id it ever saw: one-time
    devices that sent a status and sensor readings, and upgrades refused after the
    handshake check (a bad Sec-WebSocket-Key), leave no entry once they are gone."""
    edge = await start_edge()
    kept = edge.stats()["mqtt"]["retained_remembered"]  # the edge's own bridge state
    for index in range(60):
        device_id = f"02:00:00:01:00:{index:02x}"
        device = await Device.connect(edge.port, device_id=device_id)
        await device.hello()
        await device.send_json(
            {
                "type": "sensor",
                "data": {"sensor_type": "temperature", "value": 20.5, "unit": "celsius"},
            }
        )
        await device.close()
    await asyncio.wait_for(edge.idle.wait(), 15)
    await asyncio.wait_for(edge.owner.wait_flushed(), 15)
    # The broker has every last status and reading; the edge remembers none of them.
    last = "02000001003b"
    await integrator.expect(f"xiaozhi/status/{last}", lambda s: s["status"] == "disconnected")
    assert edge.stats()["mqtt"]["retained_remembered"] == kept

    request = (
        f"GET /xiaozhi/v1/ HTTP/1.1\r\nHost: 127.0.0.1:{edge.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: not-base64\r\n"
        "Sec-WebSocket-Version: 13\r\nDevice-Id: 02:00:00:02:00:01\r\n\r\n"
    ).encode()
    for _ in range(100):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(request)
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 400"), status
        writer.close()
        await writer.wait_closed()
    gc.collect()
    # The last refused connection may still be closing; the 99 before it are gone.
    assert edge.stats()["handshakes_in_flight"] <= 1


async def test_a_flood_while_the_broker_stalls_is_held_back_and_every_loss_counted(
    start_edge: StartEdge, tmp_path: Path
) -> None:
    """Devices sending as fast as TCP lets them while the broker is stalled (SIGSTOP): the
    edge stops reading them once its MQTT queue is three quarters full (here its byte bound),
    so its memory stays bounded and the devices are slowed (their sockets fill up). A calm
    device on the same edge still has its message read: one larger than the queue's bound is
    dropped and counted in /stats and /metrics, its next one goes through. Once
    the broker is back, every message is published but the one counted."""
    bound = 60_000  # bytes: about 160 queued sensor readings
    with ManagedMosquitto(tmp_path / "broker") as broker:
        edge = await start_edge(
            broker, max_queued_mqtt_bytes=bound, max_messages_per_second=1_000_000,
            burst_messages=1_000_000,
        )  # fmt: skip
        devices = await connect_devices("127.0.0.1", edge.port, 20)
        [calm] = await connect_devices("127.0.0.1", edge.port, 1)
        calm_id = device_id_of(calm.device_id)
        calm_topics = (TOPICS.sensor(calm_id, "big"), TOPICS.sensor(calm_id, "calm"))
        async with record(broker.url, *calm_topics, name="calm") as subscriber:
            reading = ws_frame(
                0x1,
                b'{"type": "sensor", "data": {"sensor_type": "temp", "value": 20.5, "unit": "C"}}',
            )
            await asyncio.wait_for(edge.owner.wait_flushed(), 15)  # connected, nothing pending
            frames = edge.counters.snapshot()["frames_received"]
            published = edge.stats()["mqtt"]["published"]
            rss = _rss_kib()
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                # 20 devices x 5,000 readings = 100,000 messages (11 MB): more than the queue,
                # paho's bounded backlog and the socket buffers to the stalled broker hold.
                for device in devices:
                    device.write(reading * 5_000)
                await _until(
                    lambda: edge.stats()["mqtt"]["queued_bytes"] >= bound * 3 // 4, within=30
                )
                held = edge.stats()["mqtt"]
                assert held["queued_bytes"] <= bound, held
                assert edge.counters.reads_paused > 0
                # Nothing else holds the flood: paho has at most its bounded backlog.
                assert held["socket_backlog_bytes"] <= 2 * PAHO_BACKLOG_BYTES, held
                read = edge.counters.snapshot()["frames_received"] - frames
                assert read < 50_000, f"the edge read {read} of 100,000 messages it cannot send"
                assert _rss_kib() - rss < 64 * 1024, "the edge buffered the flood"
                # The calm device: 61 KB is more than the whole queue holds.
                big = '{"type":"sensor","data":{"sensor_type":"big","value":"%s"}}' % ("x" * 61_000)
                calm.send_text(big.encode())
                await _until(lambda: edge.stats()["mqtt"]["dropped_qos0"] == 1, within=15)
                calm.send_text(b'{"type":"sensor","data":{"sensor_type":"calm","value":1}}')
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            # Every reading taken in turn: the devices waited, not the edge.
            await _until(
                lambda: edge.stats()["mqtt"]["published"] - published >= 100_001, within=60
            )
            assert edge.stats()["mqtt"]["published"] - published == 100_001
            await subscriber.first(lambda m: m.topic == calm_topics[1], within=30)
            assert [m.topic for m in subscriber.messages] == [calm_topics[1]]
            stats = edge.stats()["mqtt"]
            assert (stats["dropped_qos0"], stats["dropped_qos1"]) == (1, 0)
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{edge.port}/metrics")).text
            assert 'xiaozhi_edge_mqtt_dropped_total{qos="0"} 1.0' in metrics
            assert "xiaozhi_edge_reads_paused_total" in metrics
            for device in [*devices, calm]:
                device.abort()


async def _until(check: Callable[[], bool], *, within: float) -> None:
    """Wait for a condition of the edge's counters (re-checked every 10 ms); fail after
    ``within`` seconds. Counters have no event to wait on."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.01)


async def _line_starting(stream: asyncio.StreamReader, prefix: str, within: float = 30) -> str:
    """The next line of `stream` that starts with `prefix` (others are skipped)."""

    async def _read() -> str:
        while line := (await stream.readline()).decode():
            if line.startswith(prefix):
                return line.rstrip("\n")
        raise AssertionError(f"the output ended before a line starting with {prefix!r}")

    return await asyncio.wait_for(_read(), within)


async def test_workers_share_one_port_and_stop_cleanly(
    mosquitto: ManagedMosquitto, integrator: Recorder, tmp_path: Path
) -> None:
    """`xiaozhi edge --workers 2` on port 0: the parent picks one free port, both worker
    processes listen on it (SO_REUSEPORT), each is an edge, and each says where it listens."""
    import re
    import signal
    import sys

    inbox = integrator
    base_id = f"edge-w-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env.update(
        XIAOZHI_MQTT_URL=mosquitto.url,
        XIAOZHI_EDGE_PORT="0",
        XIAOZHI_EDGE_HOST="127.0.0.1",
        XIAOZHI_DEVICE_AUTH="open",
        XIAOZHI_EDGE_ID=base_id,
        XIAOZHI_STATE_DIR=str(tmp_path),
    )
    xiaozhi = str(Path(sys.executable).with_name("xiaozhi"))
    process = await asyncio.create_subprocess_exec(
        xiaozhi, "edge", "--workers", "2", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    workers = [f"{base_id}-w0", f"{base_id}-w1"]

    def state_of(worker: str) -> str | None:
        states = inbox.json(TOPICS.bridge_edge(worker))
        return states[-1]["state"] if states else None

    try:
        shared = await _line_starting(process.stdout, "edge      ")
        match = re.fullmatch(r"edge      ws://127\.0\.0\.1:(\d+)/xiaozhi/v1/ \(2 workers\)", shared)
        assert match, shared
        port = int(match.group(1))
        assert port != 0
        for _ in workers:
            assert f"ws://127.0.0.1:{port}/xiaozhi/v1/ (devices)" in await _line_starting(
                process.stdout, "edge      "
            )
        await inbox.wait_for(lambda: all(state_of(w) == "online" for w in workers), 30)
        pids = set()
        async with httpx.AsyncClient() as http:
            for _ in range(40):
                stats = (await http.get(f"http://127.0.0.1:{port}/stats")).json()
                pids.add(stats["pid"])
        assert len(pids) == 2, "both workers answer on the shared port"
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    await inbox.wait_for(lambda: all(state_of(w) == "offline" for w in workers))


async def test_invalid_utf8_in_a_text_frame_closes_1007_and_spares_the_others(
    start_edge: StartEdge,
) -> None:
    """RFC 6455 section 8.1: invalid UTF-8 in a text frame fails the connection (1007)."""
    edge = await start_edge()
    bystander = await Device.connect(edge.port, device_id=new_mac())
    await bystander.hello()
    device = await Device.connect(edge.port, device_id=new_mac())
    await device.hello()
    await device.ws.send(b'{"type":"listen","text":"\xff\xfe"}', text=True)
    code, _ = await device.closed()
    assert code == 1007
    await bystander.send_json({"session_id": "x", "type": "listen", "state": "detect"})
    await bystander.ws.ping()
    assert bystander.ws.close_code is None
    await bystander.close()


async def test_an_utterance_no_worker_finishes_is_sent_whole(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    """Streaming loses nothing: unclaimed, the utterance goes whole at its end; claimed by
    a worker that then dies (never says ``received``), it goes whole once the wait is over.
    The integrator plays the worker (docs/topics.md §2.12)."""
    edge = await start_edge()
    mac = new_mac()
    device_id = device_id_of(mac)
    device = await Device.connect(edge.port, device_id=mac, version=1)
    await device.hello()
    await _announced(integrator, device_id)
    frames = opus_tone_frames(15)
    listen = {"type": "listen", "state": "start", "mode": "manual"}
    for claimed in (False, True):
        mark = integrator.mark()
        await device.send_json(listen)
        await device.send_opus(frames[:5], timestamp_ms=0)
        start = await integrator.expect(TOPICS.utterance_start(device_id), after=mark)
        if claimed:
            claim = {"device_id": device_id, "message_id": start["message_id"],
                     "worker_id": "w-dead", "state": "claimed"}  # fmt: skip
            await integrator.publish(TOPICS.utterance_claim(device_id), claim)
            first = await integrator.expect(
                TOPICS.utterance_stream(device_id, "w-dead"), after=mark
            )
            assert (first["seq"], len(first["frames"]), first["final"]) == (0, 5, False)
        await device.send_opus(frames[5:], timestamp_ms=300)
        await device.send_json({"type": "listen", "state": "stop"})
        whole = await integrator.expect(TOPICS.utterance(device_id), after=mark, within=10)
        assert whole["message_id"] == start["message_id"]
        assert len(whole["frames"]) == 15
        batches = integrator.json(TOPICS.utterance_stream(device_id, "w-dead"), after=mark)
        assert [b["seq"] for b in batches] == (list(range(len(batches))) if claimed else [])
        assert not claimed or batches[-1]["final"]
    await device.close()
