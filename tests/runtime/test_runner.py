"""Signals mean the same for every long-running command: the first asks for a clean stop, a
second one exits at once, even while a worker thread is still busy (before, "second signal:
exiting now" was followed by a wait for every thread: 22 s for a recogniser sampling its
corpus under `xiaozhi up`)."""

from __future__ import annotations

import signal
import subprocess
import sys

_PROGRAM = """
import asyncio, sys, threading, time
from xiaozhi_runtime.runner import run_until_signal

async def main(stop):
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, time.sleep, 60)  # a worker thread busy for a minute
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    await asyncio.sleep(60)  # a clean stop that takes long
    return 0

sys.exit(run_until_signal(main, on_second_signal=lambda: print("second signal", flush=True)))
"""


def test_a_second_signal_exits_at_once_with_status_1() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _PROGRAM], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline() == "stopping\n"
        process.send_signal(signal.SIGINT)
        assert process.stdout.readline() == "second signal\n"
        # The worker thread sleeps 60 s: a process that waits for it is still alive at 20 s.
        assert process.wait(timeout=20) == 1
