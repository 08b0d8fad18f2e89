"""WebSocket devices against a protocol peer playing the edge (see edge_peer.py).

Covers the firmware fidelity checklist (reference 6.7) over a real socket: the four headers,
the hello, typed commands, TTS audio decoded and recorded, real Opus uplink at 60 ms, the v2
timestamp echo, MCP, both timeouts, reboot, setup-chosen versions and the WS faults.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import opuslib
import pytest

from tests.support import refused_port
from xiaozhi import __version__
from xiaozhi.messages import ListenMode
from xiaozhi.payloads import DeviceKind
from xiaozhi.wav import UPLINK_FORMAT, decode_wav, encode_wav
from xiaozhi_sim.device import ChannelError, Fault, FaultNotApplicable
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mic_and_speaker import tone
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.ws_device import WsDevice

from .edge_peer import DOWNLINK_TIMESTAMPS, EdgeProtocolPeer


def settings_for(peer: EdgeProtocolPeer, **extra: object) -> SimSettings:
    return SimSettings(
        sim_ota_url="",
        sim_ws_url=peer.url,
        sim_token="tok",
        sim_reconnect_delay_seconds=0.05,
        **extra,  # type: ignore[arg-type]
    )


def tts_stopped(device: WsDevice) -> bool:
    return any(
        r.payload.get("type") == "tts" and r.payload.get("state") == "stop" for r in device.inbox
    )


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_typed_command_tts_audio_and_speech_in_each_binary_version(
    version: int, tmp_path: Path, device_name: str
) -> None:
    async with EdgeProtocolPeer() as peer:
        identity = make_identity(name=device_name)
        device = WsDevice(
            identity,
            settings_for(peer),
            binary_version=version,
            record_path=tmp_path / "tts.wav",
        )
        try:
            await device.start()
            assert device.state is DeviceState.IDLE
            assert peer.connections == []  # lazy: no socket before a wake
            await device.say("turn on the living room light")
            conn = peer.last
            assert conn.headers["Protocol-Version"] == str(version)
            assert conn.headers["Device-Id"] == identity.mac
            assert conn.headers["Client-Id"] == identity.client_id
            assert conn.headers["Authorization"] == "Bearer tok"
            assert conn.texts[0]["type"] == "hello"
            assert conn.texts[0]["version"] == version
            assert conn.texts[0]["features"] == {"mcp": True}
            await peer.wait_for(lambda: len(conn.texts) >= 2)
            assert conn.texts[1] == {
                "session_id": "peer-session",
                "type": "listen",
                "state": "detect",
                "text": "turn on the living room light",
            }
            assert await device.wait_until(lambda: tts_stopped(device), 5)
            assert device.state is DeviceState.LISTENING  # auto mode
            assert device.model.last_response == "OK."
            assert device.audio_packets == 10
            assert device.stats.voice_latency
            fmt, pcm = decode_wav((tmp_path / "tts.wav").read_bytes())
            assert fmt.sample_rate == 16000
            assert len(pcm) == 10 * 960 * 2  # every downlink packet decoded

            wav = tmp_path / "mic.wav"
            wav.write_bytes(encode_wav(tone(0.3), UPLINK_FORMAT))
            assert await device.speak(wav) == 5
            await peer.wait_for(lambda: len(conn.frames) == 5)
            assert conn.texts[-1] == {
                "session_id": "peer-session",
                "type": "listen",
                "state": "start",
                "mode": "auto",
            }
            decoder = opuslib.Decoder(16000, 1)
            for frame in conn.frames:
                assert len(decoder.decode(frame.payload, 960)) == 960 * 2  # 60 ms of real Opus
            stamps = [f.timestamp_ms for f in conn.frames]
            if version == 2:
                # Each uplink frame echoes the last downlink packet played (reference 1.7).
                assert set(stamps) <= {0, *DOWNLINK_TIMESTAMPS}
                assert stamps == sorted(stamps)
                assert stamps[-1] > 0
            else:
                assert set(stamps) == {0}
        finally:
            await device.stop()
        await peer.wait_for(lambda: peer.last.closed_code is not None)
        assert peer.last.closed_code == 1000  # closed with a close frame, no goodbye
        assert [t["type"] for t in peer.last.texts].count("goodbye") == 0


async def test_the_setup_answer_chooses_url_token_and_version(device_name: str) -> None:
    async with EdgeProtocolPeer() as peer:

        def ota(request: httpx.Request) -> httpx.Response:
            assert (
                request.headers["User-Agent"]
                == f"bread-compact-wifi/1.8.2 xiaozhi-sim/{__version__}"
            )
            return httpx.Response(
                200, json={"websocket": {"url": peer.url, "token": "from-ota", "version": 3}}
            )

        settings = SimSettings(
            sim_ota_url="http://hub.test/xiaozhi/ota/", sim_ws_url="ws://127.0.0.1:9/nowhere/"
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(ota)) as http:
            device = WsDevice(make_identity(name=device_name), settings, http=http)
            try:
                await device.start()
                assert device.setup.source == "ota"
                await device.wake()
                assert peer.last.headers["Protocol-Version"] == "3"
                assert peer.last.headers["Authorization"] == "Bearer from-ota"
                assert device.connected
                assert device.stats.connected == 1
            finally:
                await device.stop()
        assert device.stats.connected == 0


async def test_mcp_over_the_channel(device_name: str) -> None:
    async with EdgeProtocolPeer() as peer:
        device = WsDevice(make_identity(name=device_name), settings_for(peer))
        try:
            await device.wake()
            conn = peer.last
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "self.audio_speaker.set_volume", "arguments": {"volume": 12}},
            }
            await peer.send({"session_id": "peer-session", "type": "mcp", "payload": call})
            await peer.wait_for(lambda: any(t.get("type") == "mcp" for t in conn.texts))
            reply = next(t for t in conn.texts if t.get("type") == "mcp")
            assert reply["payload"]["result"]["isError"] is False
            assert device.model.volume == 12
        finally:
            await device.stop()


async def test_no_server_hello_within_the_timeout_closes_the_channel(device_name: str) -> None:
    async with EdgeProtocolPeer(hello_reply=False) as peer:
        device = WsDevice(make_identity(name=device_name), settings_for(peer), hello_timeout=0.3)
        try:
            with pytest.raises(ChannelError, match=r"no server hello within 0\.3 s"):
                await device.say("hello?")
            assert device.state is DeviceState.IDLE
            assert device.stats.errors["hello_timeout"] == 1
            await peer.wait_for(lambda: peer.last.closed_code is not None)
        finally:
            await device.stop()


async def test_silence_closes_the_channel_and_the_next_wake_reopens_it(device_name: str) -> None:
    async with EdgeProtocolPeer() as peer:
        device = WsDevice(make_identity(name=device_name), settings_for(peer), silence_timeout=0.3)
        try:
            await device.wake()
            assert await device.wait_until(lambda: not device.connected, 5)
            assert any(r.payload.get("reason") == "silence" for r in device.inbox)
            assert device.state is DeviceState.IDLE
            await device.wake()
            assert len(peer.connections) == 2
        finally:
            await device.stop()


async def test_system_reboot_closes_reboots_and_boots_again(device_name: str) -> None:
    async with EdgeProtocolPeer() as peer:
        device = WsDevice(
            make_identity(name=device_name), settings_for(peer), mode=ListenMode.MANUAL
        )
        try:
            await device.wake()
            await peer.send({"type": "system", "command": "reboot"})
            assert await device.wait_until(lambda: device.model.reboots == 1, 5)
            assert await device.wait_until(lambda: device.state is DeviceState.IDLE, 5)
            assert not device.connected
        finally:
            await device.stop()


async def test_frame_faults_get_error_replies_and_handshake_faults_are_refused(
    device_name: str,
) -> None:
    async with EdgeProtocolPeer() as peer:
        device = WsDevice(make_identity(name=device_name), settings_for(peer), binary_version=2)
        try:
            for errors, fault in enumerate((Fault.MALFORMED, Fault.TRUNCATED), 1):
                await device.inject(fault)
                assert await device.wait_until(
                    lambda n=errors: (
                        sum(r.payload.get("type") == "error" for r in device.inbox) == n
                    ),
                    5,
                )
            assert device.connected  # bad input never closes the channel
            flood = await device.inject(Fault.FLOOD, count=50, kind="text")
            assert flood.sent == 50
            await peer.wait_for(lambda: len(peer.last.texts) >= 51)
            refused = await device.inject(Fault.BAD_TOKEN)
            assert (refused.refused, refused.detail) == (True, "handshake refused: HTTP 401")
            wrong = await device.inject(Fault.WRONG_VERSION)
            assert (wrong.refused, wrong.detail) == (True, "handshake refused: HTTP 400")
            await device.inject(Fault.FLOOD, count=20)
            await peer.wait_for(lambda: len(peer.last.frames) == 20)
            await device.inject(Fault.OVERSIZE)  # over websockets' 1 MiB: closed with 1009
            await peer.wait_for(lambda: peer.last.closed_code == 1009)
            assert await device.wait_until(lambda: not device.connected, 5)
            await device.inject(Fault.ABRUPT_DISCONNECT)
            await peer.wait_for(lambda: peer.last.closed_code == 1006)
            assert await device.wait_until(lambda: not device.connected, 5)
            faults = [r.payload["fault"] for r in device.inbox if r.kind == "fault"]
            assert faults == [
                "malformed",
                "truncated",
                "flood",
                "bad_token",
                "wrong_version",
                "flood",
                "oversize",
                "abrupt_disconnect",
            ]
        finally:
            await device.stop()


@pytest.mark.parametrize("version", [1, 3])
async def test_truncated_frames_per_version(version: int, device_name: str) -> None:
    async with EdgeProtocolPeer() as peer:
        device = WsDevice(
            make_identity(name=device_name), settings_for(peer), binary_version=version
        )
        try:
            result = await device.inject(Fault.TRUNCATED)
            assert result.detail
            await peer.wait_for(lambda: bool(peer.last.errors))
            assert device.connected
        finally:
            await device.stop()


async def test_the_seed_client_stays_connected_and_talks_in_envelopes(device_name: str) -> None:
    async with EdgeProtocolPeer() as peer:
        device = WsDevice(
            make_identity(name=device_name),
            settings_for(peer),
            flavour=DeviceKind.SEED,
            heartbeat_interval=0.1,
        )
        try:
            await device.start()
            assert await device.wait_connected(5)
            conn = peer.last
            await peer.wait_for(lambda: any(t.get("type") == "ping" for t in conn.texts))
            assert conn.texts[0]["type"] == "device_register"
            await device.say("turn on the light")
            await peer.wait_for(lambda: any(t.get("type") == "voice_command" for t in conn.texts))
            await peer.send({"type": "response", "data": {"text": "Done."}})
            assert await device.wait_until(lambda: device.model.last_response == "Done.", 5)
            with pytest.raises(FaultNotApplicable):
                await device.speak("x.wav")
            # The server goes away: the client reconnects with back-off.
            await conn.ws.close()
            await peer.wait_for(lambda: len(peer.connections) == 2)
            assert await device.wait_connected(5)
        finally:
            await device.stop()


async def test_an_unreachable_edge_is_a_channel_error(device_name: str) -> None:
    with refused_port() as port:
        settings = SimSettings(sim_ota_url="", sim_ws_url=f"ws://127.0.0.1:{port}/x/")
        device = WsDevice(make_identity(name=device_name), settings)
        try:
            with pytest.raises(ChannelError):
                await device.say("hello")
            assert device.state is DeviceState.IDLE
            assert device.stats.errors["connect"] == 1
            assert any(r.payload.get("type") == "connect_failed" for r in device.inbox)
        finally:
            await device.stop()
