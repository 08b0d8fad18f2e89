"""The serial console through its pseudo-terminal, and ``xiaozhi sim device`` end to end."""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import signal
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path

import opuslib
import pytest

from tests.support import LineReader, record
from xiaozhi.topics import TopicTree
from xiaozhi.wav import UPLINK_FORMAT, decode_wav, encode_wav
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_sim.cli import _device_command, _run_device, add_sim_parser, main
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mic_and_speaker import tone
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

from .edge_peer import EdgeProtocolPeer

pytestmark = pytest.mark.integration
T = TopicTree()


def open_port(path: str) -> int:
    """Open the device's serial port as a terminal program would (raw, 8N1)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


async def read_lines(fd: int, count: int, within: float = 5.0) -> list[bytes]:
    """Wait for ``count`` CR LF-terminated reply lines on ``fd``."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    arrived = asyncio.Event()

    def readable() -> None:
        buffer.extend(os.read(fd, 4096))
        arrived.set()

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(within):
            while buffer.count(b"\r\n") < count:
                arrived.clear()
                await arrived.wait()
    finally:
        loop.remove_reader(fd)
    return bytes(buffer).split(b"\r\n")[:count]


async def test_the_serial_console_changes_the_device_and_its_status_reports_it(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    paho = PahoAsyncio()
    device = MqttDevice(make_identity(name=device_name), sim_settings, paho=paho)
    await device.start()
    assert await device.wait_connected(10)
    did = device.device_id
    path = device.open_serial()
    assert path.startswith("/dev/pts/")
    fd = open_port(path)
    try:
        async with record(mosquitto.url, T.status(did)) as obs:
            os.write(fd, b"$VOL,80#\r\n")
            assert await read_lines(fd, 1) == [b"$OK#"]
            await obs.first(lambda m: m.obj.get("volume") == 80)
            os.write(fd, b"$LED,ON,200#$STA?#")
            replies = await read_lines(fd, 2)
            assert replies == [b"$OK#", b"$OK,STATE=IDLE,LED=ON,BRI=200,VOL=80,UP=0#"]
            await obs.first(lambda m: m.obj.get("light") == "on")
            os.write(fd, b"$RST#")
            assert await read_lines(fd, 1) == [b"$OK#"]
            await obs.first(lambda m: m.obj.get("status") == "disconnected")
            assert await device.wait_until(lambda: device.stats.connects == 2, 10)
        assert device.model.reboots == 1
        assert device.model.volume == 80  # kept in NVS across the reset
        assert not device.model.light_on
    finally:
        os.close(fd)
        await device.stop()
        await paho.close()


@pytest.fixture
def status_watcher(
    mosquitto: ManagedMosquitto,
) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    """``mosquitto_sub`` on every status topic: the integrator's own tool as the observer."""
    process = subprocess.Popen(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-t", T.all_status(), "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process, LineReader(process)
    process.kill()
    process.wait()


def test_sim_device_serves_its_serial_console_and_dies_with_a_last_will(
    mosquitto: ManagedMosquitto,
    status_watcher: tuple[subprocess.Popen[str], LineReader],
    device_name: str,
) -> None:
    _, statuses = status_watcher
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env["XIAOZHI_MQTT_URL"] = mosquitto.url
    process = subprocess.Popen(
        [sys.executable, "-m", "xiaozhi_sim", "device", "--transport", "mqtt", "--serial",
         "--name", device_name, "--no-stdin"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out = LineReader(process)
        device_id = out.wait_for("device ").split()[1]
        path = out.wait_for("serial ").split()[1]
        out.wait_for("ready")
        statuses.wait_for(f"status/{device_id} " + '{"status":"connected"')
        fd = open_port(path)
        try:
            os.set_blocking(fd, True)
            os.write(fd, b"$VOL,80#\r\n")
            assert os.read(fd, 64) == b"$OK#\r\n"
        finally:
            os.close(fd)
        statuses.wait_for('"volume":80')
        process.send_signal(signal.SIGKILL)  # a power cut: no DISCONNECT, the broker speaks
        process.wait(10)
        will = statuses.wait_for(f"status/{device_id} ")
        assert will.endswith(
            '{"status":"disconnected","device_id":"' + device_id + '","simulated":true}'
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    retained = subprocess.run(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-t", T.status(device_id), "-C", "1",
         "-W", "10"],
        check=True, capture_output=True, text=True, timeout=15,
    )  # fmt: skip
    assert '"status":"disconnected"' in retained.stdout


def test_sim_device_cli_talks_and_stops(
    mosquitto: ManagedMosquitto, device_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["device", "--transport", "mqtt", "--mqtt-url", mosquitto.url, "--name", device_name,
         "--say", "hello", "--say-every", "0.05", "--say-every-text", "again",
         "--duration", "0.2", "--no-stdin", "--group", "den"],
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "said      'hello'" in out
    assert "said      'again'" in out
    assert out.rstrip().endswith("stopped")


def device_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_parser(parser.add_subparsers())
    return parser.parse_args(["sim", "device", *argv])


async def test_sim_device_ws_wakes_speaks_records_and_answers_commands(
    tmp_path: Path, device_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "mic.wav"
    wav.write_bytes(encode_wav(tone(0.12), UPLINK_FORMAT))
    async with EdgeProtocolPeer() as peer:
        settings = SimSettings(sim_ota_url="", sim_ws_url=peer.url)
        args = device_args(
            "--name", device_name, "--wake", "--type", "turn on the light", "--speak", str(wav),
            "--record-tts", str(tmp_path / "tts.wav"), "--duration", "0", "--no-stdin",
        )  # fmt: skip
        assert await _run_device(args, settings, asyncio.Event()) == 0
        assert len(peer.last.frames) == 2
    out = capsys.readouterr().out
    assert "setup     settings:" in out
    assert "channel   open (session peer-session)" in out
    assert "received  stt turn on the light" in out
    assert f"spoke     {wav} (2 frames)" in out
    fmt, pcm = decode_wav((tmp_path / "tts.wav").read_bytes())
    assert fmt.sample_rate == 16000
    assert pcm


async def test_say_speaks_synthesized_opus_as_firmware_does(
    device_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with EdgeProtocolPeer() as peer:
        settings = SimSettings(sim_ota_url="", sim_ws_url=peer.url)
        device = WsDevice(make_identity(name=device_name), settings)
        try:
            await device.start()
            assert await _device_command(device, "say lock the door", "flite:kal")
        finally:
            await device.stop()
        frames = peer.last.frames
        starts = [t for t in peer.last.texts if t.get("type") == "listen"]
    out = capsys.readouterr().out
    assert "said      'lock the door' aloud" in out
    assert "flite:kal" in out
    assert starts[0]["state"] == "start"
    # lead-in, about a second of voice, the trailing silence: real Opus, 60 ms each
    assert len(frames) > (300 + 500 + 1200) // 60
    decoder = opuslib.Decoder(16000, 1)
    pcm = b"".join(decoder.decode(f.payload, 960) for f in frames)
    assert max(array.array("h", pcm)) > 2000  # a voice, not silence


async def test_interactive_commands(device_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with EdgeProtocolPeer() as peer:
        settings = SimSettings(sim_ota_url="", sim_ws_url=peer.url)
        device = WsDevice(make_identity(name=device_name), settings)
        try:
            await device.start()
            assert await _device_command(device, "wake")
            assert await _device_command(device, 'type "hello there"')
            assert await _device_command(device, "status")
            assert await _device_command(device, "speak /nonexistent.wav")
            assert await _device_command(device, "dance")
            assert await _device_command(device, 'say "unterminated')
            assert await _device_command(device, "")
            assert not await _device_command(device, "quit")
        finally:
            await device.stop()
    out = capsys.readouterr().out
    assert "channel   open" in out
    assert "typed     'hello there'" in out
    assert "status    {'STATE':" in out
    assert "error     " in out
    assert "commands  say TEXT" in out
