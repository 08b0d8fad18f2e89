"""The offline recogniser's decoding workers live no longer than the process that owns them.

A hub killed with SIGKILL (or by the OOM killer) cannot shut its pool down; before, its spawned
workers stayed behind, each holding a decoder's memory and waiting for work forever.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

_HOLDER = """
import asyncio, os
from xiaozhi_speech import OfflineRecognizer

async def main():
    recognizer = OfflineRecognizer()
    await recognizer.load(["turn on the light", "turn off the light"])
    print(" ".join(os.listdir(f"/proc/{os.getpid()}/task")), flush=True)
    await asyncio.Event().wait()

if __name__ == "__main__":
    asyncio.run(main())
"""


def _children(pid: int, tasks: list[str]) -> set[int]:
    return {
        int(child)
        for task in tasks
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    }


def test_speech_workers_die_with_their_owner_killed_with_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER, encoding="utf-8")
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        workers = _children(holder.pid, holder.stdout.readline().split())  # after the load
        assert workers, "the recogniser spawned no worker"
        holder.kill()
        holder.wait(10)
    deadline = time.monotonic() + 10
    while (alive := {pid for pid in workers if Path(f"/proc/{pid}").exists()}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)  # polling the process table: there is nothing to wait on
    assert not alive, f"speech workers {sorted(alive)} outlived their owner"
