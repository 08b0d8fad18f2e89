"""Spoken commands end to end: a firmware-like device says a sentence (synthesized speech,
real Opus, 60 ms frames, manual listening), a real edge forwards the utterance, a real hub
transcribes it with the offline recogniser, acts, and answers out loud; all on the session's
Mosquitto.

What a user notices: the light changes, the device hears a spoken answer (audio that decodes
to a voice, not a chime or silence), and a sentence the home cannot do executes nothing. The
same holds for firmware on MQTT + UDP (issue 16): its speech goes up as encrypted datagrams
and the spoken answer comes down the same way, decrypted and decoded by the device.
"""

from __future__ import annotations

import array
import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartEdge
from tests.support import Recorder, record
from xiaozhi.messages import ListenMode
from xiaozhi.payloads import UtteranceChunk, UtteranceStart
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_hub.activations import DeviceApproval
from xiaozhi_hub.http import run_hub
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_runtime import opus
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mqtt_udp_device import MqttUdpDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

pytestmark = pytest.mark.integration  # a real Mosquitto

ANSWER_SECONDS = 30.0  # speaking takes real time (about 3 s), then transcription and the answer


@pytest.fixture
async def spoken_system(
    mosquitto: ManagedMosquitto, start_edge: StartEdge, tmp_path: Path
) -> AsyncIterator[tuple[HubService, SimSettings, Recorder]]:
    """An edge and a hub (offline recogniser, espeak-ng answers) under a base topic of
    their own, the simulator's settings pointed at the edge, and a recorder of the tree."""
    tag = uuid.uuid4().hex[:8]
    base = f"s{tag}/xiaozhi"
    edge = await start_edge(base_topic=base)
    hub = HubService(_speaking_hub(mosquitto, tmp_path, tag, base))
    sim = SimSettings(
        mqtt_url=mosquitto.url,
        base_topic=base,
        sim_ota_url="",
        sim_ws_url=f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/",
        sim_token="",
    )
    async with record(mosquitto.url, f"{base}/#", name="spoken") as recorder:
        await hub.start()
        try:
            yield hub, sim, recorder
        finally:
            await hub.stop()


def _speaking_hub(mosquitto: ManagedMosquitto, state: Path, tag: str, base: str) -> HubSettings:
    """A hub that listens (offline recogniser) and answers out loud (espeak-ng)."""
    return HubSettings(
        mqtt_url=mosquitto.url,
        hub_host="127.0.0.1",
        hub_port=0,
        base_topic=base,
        discovery_enabled=False,
        hub_id=f"hub-{tag}",
        hub_share_group=f"g{tag}",
        speech_share_group=f"sp{tag}",
        state_dir=state,
        config=None,
        stt_engine="offline",
        tts_engine="espeak",
    )


def _answers(device: WsDevice) -> list[str]:
    return [
        r.payload["text"]
        for r in device.inbox
        if r.kind == "message"
        and r.payload.get("type") == "tts"
        and r.payload.get("state") == "sentence_start"
    ]


async def _speak(device: WsDevice, text: str) -> str:
    """Say ``text`` aloud and return the sentence the device is answered."""
    await device.start()
    await device.say_aloud(text)
    assert await device.wait_until(lambda: bool(_answers(device)), ANSWER_SECONDS), device.inbox
    await device.wait_until(
        lambda: any(
            r.payload.get("type") == "tts" and r.payload.get("state") == "stop"
            for r in device.inbox
            if r.kind == "message"
        ),
        ANSWER_SECONDS,
    )
    return _answers(device)[-1]


def _voiced(device: WsDevice) -> bool:
    """The answer the device played is a voice: audible, longer than a chime."""
    recorder = device.recorder
    assert recorder is not None
    pcm = array.array("h", recorder.wav()[44:])
    return recorder.seconds > 0.8 and max(pcm, default=0) > 3000


async def test_a_spoken_command_is_executed_and_answered_out_loud(
    spoken_system: tuple[HubService, SimSettings, Recorder], tmp_path: Path
) -> None:
    hub, sim, recorder = spoken_system
    device = WsDevice(
        make_identity(name=f"spoken-{uuid.uuid4().hex[:6]}"),
        sim,
        mode=ListenMode.MANUAL,
        record_path=tmp_path / "answer.wav",
        decode_audio=True,
    )
    try:
        answer = await _speak(device, "turn on the living room light")
        assert answer == "Turning on the living room light."
        assert hub.states["light.living_room"]["state"] == "on"
        heard = await recorder.expect(
            hub.topics.voice_command_events(), lambda e: e["device_id"] == device.device_id
        )
        assert heard["command"] == "turn on the living room light"
        assert heard["language"] == "en-US"
        assert heard["confidence"] > 0.5
        assert heard["processing_time_ms"] > 0
        assert heard["audio_duration_ms"] > 1000
        assert _voiced(device)
        # Decoded while spoken: the edge offered it, this hub claimed it and got its frames.
        assert hub.stats()["counters"]["utterances_streamed"] == 1
        topics, device_id = hub.topics, device.device_id
        assert recorder.json(topics.utterance_stream(device_id, hub.settings.hub_id))[-1]["final"]
        assert recorder.json(topics.utterance(device_id)) == []  # never sent whole
    finally:
        await device.stop()


