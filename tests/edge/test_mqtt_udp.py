"""Real firmware's MQTT + UDP transport on a real edge and a real Mosquitto (issue 16).

The device is :class:`MqttUdpFirmware`: paho-mqtt that never subscribes, and datagrams built
by hand with AES-128-CTR, as ``mqtt_protocol.cc`` builds them. What a user notices: the device
connects and is ``connected`` on the bus; what it says over UDP becomes one utterance with
every frame it sent and nothing else; replayed, forged, garbled and stray datagrams are
counted in ``/stats`` and ``/metrics`` and change nothing; a new hello gives a new key; a
goodbye or silence ends the session; a broker's packets are refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import StartEdge
from tests.edge.helpers import silence_packets, tone_packets
from tests.edge.mqtt_udp_firmware import MqttUdpFirmware, listening
from tests.support import Recorder
from xiaozhi.payloads import UtterancePayload
from xiaozhi.tokens import Ed25519PrivateKey, public_key_text
from xiaozhi_edge.server import EdgeServer
from xiaozhi_runtime import opus

pytestmark = pytest.mark.integration  # a real Mosquitto


def new_mac() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def client_id(mac: str) -> str:
    return f"GID_test@@@{mac.replace(':', '_')}@@@{uuid.uuid4()}"


@pytest.fixture
async def edge(start_edge: StartEdge) -> EdgeServer:
    return await start_edge(device_mqtt_port=0)


def firmware(edge: EdgeServer, mac: str, **options: Any) -> MqttUdpFirmware:
    assert edge.mqtt_udp is not None
    return MqttUdpFirmware(
        "127.0.0.1", edge.mqtt_udp.mqtt_port, client_id=client_id(mac), **options
    )


async def stats(edge: EdgeServer) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer: dict[str, Any] = (await http.get(f"http://127.0.0.1:{edge.port}/stats")).json()
    return answer


async def test_a_device_connects_says_hello_and_is_connected(
    edge: EdgeServer, integrator: Recorder
) -> None:
    mac = new_mac()
    device_id = mac.replace(":", "")
    async with firmware(edge, mac) as device:
        assert device.rc == 0
        server = await device.hello()
        assert server["transport"] == "udp"
        assert server["audio_params"] == {
            "format": "opus",
            "sample_rate": 16000,
            "channels": 1,
            "frame_duration": 60,
        }
        assert server["udp"]["server"] == "127.0.0.1"
        assert server["udp"]["port"] == edge.mqtt_udp.udp_port  # type: ignore[union-attr]
        # every push came to the device's inbox, which it never subscribed to
        assert {topic for topic, _ in device.messages} == {f"devices/p2p/{mac.replace(':', '_')}"}
        status = await integrator.expect(
            f"xiaozhi/status/{device_id}", lambda s: s["status"] == "connected"
        )
        assert status["session_id"] == server["session_id"]
        assert status["transport"] == "mqtt-udp"  # what integrators see it came by
        joined = await integrator.expect(
            "xiaozhi/events/device_connected", lambda e: e["device_id"] == device_id
        )
        assert joined["transport"] == "mqtt-udp"


async def test_speech_over_udp_is_one_utterance_and_hostile_datagrams_change_nothing(
    edge: EdgeServer, integrator: Recorder
) -> None:
    mac = new_mac()
    device_id = mac.replace(":", "")
    spoken = tone_packets(1200)  # 20 frames of real Opus
    async with firmware(edge, mac) as device, firmware(edge, new_mac()) as other:
        await device.hello()
        await other.hello()
        device.publish({"session_id": device.session_id, "type": "listen", "state": "start",
                        "mode": "manual"})  # fmt: skip
        await listening(device, integrator, f"xiaozhi/events/{device_id}")
        first = device.send_audio(spoken[0])
        for packet in spoken[1:10]:
            device.send_audio(packet)
        device.send_raw(first)  # replayed
        device.send_audio(spoken[10], key=bytes(16))  # another key: noise, refused
        device.send_raw(first[:4] + b"\x00\x00\x00\x01" + first[8:])  # an ssrc nobody has
        device.send_raw(b"\x01\x02\x03")  # shorter than a header
        other.send_raw(device.datagram(spoken[10], sequence=11))  # valid, from elsewhere
        # Two sending sockets give no order between them: let the 11th land before the 12th,
        # or the edge rightly drops it as older than what it already has.
        await _settled(edge, lambda c: c["datagrams_received"] == 15)
        for packet in spoken[11:]:
            device.send_audio(packet)
        # the other device's audio channel is untouched by all of it
        other.send_audio(silence_packets(60)[0])
        # UDP and MQTT are two sockets: let every datagram land before the stop
        await _settled(edge, lambda c: c["datagrams_received"] == 25)
        device.publish({"session_id": device.session_id, "type": "listen", "state": "stop"})
        utterance = UtterancePayload.from_wire(
            (await integrator.first(lambda m: m.topic == f"xiaozhi/utterances/{device_id}")).payload
        )
    # 20 frames arrived: the 11th came from another address (and taught the edge that address),
    # the replay, the forgery, the stray and the fragment did not count.
    packets = utterance.opus_packets()
    assert packets == spoken
    counters = (await stats(edge))["mqtt_udp"]
    assert counters["datagrams_dropped"] == {
        "stale_sequence": 1,
        "undecryptable": 1,
        "unknown_ssrc": 1,
        "malformed": 1,
    }
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{edge.port}/metrics")).text
    assert 'xiaozhi_edge_udp_datagrams_dropped_total{reason="stale_sequence"} 1.0' in metrics
    assert opus.decode(packets, sample_rate=16000)  # real audio, decodable


async def test_every_hello_gives_a_new_key_and_the_old_one_stops_working(
    edge: EdgeServer, integrator: Recorder
) -> None:
    async with firmware(edge, new_mac()) as device:
        first = await device.hello()
        device.send_audio(silence_packets(60)[0])
        old_datagram = device.datagram(silence_packets(60)[0])
        second = await device.hello()
        assert second["udp"]["key"] != first["udp"]["key"]
        assert second["udp"]["nonce"] != first["udp"]["nonce"]  # a new ssrc too
        assert second["session_id"] != first["session_id"]
        device.send_raw(old_datagram)
        device.send_audio(silence_packets(60)[0])  # sequence 1 again: accepted
        counters = await _settled(edge, lambda c: c["datagrams_received"] == 3)
    assert counters["datagrams_dropped"] == {"unknown_ssrc": 1}
    assert counters["hellos"] == 2


async def _settled(edge: EdgeServer, check: Any) -> dict[str, Any]:
    """The transport's counters once ``check`` holds (datagrams arrive asynchronously)."""
    assert edge.mqtt_udp is not None
    received = edge.mqtt_udp.received
    async with asyncio.timeout(10):
        while not check(counters := edge.mqtt_udp.stats()):
            received.clear()
            await received.wait()
    return counters


