"""``xiaozhi speech`` as a user runs it: a process serving the home's recogniser over Wyoming,
used by a Wyoming client as Home Assistant would, stopped by Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import LineReader
from xiaozhi_speech import EspeakVoice, WyomingSpeechToText

XIAOZHI = str(Path(sys.executable).with_name("xiaozhi"))


async def _transcribe(port: int, text: str) -> tuple[bool, str]:
    speech = await EspeakVoice().synthesize(text)
    client = WyomingSpeechToText("127.0.0.1", port, "en-US")
    try:
        heard = await client.transcribe(speech.pcm, speech.sample_rate)
    finally:
        await client.aclose()
    return heard.accepted, heard.text


def test_the_speech_service_transcribes_for_a_wyoming_client(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [XIAOZHI, "speech", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    out = LineReader(process)
    try:
        line = out.wait_for("Wyoming STT", timeout=60)
        found = re.search(r"tcp://127\.0\.0\.1:(\d+) \(Wyoming STT, en-US, (\d+) sentences", line)
        assert found, line
        port = int(found.group(1))
        light = "turn on the living room light"
        assert asyncio.run(_transcribe(port, light)) == (True, light)
        accepted, _ = asyncio.run(_transcribe(port, "tell me a joke about penguins"))
        assert not accepted
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert out.wait_for("stopped", timeout=5)
    assert not [line for line in out.lines if "Traceback" in line]
