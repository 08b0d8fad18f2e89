"""``xiaozhi speech`` as a user runs it: a process serving the home's recogniser over Wyoming,
used by a Wyoming client as Home Assistant would, stopped by Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import LineReader
from xiaozhi_speech import EspeakVoice, WyomingSpeechToText, resample

XIAOZHI = str(Path(sys.executable).with_name("xiaozhi"))


async def test_the_speech_service_transcribes_for_a_wyoming_client(tmp_path: Path) -> None:
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
        speech = await EspeakVoice().synthesize("turn on the living room light")
        client = WyomingSpeechToText("127.0.0.1", port, "en-US")
        heard = await client.transcribe(resample(speech.pcm, speech.sample_rate, 16000), 16000)
        assert (heard.accepted, heard.text) == (True, "turn on the living room light")
        joke = await EspeakVoice().synthesize("tell me a joke about penguins")
        refused = await client.transcribe(joke.pcm, joke.sample_rate)
        assert not refused.accepted
        await client.aclose()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert out.wait_for("stopped", timeout=5)
    assert not [line for line in out.lines if "Traceback" in line]