async def test_out_of_domain_speech_executes_nothing_and_says_so(
    spoken_system: tuple[HubService, SimSettings, Recorder],
) -> None:
    hub, sim, recorder = spoken_system
    before = {entity: dict(state) for entity, state in hub.states.items()}
    device = WsDevice(
        make_identity(name=f"joker-{uuid.uuid4().hex[:6]}"),
        sim,
        mode=ListenMode.MANUAL,
        decode_audio=True,
    )
    try:
        answer = await _speak(device, "tell me a joke about penguins")
        assert answer == "Sorry, I didn't catch that."
        response: dict[str, Any] = await recorder.expect(
            hub.topics.device_events(device.device_id), lambda e: e["event_type"] == "response"
        )
        assert (response["executed"], response["error"]) == (False, "out_of_domain")
        assert not [
            e
            for e in recorder.json(hub.topics.device_events(device.device_id))
            if e["event_type"] == "action"
        ]
        assert not recorder.json(hub.topics.voice_command_events())
        assert hub.states == before
    finally:
        await device.stop()


async def test_the_hub_claims_a_start_and_refuses_batches_it_cannot_use(
    spoken_system: tuple[HubService, SimSettings, Recorder],
) -> None:
    """The worker's side of a streamed utterance (docs/topics.md §2.12), spoken to as an edge
    would: a start is claimed in this hub's name; a batch out of order, or of a stream it
    does not hold, is refused (the edge then sends the utterance whole)."""
    hub, _, recorder = spoken_system
    topics, device, worker = hub.topics, "stream_probe", hub.settings.hub_id
    start = UtteranceStart(
        device_id=device, message_id="m-1", sample_rate=16000, frame_duration_ms=60
    )
    await recorder.publish(topics.utterance_start(device), start.to_wire())
    claim = await recorder.expect(topics.utterance_claim(device))
    assert (claim["state"], claim["worker_id"]) == ("claimed", worker)
    packets = opus.encode(bytes(16000), sample_rate=16000, frame_duration_ms=60)
    for message_id, seq in (("m-1", 1), ("m-unknown", 0)):
        mark = recorder.mark()
        chunk = UtteranceChunk.from_opus(
            packets, sample_rate=16000, frame_duration_ms=60, device_id=device,
            message_id=message_id, seq=seq,
        )  # fmt: skip
        await recorder.publish(topics.utterance_stream(device, worker), chunk.to_wire())
        refusal = await recorder.expect(topics.utterance_claim(device), after=mark)
        assert (refusal["message_id"], refusal["state"]) == (message_id, "refused")
    counters = hub.stats()["counters"]
    assert (counters["utterance_streams_claimed"], counters["utterance_streams_refused"]) == (1, 2)


async def test_two_devices_speaking_at_once_each_get_their_own_answer(
    spoken_system: tuple[HubService, SimSettings, Recorder],
) -> None:
    hub, sim, _ = spoken_system
    devices = [
        WsDevice(
            make_identity(name=f"pair-{i}-{uuid.uuid4().hex[:6]}"),
            sim,
            mode=ListenMode.MANUAL,
            decode_audio=True,
        )
        for i in range(2)
    ]
    try:
        answers = await asyncio.gather(
            _speak(devices[0], "lock the front door"),
            _speak(devices[1], "what is the temperature in the office"),
        )
        assert answers == ["Locking the front door.", "The office is 21 degrees."]
        assert hub.states["lock.front_door"]["state"] == "locked"
    finally:
        for device in devices:
            await device.stop()


async def test_a_command_spoken_over_udp_is_executed_and_answered_in_encrypted_audio(
    mosquitto: ManagedMosquitto, start_edge: StartEdge, tmp_path: Path
) -> None:
    """Firmware on MQTT + UDP: setup from the hub's OTA endpoint gives the ``mqtt`` block,
    speech goes up as AES-128-CTR datagrams, the spoken answer comes down the same way."""
    tag = uuid.uuid4().hex[:8]
    base = f"u{tag}/xiaozhi"
    edge = await start_edge(base_topic=base, device_mqtt_port=0)
    assert edge.mqtt_udp is not None
    settings = _speaking_hub(mosquitto, tmp_path, tag, base).model_copy(
        update={
            "device_transport": "mqtt-udp",
            "device_approval": DeviceApproval.AUTO,
            "edge_mqtt_port": edge.mqtt_udp.mqtt_port,
        }
    )
    paho = PahoAsyncio()
    async with (
        record(mosquitto.url, f"{base}/#", name="spoken-udp") as recorder,
        run_hub(settings) as hub,
    ):
        sim = SimSettings(
            mqtt_url=mosquitto.url,
            base_topic=base,
            sim_ota_url=f"{hub.url}/xiaozhi/ota/",
            sim_ws_url="ws://127.0.0.1:9/xiaozhi/v1/",  # unused: the setup answer says
            sim_token="",
        )
        device = MqttUdpDevice(
            make_identity(name=f"spoken-udp-{uuid.uuid4().hex[:6]}"),
            sim,
            paho=paho,
            mode=ListenMode.MANUAL,
            record_path=tmp_path / "answer.wav",
            decode_audio=True,
        )
        try:
            answer = await _speak(device, "turn on the living room light")
            assert device.mqtt_setup is not None  # it came by MQTT + UDP, as set up
            assert answer == "Turning on the living room light."
            assert hub.service.states["light.living_room"]["state"] == "on"
            heard = await recorder.expect(
                hub.service.topics.voice_command_events(),
                lambda e: e["device_id"] == device.device_id,
            )
            assert heard["command"] == "turn on the living room light"
            assert heard["edge_id"] == edge.settings.edge_id
            assert _voiced(device)  # the answer's datagrams decrypted and decoded
            assert device.recorder is not None
            assert device.recorder.errors == 0
            counters = edge.mqtt_udp.stats()
            assert counters["datagrams_received"] > 30  # about 3 s of speech, 60 ms each
            assert counters["datagrams_sent"] > 0
            assert counters["datagrams_dropped"] == {}
        finally:
            await device.stop()
            await paho.close()