async def test_goodbye_from_the_device_ends_the_session_and_its_key(
    edge: EdgeServer, integrator: Recorder
) -> None:
    mac = new_mac()
    device_id = mac.replace(":", "")
    async with firmware(edge, mac) as device:
        await device.hello()
        pushed = len(device.messages)
        device.publish({"session_id": device.session_id, "type": "goodbye"})
        await integrator.expect(
            f"xiaozhi/status/{device_id}", lambda s: s["status"] == "disconnected"
        )
        device.send_audio(silence_packets(60)[0])
        counters = await _settled(edge, lambda c: c["datagrams_dropped"].get("unknown_ssrc"))
        assert counters["voice_sessions"] == 0
        # no goodbye back to a device that said goodbye (firmware reference §2.5), and the
        # MQTT connection stays for the next voice session
        assert not [m for _, m in device.messages[pushed:] if m.get("type") == "goodbye"]
        assert not device.disconnected
        await device.hello()


async def test_a_silent_session_gets_a_goodbye_for_it(start_edge: StartEdge) -> None:
    edge = await start_edge(device_mqtt_port=0, idle_timeout_seconds=1)
    async with firmware(edge, new_mac()) as device:
        await device.hello()
        goodbye = await device.message("goodbye")
        assert goodbye["session_id"] == device.session_id


async def test_a_broker_s_packets_are_refused(edge: EdgeServer) -> None:
    async with firmware(edge, new_mac()) as device:
        granted: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        device.client.on_subscribe = lambda _c, _u, _m, codes, _p: loop.call_soon_threadsafe(
            granted.put_nowait, [c.value for c in codes]
        )
        device.client.subscribe("devices/p2p/#")  # what pre-2025 firmware did
        assert await asyncio.wait_for(granted.get(), 10) == [0x80]
        await device.hello()  # still served
        device.client.publish("device-server", b"{}", qos=1)
        await device.until(lambda: device.disconnected, "closed for a QoS 1 publish")
    assert (await stats(edge))["mqtt_udp"]["packets_refused"] == 1


async def test_credentials_not_in_the_xinnan_form_are_refused(edge: EdgeServer) -> None:
    assert edge.mqtt_udp is not None
    port = edge.mqtt_udp.mqtt_port
    async with MqttUdpFirmware("127.0.0.1", port, client_id="just-a-client") as device:
        assert device.rc == 2  # identifier rejected


async def test_allowlist_and_xinnan_signatures(start_edge: StartEdge) -> None:
    allowed = new_mac()
    edge = await start_edge(device_mqtt_port=0, device_auth="allowlist", allowed_devices=allowed)
    async with firmware(edge, allowed) as device:
        assert device.rc == 0
    async with firmware(edge, new_mac()) as device:
        assert device.rc == 5  # not authorized

    # A fleet coming from a xinnan server keeps its HMAC passwords when the edge has the key.
    key = os.urandom(8).hex()
    edge = await start_edge(
        device_mqtt_port=0,
        device_auth="token",
        device_token_public_key=public_key_text(Ed25519PrivateKey.generate()),
        device_mqtt_signature_key=key,
    )
    assert edge.mqtt_udp is not None
    name, username = client_id(new_mac()), "eyJpcCI6IjEyNy4wLjAuMSJ9"
    digest = hmac.new(key.encode(), f"{name}|{username}".encode(), hashlib.sha256).digest()
    signed = base64.b64encode(digest).decode()
    port = edge.mqtt_udp.mqtt_port
    for password, code in ((signed, 0), (signed[:-4] + "AAA=", 4)):
        async with MqttUdpFirmware(
            "127.0.0.1", port, client_id=name, username=username, password=password
        ) as device:
            assert device.rc == code


async def test_an_edge_stopping_says_goodbye_and_the_device_is_disconnected(
    edge: EdgeServer, integrator: Recorder
) -> None:
    mac = new_mac()
    async with firmware(edge, mac) as device:
        await device.hello()
        await edge.stop()
        goodbye = await device.message("goodbye")
        assert goodbye["session_id"] == device.session_id
        await integrator.expect(
            f"xiaozhi/status/{mac.replace(':', '')}", lambda s: s["status"] == "disconnected"
        )
        await device.until(lambda: device.disconnected, "the MQTT connection closed")
