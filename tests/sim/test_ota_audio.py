"""The boot-time setup POST (reference section 3) and the Opus audio paths."""

from __future__ import annotations

import array
from pathlib import Path

import httpx
import pytest

from tests.support import refused_port
from xiaozhi import __version__, jsonutil
from xiaozhi.wav import UPLINK_FORMAT, WavFormat, decode_wav, encode_wav
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mic_and_speaker import (
    SAMPLES_PER_FRAME,
    AudioFormatError,
    MicrophoneEncoder,
    TtsRecorder,
    load_microphone_wav,
    tone,
)
from xiaozhi_sim.ota import SetupResult, fetch_setup, ota_request, parse_ota_response

FALLBACK = SetupResult("ws://fallback/xiaozhi/v1/", "settings-token", 1)


def test_the_setup_request_has_the_firmware_headers_and_body() -> None:
    identity = make_identity(name="ota")
    headers, body = ota_request(identity)
    assert headers == {
        "Activation-Version": "1",
        "Device-Id": identity.mac,
        "Client-Id": identity.client_id,
        "User-Agent": f"bread-compact-wifi/1.8.2 xiaozhi-sim/{__version__}",
        "Accept-Language": "en-US",
        "Content-Type": "application/json",
    }
    info = jsonutil.loads_object(body)
    assert info["version"] == 2
    assert info["mac_address"] == identity.mac
    assert info["chip_model_name"] == "esp32s3"
    assert {"application", "partition_table", "ota", "board", "flash_size"} <= set(info)


@pytest.mark.parametrize(
    ("answer", "url", "token", "version", "error"),
    [
        (
            {"websocket": {"url": "ws://edge/x/", "token": "tok", "version": 3}},
            "ws://edge/x/",
            "tok",
            3,
            None,
        ),
        ({"websocket": {"version": "2"}}, FALLBACK.ws_url, "settings-token", 2, None),
        ({"websocket": {"version": 9}}, FALLBACK.ws_url, "settings-token", 1, "not 1, 2 or 3"),
        ({"server_time": {}}, FALLBACK.ws_url, "settings-token", 1, "no 'websocket'"),
        ({"mqtt": {"endpoint": "x"}}, FALLBACK.ws_url, "settings-token", 1, "MQTT+UDP"),
    ],
)
def test_the_answer_s_websocket_object_wins_over_the_settings(
    answer: dict[str, object], url: str, token: str, version: int, error: str | None
) -> None:
    result = parse_ota_response(jsonutil.dumps(answer), FALLBACK)
    assert (result.ws_url, result.token, result.version) == (url, token, version)
    assert result.source == "ota"
    if error is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert error in result.error


def test_a_bad_answer_falls_back() -> None:
    result = parse_ota_response(b"<html>", FALLBACK)
    assert result.source == "settings"
    assert result.error is not None


async def test_fetch_setup_posts_and_honours_the_answer() -> None:
    identity = make_identity(name="fetch")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = {
            "websocket": {"url": "ws://edge:8000/xiaozhi/v1/", "token": "t", "version": 2},
            "activation": {"code": "123456", "message": "say the code"},
        }
        return httpx.Response(200, json=answer)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await fetch_setup(client, "http://hub/xiaozhi/ota/", identity, FALLBACK)
    assert result.version == 2
    assert result.activation_code == "123456"
    (request,) = seen
    assert request.method == "POST"
    assert request.headers["Device-Id"] == identity.mac
    assert jsonutil.loads_object(request.content)["uuid"] == identity.client_id

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(500))
    ) as client:
        failed = await fetch_setup(client, "http://hub/xiaozhi/ota/", identity, FALLBACK)
    assert failed.source == "settings"
    assert "HTTP 500" in (failed.error or "")


async def test_an_unreachable_setup_endpoint_falls_back_to_the_settings() -> None:
    identity = make_identity(name="unreachable")
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}/xiaozhi/ota/"
        async with httpx.AsyncClient() as client:
            result = await fetch_setup(client, url, identity, FALLBACK)
            skipped = await fetch_setup(client, "", identity, FALLBACK)
    assert (result.ws_url, result.source) == (FALLBACK.ws_url, "settings")
    assert "unreachable" in (result.error or "")
    assert "no setup URL" in (skipped.error or "")


# -- audio -----------------------------------------------------------------------------------


def write_wav(path: Path, pcm: bytes, fmt: WavFormat) -> Path:
    path.write_bytes(encode_wav(pcm, fmt))
    return path


def test_microphone_wav_is_encoded_as_60_ms_opus_packets_and_decodes_back(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", tone(0.5), UPLINK_FORMAT)
    pcm = load_microphone_wav(wav)
    assert len(pcm) == 8000 * 2
    packets = list(MicrophoneEncoder().packets(pcm))
    assert len(packets) == 9  # 8000 samples / 960, the last one padded
    assert all(0 < len(p) < 400 for p in packets)
    recorder = TtsRecorder(16000)
    for packet in packets:
        recorder.add(packet)
    recorder.add(b"\xff\xff\xff")  # corrupt: counted, not raised
    assert recorder.packets == 9
    assert recorder.errors == 1
    assert recorder.seconds == pytest.approx(9 * SAMPLES_PER_FRAME / 16000)
    out = tmp_path / "tts.wav"
    recorder.write(out)
    fmt, decoded = decode_wav(out.read_bytes())
    assert (fmt.sample_rate, fmt.channels, len(decoded)) == (16000, 1, 9 * 960 * 2)
    assert TtsRecorder(22050).sample_rate == 24000  # seed 003's speaker rate -> next Opus rate


def test_microphone_wav_mixes_down_and_widens_samples(tmp_path: Path) -> None:
    stereo = array.array("h", [100, 300] * 10).tobytes()
    wav = write_wav(tmp_path / "s.wav", stereo, WavFormat(16000, 2, 16))
    assert array.array("h", load_microphone_wav(wav)).tolist() == [200] * 10
    eight = write_wav(tmp_path / "8.wav", bytes([128, 255, 0]), WavFormat(16000, 1, 8))
    assert array.array("h", load_microphone_wav(eight)).tolist() == [0, 127 << 8, -128 << 8]
    wide = array.array("i", [1 << 16, -(1 << 16)]).tobytes()
    thirty_two = write_wav(tmp_path / "32.wav", wide, WavFormat(16000, 1, 32))
    assert array.array("h", load_microphone_wav(thirty_two)).tolist() == [1, -1]
    twenty_four = write_wav(
        tmp_path / "24.wav", b"\x00\x01\x00\x00\xff\xff", WavFormat(16000, 1, 24)
    )
    assert array.array("h", load_microphone_wav(twenty_four)).tolist() == [1, -1]


def test_microphone_wav_refuses_other_rates_and_non_wav_with_a_fix(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "cd.wav", bytes(400), WavFormat(44100, 2, 16))
    with pytest.raises(AudioFormatError, match=r"44100 Hz.*sox cd\.wav -r 16000 -c 1 -b 16"):
        load_microphone_wav(wav)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"ID3 not a wav at all")
    with pytest.raises(AudioFormatError, match="not a PCM WAV"):
        load_microphone_wav(junk)
