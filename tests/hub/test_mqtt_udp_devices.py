"""Firmware on MQTT + UDP through the whole system (issue 16): the hub's setup answer, a
token-mode edge, Mosquitto and the hub's voice pipeline.

What a user notices: a device whose fleet (or whose entry in the home model) is set to
MQTT + UDP gets an ``mqtt`` block instead of ``websocket`` once approved, connects with it,
and is then like any other device: a typed command turns the light on and is answered, with
a chime the device decrypts and decodes; speech sent as encrypted Opus reaches the hub's
speech input as one utterance. A device that was not approved gets no credentials at all.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import StartEdge
from tests.edge.helpers import silence_packets, tone_packets
from tests.edge.mqtt_udp_firmware import MqttUdpFirmware, listening
from tests.hub.conftest import WRITE_KEY
from tests.support import Recorder
from xiaozhi.mqtt_credentials import decode_username
from xiaozhi.payloads import UtterancePayload
from xiaozhi_edge.server import EdgeServer
from xiaozhi_hub.home import Device, Home
from xiaozhi_hub.http import RunningHub
from xiaozhi_hub.settings import HubSettings
from xiaozhi_runtime import opus

pytestmark = pytest.mark.integration  # a real Mosquitto

BODY = {"version": 2, "application": {"name": "xiaozhi", "version": "1.8.2"}}


def new_mac() -> str:
    raw = uuid.uuid4().hex[:12].upper()
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


@pytest.fixture
async def client(running_hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running_hub.url, timeout=10) as http:
        yield http


@pytest.fixture
async def edge(
    start_edge: StartEdge, hub_settings: HubSettings, running_hub: RunningHub
) -> EdgeServer:
    """A token-mode edge with the MQTT listener; the hub hands out its real port, as
    `xiaozhi up` hands out the WebSocket port."""
    server = await start_edge(
        device_auth="token", device_mqtt_port=0, base_topic=hub_settings.base_topic
    )
    assert server.mqtt_udp is not None
    hub_settings.edge_mqtt_port = server.mqtt_udp.mqtt_port
    return server


async def setup(http: httpx.AsyncClient, mac: str, client_id: str) -> dict[str, Any]:
    """The firmware's setup call (firmware reference §3.1), approved by the operator."""
    headers = {"Device-Id": mac, "Client-Id": client_id, "User-Agent": "bread/1.8.2"}
    answer: dict[str, Any] = (await http.post("/xiaozhi/ota/", headers=headers, json=BODY)).json()
    if "activation" in answer:
        assert "mqtt" not in answer, "credentials before approval"
        code = answer["activation"]["code"]
        approved = await http.post(
            "/api/v1/activations/approve", headers={"X-API-Key": WRITE_KEY}, json={"code": code}
        )
        assert approved.status_code == 200, approved.text
        answer = (await http.post("/xiaozhi/ota/", headers=headers, json=BODY)).json()
    return answer


def connect(answer: dict[str, Any]) -> MqttUdpFirmware:
    """Connect as ``MqttProtocol::StartMqttClient`` does, with the setup answer's settings."""
    mqtt = answer["mqtt"]
    host, _, port = mqtt["endpoint"].rpartition(":")
    return MqttUdpFirmware(
        host,
        int(port),
        client_id=mqtt["client_id"],
        username=mqtt["username"],
        password=mqtt["password"],
        publish_topic=mqtt["publish_topic"],
    )


