"""The hub's speech unit through a real Mosquitto: utterances published as an edge does are
transcribed (here by a Wyoming service: our own offline engine served by
``WyomingSttServer``, the same protocol as Home Assistant's faster-whisper), turned into
voice commands, and answered out loud; bad utterances are refused and counted, and lose
nothing for the next one."""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.hub.conftest import WRITE_KEY
from tests.support import Recorder
from xiaozhi.payloads import AudioClip, UtterancePayload
from xiaozhi.wav import decode_wav
from xiaozhi_hub import spoken_answers
from xiaozhi_hub.home import load_home
from xiaozhi_hub.http import run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.settings import HubSettings, HubSettingsError, load_hub_settings
from xiaozhi_hub.spoken_answers import SpokenAnswers, encode_answer
from xiaozhi_runtime import opus
from xiaozhi_speech import (
    EspeakVoice,
    OfflineRecognizer,
    Speech,
    corpus_from_intents,
    resample,
)
from xiaozhi_speech.wyoming import WyomingSttServer

pytestmark = pytest.mark.integration  # a real Mosquitto


@pytest.fixture
async def wyoming_stt() -> AsyncIterator[str]:
    """Our offline engine, loaded with the demo home's sentences, as a Wyoming service."""
    engine = IntentEngine(load_home())
    recognizer = OfflineRecognizer()

    await recognizer.load(corpus_from_intents(engine.intents, engine.slot_lists))
    server = WyomingSttServer(recognizer, "127.0.0.1", 0)
    port = await server.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        await server.stop()
        await recognizer.aclose()


async def _said(text: str) -> bytes:
    speech = await EspeakVoice().synthesize(text)
    return resample(speech.pcm, speech.sample_rate, 16000)


async def test_utterances_become_voice_commands_and_bad_ones_are_refused(
    hub_settings: HubSettings, watcher: Recorder, wyoming_stt: str, tmp_path: Path
) -> None:
    settings = hub_settings.model_copy(
        update={"stt_engine": "wyoming", "stt_url": wyoming_stt, "tts_engine": "espeak"}
    )
    async with run_hub(settings) as running:
        hub = running.service
        topics = hub.topics
        device = "demo_living_room"
        pcm = await _said("turn on the living room light")
        good = UtterancePayload.from_opus(
            opus.encode(pcm, sample_rate=16000, frame_duration_ms=60),
            sample_rate=16000,
            frame_duration_ms=60,
            device_id=device,
            message_id="utt-1",
        )
        corrupt = good.model_copy(
            update={"message_id": "utt-bad", "frames": [base64.b64encode(b"\xff" * 40).decode()]}
        )
        forged = good.model_copy(update={"device_id": "demo_kitchen", "message_id": "utt-f"})
        await watcher.publish(topics.utterance(device), b"{not json")
        await watcher.publish(topics.utterance(device), forged.to_wire())  # not the topic's
        await watcher.publish(topics.utterance(device), corrupt.to_wire())
        await watcher.publish(topics.utterance(device), good.to_wire())
        await watcher.publish(topics.utterance(device), good.to_wire())  # QoS 1 redelivery

        heard = await watcher.expect(
            topics.voice_command_events(), lambda e: e["message_id"] == "utt-1", within=30
        )
        assert heard["device_id"] == device
        assert heard["command"] == "turn on the living room light"
        assert heard["processing_time_ms"] >= 0
        assert 1000 < heard["audio_duration_ms"] < 4000
        answer = await watcher.expect(
            topics.command(device),
            lambda m: m["command"] == "respond" and m["message_id"] == "utt-1",
            within=30,
        )
        assert answer["parameters"]["text"] == "Turning on the living room light."
        audio = answer["parameters"]["audio"]
        spoken = opus.decode(
            [base64.b64decode(f) for f in audio["frames"]], sample_rate=audio["sample_rate"]
        )
        assert len(spoken) > 16000  # over half a second of speech at 16 kHz
        assert hub.states["light.living_room"]["state"] == "on"

        # a PCM utterance (a seed device's WAV) is heard the same way
        seed = UtterancePayload.from_pcm(pcm, sample_rate=16000, device_id=device, message_id="u2")
        await watcher.publish(topics.utterance(device), seed.to_wire())
        await watcher.expect(
            topics.voice_command_events(),
            lambda e: e["message_id"] == "u2" and e["command"] == "turn on the living room light",
            within=30,
        )
        text = hub.metrics.exposition().decode()
        assert 'xiaozhi_hub_utterances_total{outcome="invalid"} 3.0' in text
        assert 'xiaozhi_hub_utterances_total{outcome="duplicate"} 1.0' in text
        assert 'xiaozhi_hub_utterances_total{outcome="transcribed"} 2.0' in text
        commands = [
            e for e in watcher.json(topics.voice_command_events()) if e["message_id"] == "utt-1"
        ]
        assert len(commands) == 1

        # the dashboard's play button: what the recogniser heard, as a WAV file
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            headers = {"X-API-Key": WRITE_KEY}
            wav = await http.get("/api/v1/utterances/utt-1/audio", headers=headers)
            assert wav.headers["content-type"] == "audio/wav"
            fmt, heard_pcm = decode_wav(wav.content)
            assert (fmt.sample_rate, fmt.channels, fmt.bits_per_sample) == (16000, 1, 16)
            frames = -(-len(pcm) // (960 * 2))  # whole 60 ms Opus frames
            assert len(heard_pcm) == frames * 960 * 2
            _, seed_pcm = decode_wav(
                (await http.get("/api/v1/utterances/u2/audio", headers=headers)).content
            )
            assert seed_pcm == pcm  # a PCM utterance, as sent
            missing = await http.get("/api/v1/utterances/utt-bad/audio", headers=headers)
            assert missing.status_code == 404  # refused: nothing kept
            assert (await http.get("/api/v1/utterances/utt-1/audio")).status_code == 401
            kept = (await http.get("/api/v1/utterances", headers=headers)).json()["data"]
            assert kept == ["utt-1", "u2"]  # what the page offers to play, and only those


def test_remote_engines_need_their_address(tmp_path: Path) -> None:
    with pytest.raises(HubSettingsError, match="XIAOZHI_STT_URL"):
        load_hub_settings(state_dir=tmp_path, stt_engine="wyoming")
    with pytest.raises(HubSettingsError, match="XIAOZHI_TTS_URL"):
        load_hub_settings(state_dir=tmp_path, tts_engine="wyoming")
    with pytest.raises(HubSettingsError, match="tcp://host:port"):
        load_hub_settings(state_dir=tmp_path, stt_engine="wyoming", stt_url="http://x:1")


async def test_a_failing_voice_costs_the_audio_not_the_answer() -> None:
    answers = SpokenAnswers(EspeakVoice(timeout_s=1e-6))  # killed before it speaks
    assert await answers.clip("Turning on the light.") is None
    assert answers.failures == 1
    working = SpokenAnswers(EspeakVoice())
    clip = await working.clip("Turning on the light.")
    assert clip is not None
    assert clip.sample_rate == 16000
    assert clip.frame_duration_ms == 60
    assert await working.clip("Turning on the light.") is clip  # cached
    assert await working.clip("   ") is None


async def test_a_new_clip_is_encoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding an answer costs 20-50 ms of CPU: never on the loop's thread."""
    threads: list[int] = []

    def recording(speech: Speech) -> AudioClip:
        threads.append(threading.get_ident())
        return encode_answer(speech)

    monkeypatch.setattr(spoken_answers, "encode_answer", recording)
    answers = SpokenAnswers(EspeakVoice())
    assert await answers.clip("The kitchen light is off.") is not None
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()
