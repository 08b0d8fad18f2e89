"""The simulator's MQTT + UDP device through the whole system (issue 16 point 5): the hub's
setup answer, a token-mode edge with its MQTT listener, Mosquitto and the hub.

What a user notices: ``xiaozhi sim device --transport mqtt-udp`` takes the setup answer's
``mqtt`` block, and a phrase typed into it (``listen detect``) turns the light on and is
answered with TTS it decrypts and decodes; a phrase spoken into its microphone reaches the hub
as one utterance; its hostile datagrams are noticed and dropped by the edge while the device
keeps working; its goodbye ends the session on the bus.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.edge.helpers import pcm_tone
from tests.hub.test_mqtt_udp_devices import client, edge, setup
from tests.support import Recorder
from xiaozhi.messages import ListenMode
from xiaozhi.payloads import UtterancePayload
from xiaozhi_edge.server import EdgeServer
from xiaozhi_hub.http import RunningHub
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.device import Fault
from xiaozhi_sim.fleet import DeviceSpec, build_device
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mqtt_udp_device import MqttUdpDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.stats import SimStats

pytestmark = pytest.mark.integration  # a real Mosquitto

__all__ = ["client", "edge"]  # fixtures, used by name


async def _device(
    http: httpx.AsyncClient,
    running_hub: RunningHub,
    hub_settings: HubSettings,
    *,
    mode: ListenMode | None = None,
) -> MqttUdpDevice:
    """A simulated MQTT + UDP device, approved on the hub, as `xiaozhi sim device
    --transport mqtt-udp` builds it."""
    hub_settings.device_transport = "mqtt-udp"
    identity = make_identity(name=f"sim-mqtt-udp-{uuid.uuid4().hex[:8]}")
    await setup(http, identity.header_device_id, identity.client_id)  # the operator approves it
    settings = SimSettings(
        mqtt_url=hub_settings.mqtt_url,
        base_topic=hub_settings.base_topic,
        sim_ota_url=f"{running_hub.url}/xiaozhi/ota/",
        sim_ws_url="ws://127.0.0.1:9/xiaozhi/v1/",
        sim_token="",
    )
    spec = DeviceSpec("mqtt-udp", mode=mode, name=identity.name)
    device = build_device(
        spec,
        settings,
        index=0,
        stats=SimStats(),
        paho=PahoAsyncio(),
        http=None,
        decode_audio=True,
    )
    assert isinstance(device, MqttUdpDevice)
    return device


async def test_a_typed_phrase_is_answered_with_encrypted_tts_and_faults_are_dropped(
    client: httpx.AsyncClient,
    edge: EdgeServer,
    hub_settings: HubSettings,
    running_hub: RunningHub,
    watcher: Recorder,
    tmp_path: Path,
) -> None:
    device = await _device(client, running_hub, hub_settings)
    device.record_path = tmp_path / "answer.wav"
    status_topic = f"{hub_settings.base_topic}/status/{device.device_id}"
    try:
        await device.start()
        assert device.mqtt_setup is not None  # setup chose MQTT + UDP
        await device.say("turn on the living room light")

        def answered() -> bool:
            return any(
                r.kind == "message"
                and r.payload.get("type") == "tts"
                and r.payload.get("state") == "stop"
                for r in device.inbox
            )

        assert await device.wait_until(answered, 15)
        sentences = [
            r.payload["text"]
            for r in device.inbox
            if r.kind == "message" and r.payload.get("state") == "sentence_start"
        ]
        assert sentences == ["Turning on the living room light."]
        assert running_hub.service.states["light.living_room"]["state"] == "on"
        # the answer's audio came as datagrams, decrypted and decoded by the device
        assert device.recorder is not None
        assert device.recorder.packets > 0
        assert device.recorder.errors == 0
        assert device.recorder.seconds > 0
        assert device.record_path.stat().st_size > 44  # a WAV with audio in it
        assert (await watcher.expect(status_topic, lambda s: s["status"] == "connected"))[
            "edge_id"
        ] == edge.settings.edge_id

        # hostile datagrams: each noticed and dropped by the edge
        assert edge.mqtt_udp is not None
        for fault in (Fault.BAD_KEY, Fault.REPLAYED_SEQUENCE, Fault.WRONG_SSRC):
            await device.inject(fault)
        received = edge.mqtt_udp.received
        while sum(edge.mqtt_udp.counters.datagrams_dropped.values()) < 3:
            received.clear()
            await received.wait()
        assert edge.mqtt_udp.counters.datagrams_dropped == {
            "undecryptable": 1,
            "stale_sequence": 1,
            "unknown_ssrc": 1,
        }
        assert edge.mqtt_udp.counters.subscribes_refused == 0  # it never subscribed

        # the device's goodbye ends the session on the bus; the MQTT connection stays
        await device.close_channel()
        await watcher.expect(status_topic, lambda s: s["status"] == "disconnected")
        assert device.client is not None
        assert device.client.is_connected()
    finally:
        await device.stop()


async def test_a_spoken_phrase_reaches_the_hub_as_an_utterance(
    client: httpx.AsyncClient,
    edge: EdgeServer,
    hub_settings: HubSettings,
    running_hub: RunningHub,
    watcher: Recorder,
) -> None:
    device = await _device(client, running_hub, hub_settings, mode=ListenMode.MANUAL)
    try:
        await device.start()
        await device.wake()
        sent = await device.speak_pcm(pcm_tone(440.0, 900))
        message = await watcher.first(
            lambda m: m.topic == f"{hub_settings.base_topic}/utterances/{device.device_id}"
        )
    finally:
        await device.stop()
    utterance = UtterancePayload.from_wire(message.payload)
    # its microphone's packets, over UDP; the stop (over MQTT) may overtake the last one
    assert sent - 1 <= len(utterance.opus_packets()) <= sent
    assert utterance.reason == "stop"