async def test_a_fleet_on_mqtt_udp_gets_the_mqtt_block_and_a_typed_command_is_answered(
    client: httpx.AsyncClient,
    edge: EdgeServer,
    hub_settings: HubSettings,
    running_hub: RunningHub,
    watcher: Recorder,
) -> None:
    hub_settings.device_transport = "mqtt-udp"
    mac, board = new_mac(), str(uuid.uuid4())
    answer = await setup(client, mac, board)
    assert "websocket" not in answer  # MQTT would win anyway (reference §2.1): say one thing
    mqtt = answer["mqtt"]
    assert mqtt["client_id"] == f"GID_xiaozhi@@@{mac.replace(':', '_')}@@@{board}"
    assert decode_username(mqtt["username"]) == {"ip": "127.0.0.1"}
    assert mqtt["publish_topic"] == "device-server"

    device_id = mac.replace(":", "").lower()
    async with connect(answer) as device:
        assert device.rc == 0
        await device.hello()
        device.send_audio(silence_packets(60)[0])  # the microphone starts: NAT learning
        device.publish(
            {
                "session_id": device.session_id,
                "type": "listen",
                "state": "detect",
                "text": "turn on the living room light",
            }
        )
        sentence = await device.message("tts", check=lambda m: m["state"] == "sentence_start")
        assert sentence["text"] == "Turning on the living room light."
        assert running_hub.service.states["light.living_room"]["state"] == "on"
        chime = [await device.receive_audio()]  # encrypted for this device, decrypted here
        await device.message("tts", check=lambda m: m["state"] == "stop")
        while not device.audio.empty():
            chime.append(await device.receive_audio())
        assert len(opus.decode(chime, sample_rate=16000)) > 0
    status = await watcher.expect(
        f"{hub_settings.base_topic}/status/{device_id}", lambda s: s["status"] == "connected"
    )
    assert status["edge_id"] == edge.settings.edge_id


async def test_speech_over_udp_reaches_the_hub_as_an_utterance(
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.AsyncClient,
    edge: EdgeServer,
    hub_settings: HubSettings,
    running_hub: RunningHub,
    watcher: Recorder,
) -> None:
    mac = new_mac()
    device_id = mac.replace(":", "").lower()
    # One device of a WebSocket fleet set to MQTT + UDP in the home model (a copy: the
    # session's home is shared by every hub test).
    home: Home = running_hub.service.home.model_copy(deep=True)
    home.devices.append(Device(id=device_id, name="Porch speaker", transport="mqtt-udp"))
    home.model_post_init(None)
    monkeypatch.setattr(running_hub.service, "home", home)
    answer = await setup(client, mac, str(uuid.uuid4()))
    assert "mqtt" in answer
    spoken = tone_packets(900)
    async with connect(answer) as device:
        await device.hello()
        device.publish(
            {"session_id": device.session_id, "type": "listen", "state": "start", "mode": "manual"}
        )
        await listening(device, watcher, f"{hub_settings.base_topic}/events/{device_id}")
        for packet in spoken:
            device.send_audio(packet)
        assert edge.mqtt_udp is not None
        received = edge.mqtt_udp.received
        while edge.mqtt_udp.counters.datagrams_received < len(spoken):
            received.clear()
            await received.wait()
        device.publish({"session_id": device.session_id, "type": "listen", "state": "stop"})
        message = await watcher.first(
            lambda m: m.topic == f"{hub_settings.base_topic}/utterances/{device_id}"
        )
    utterance = UtterancePayload.from_wire(message.payload)
    assert utterance.opus_packets() == spoken
    assert utterance.reason == "stop"
    other = await setup(client, new_mac(), str(uuid.uuid4()))  # the fleet stays on WebSocket
    assert "websocket" in other
    assert "mqtt" not in other


async def test_a_password_copied_to_another_board_is_refused(
    client: httpx.AsyncClient, edge: EdgeServer, hub_settings: HubSettings
) -> None:
    hub_settings.device_transport = "mqtt-udp"
    mqtt = (await setup(client, new_mac(), str(uuid.uuid4())))["mqtt"]
    host, _, port = mqtt["endpoint"].rpartition(":")
    other_board = mqtt["client_id"].rsplit("@@@", 1)[0] + f"@@@{uuid.uuid4()}"
    for client_id, password in ((other_board, mqtt["password"]), (mqtt["client_id"], "")):
        async with MqttUdpFirmware(
            host, int(port), client_id=client_id, username=mqtt["username"], password=password
        ) as device:
            assert device.rc == 4  # bad user name or password
    refused = edge.stats()["mqtt_udp"]["links_refused"]
    assert refused == {"BAD_USERNAME_OR_PASSWORD": 2}
