"""The hub's live audio for the dashboard (``/api/v1/devices/{id}/listen``) against a real
Mosquitto, with the test playing the edge's part on the monitor topics (docs/topics.md §2.14);
tests/hub/test_dashboard_browser.py hears a real device through a real edge. And the bounds
of the utterances' audio kept for the play buttons."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.edge.helpers import tone_packets
from tests.hub.conftest import READ_KEY
from tests.support import Recorder
from xiaozhi import __version__
from xiaozhi.audio_monitor import AudioPacket, decode_audio_packet, encode_audio_packet
from xiaozhi.wav import decode_wav
from xiaozhi_hub.http import run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.monitor import STATE_FIELDS
from xiaozhi_hub.settings import HubSettings
from xiaozhi_hub.utterance_audio import UtteranceAudio
from xiaozhi_runtime import opus

DEVICE = "demo_kitchen"


@pytest.mark.integration
async def test_a_page_listens_through_the_hubs_want_and_the_want_goes_with_it(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    topics = hub_settings.topics
    want = topics.monitor_listeners(DEVICE, hub_settings.hub_id)
    stale = topics.monitor_listeners("demo_office", hub_settings.hub_id)
    state = topics.hub_state(hub_settings.hub_id)  # the wants' connection's birth and will
    # a want left by this hub's last run (killed): the hub clears it when it starts
    await watcher.publish(stale, {"edge_id": hub_settings.hub_id}, retain=True)
    async with run_hub(hub_settings, home=engine.home, engine=engine) as running:
        await watcher.wait_for(lambda: watcher.payloads(stale)[-1:] == [b""])
        url = running.url.replace("http", "ws", 1) + f"/api/v1/devices/{DEVICE}/listen"

        async with websockets.connect(url) as refused:
            await refused.send(json.dumps({"api_key": "wrong"}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(refused.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert watcher.payloads(want) == []  # nobody listened: no want

        async with websockets.connect(url) as page:
            await page.send(json.dumps({"api_key": READ_KEY}))  # as a browser does
            attached = json.loads(await asyncio.wait_for(page.recv(), 10))
            assert attached == {"type": "monitor", "device_id": DEVICE, "format": "opus"}
            await watcher.expect(want, lambda w: w == {"edge_id": hub_settings.hub_id})
            # online before the want, on the same connection: an edge never takes it for a
            # want left by a dead hub
            assert json.loads(watcher.payloads(state)[-1])["state"] == "online"
            # the edge holding the device publishes its frames while the want is there;
            # the hub's subscription may still be on its way: send until one comes back
            frame = encode_audio_packet(AudioPacket(123456, 60, 77, b"\xf8opus"))
            packet = None
            for _ in range(50):
                await watcher.publish(topics.monitor_audio(DEVICE), frame, qos=0)
                try:
                    packet = decode_audio_packet(await asyncio.wait_for(page.recv(), 0.2))
                    break
                except TimeoutError:
                    continue
            assert packet is not None
            assert (packet.sequence, packet.duration_ms, packet.opus) == (0, 60, b"\xf8opus")
            assert running.service.stats()["monitor"] == {"devices": 1, "listeners": 1}
        # the page left: the want is cleared, so the edge stops publishing
        await watcher.wait_for(lambda: watcher.payloads(want)[-1:] == [b""])
        assert running.service.monitor.listeners == {}
    # a clean stop says offline itself (a killed hub's will says it: edges drop its wants)
    await watcher.expect(state, lambda s: s["state"] == "offline")


@pytest.mark.integration
async def test_the_hubs_state_carries_who_it_is_and_its_figures_for_every_replica(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    """``bridge/hubs/{id}/state``: version and start time in the birth, the will and the clean
    stop; while online, the figures, re-published (retained) only when they changed."""
    topics = hub_settings.topics
    state = topics.hub_state(hub_settings.hub_id)
    async with run_hub(hub_settings, home=engine.home, engine=engine) as running:
        born = await watcher.expect(state, lambda s: s["state"] == "online")
        assert born["hub_id"] == hub_settings.hub_id
        assert born["version"] == __version__
        assert born["started_at"] <= born["timestamp"]
        known = born["devices"]["known"]
        assert born["devices"] == {"known": known, "connected": 0}
        assert (born["stream_sessions"], born["mqtt_connects"]) == (0, 1)
        monitor = running.service.monitor
        assert not monitor.refresh_state()  # nothing changed: nothing published
        status = {"status": "connected", "device_id": "figures1"}
        await watcher.publish(topics.status("figures1"), status)
        await watcher.wait_for(lambda: running.service.registry.device("figures1") is not None)
        assert monitor.refresh_state()
        now = await watcher.expect(state, lambda s: s["devices"]["known"] == known + 1)
        assert now["devices"]["connected"] == 1
        assert now["started_at"] == born["started_at"]
        assert set(now) == {"state", "hub_id", "version", "started_at", "timestamp", *STATE_FIELDS}
        size = len(watcher.payloads(state)[-1])
        print(f"the state with its figures: {size} B")
        assert size < 300  # cheap: a few figures
    gone = await watcher.expect(state, lambda s: s["state"] == "offline")
    assert (gone["version"], gone["started_at"]) == (__version__, born["started_at"])
    assert "devices" not in gone  # figures of a hub that is gone would be stale


@pytest.mark.integration
async def test_a_page_that_cannot_decode_opus_gets_the_hubs_pcm_of_the_devices_frames(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    """``?format=pcm`` (the dashboard on a plain-http LAN address): each frame is the
    device's real Opus packet decoded by the hub's one decoder for this listener."""
    topics = hub_settings.topics
    marker = tone_packets(20, frame_ms=20)[0]  # sent until the hub hears: 20 ms, told apart
    speech = tone_packets(600)  # 10 frames of 60 ms

    def published(opus_packet: bytes, duration_ms: int) -> bytes:
        return encode_audio_packet(AudioPacket(0, duration_ms, 0, opus_packet))

    async with run_hub(hub_settings, home=engine.home, engine=engine) as running:
        url = running.url.replace("http", "ws", 1) + f"/api/v1/devices/{DEVICE}/listen"
        async with websockets.connect(url + "?format=wav") as refused:
            await refused.send(json.dumps({"api_key": READ_KEY}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(refused.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert "expected opus or pcm" in closed.value.rcvd.reason

        async with websockets.connect(url + "?format=pcm") as page:
            await page.send(json.dumps({"api_key": READ_KEY}))
            hello = json.loads(await asyncio.wait_for(page.recv(), 10))
            assert hello == {
                "type": "monitor",
                "device_id": DEVICE,
                "format": "pcm",
                "sample_rate": 16000,
            }
            # the hub's subscription may still be on its way: the marker until one comes back
            received: list[AudioPacket] = []
            while not received:
                await watcher.publish(topics.monitor_audio(DEVICE), published(marker, 20), qos=0)
                with contextlib.suppress(TimeoutError):
                    received.append(decode_audio_packet(await asyncio.wait_for(page.recv(), 0.2)))
            for frame in speech:
                await watcher.publish(topics.monitor_audio(DEVICE), published(frame, 60), qos=0)
            while sum(p.duration_ms == 60 for p in received) < len(speech):
                received.append(decode_audio_packet(await asyncio.wait_for(page.recv(), 10)))
        # the same decoding, from a fresh decoder, of the frames the hub heard (markers that
        # were on their way still arrived before the speech)
        markers = sum(p.duration_ms == 20 for p in received)
        reference = opus.Decoder(16000)
        expected = [reference.decode(marker) for _ in range(markers)]
        expected += [reference.decode(frame) for frame in speech]
        assert [p.opus for p in received] == expected
        assert [p.sequence for p in received] == list(range(len(received)))
        assert {len(pcm) for pcm in expected[markers:]} == {960 * 2}  # 60 ms at 16 kHz
        assert max(abs(s) for s in memoryview(expected[-1]).cast("h")) > 1000  # a tone


def test_utterance_audio_keeps_the_last_ones_within_its_bounds() -> None:
    kept = UtteranceAudio(max_utterances=2, max_bytes=10)
    kept.keep("a", b"\x01\x00" * 2, 16000)
    kept.keep("b", b"\x02\x00" * 2, 16000)
    kept.keep("c", b"\x03\x00" * 2, 16000)  # over the count: "a" goes
    assert (kept.wav("a"), len(kept), kept.bytes) == (None, 2, 8)
    kept.keep("d", b"\x04\x00" * 2, 16000)  # 12 bytes over 10: "b" goes
    assert [m for m in "abcd" if kept.wav(m)] == ["c", "d"]
    kept.keep("e", b"\x05\x00" * 3, 8000)  # 6 + 4 + 4 > 10: the oldest go until it fits
    assert [m for m in "abcde" if kept.wav(m)] == ["d", "e"]
    wav = kept.wav("e")
    assert wav is not None
    fmt, pcm = decode_wav(wav)
    assert (fmt.sample_rate, pcm) == (8000, b"\x05\x00" * 3)
    kept.keep("huge", b"\x00" * 12, 16000)  # alone over the bound: not kept, nothing lost
    assert (kept.wav("huge"), len(kept)) == (None, 2)
