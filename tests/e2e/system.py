"""The whole system as a newcomer runs it: `xiaozhi up` and `mosquitto_sub` as real processes.

Everything here waits for what it expects (a line, a message) with a timeout; nothing sleeps.
The waits block, so an async test calls them through `asyncio.to_thread` while simulated
devices live on its event loop.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.support import LineReader, pid_alive
from xiaozhi_sim import (
    DeviceSpec,
    MqttDevice,
    PahoAsyncio,
    SimSettings,
    SimStats,
    WsDevice,
    build_device,
)

XIAOZHI = shutil.which("xiaozhi") or str(Path(sys.executable).with_name("xiaozhi"))
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "mosquitto_sub"

START_SECONDS = 30.0  # `up` to `ready` (a few seconds; generous for a loaded machine)
STOP_SECONDS = 20.0  # Ctrl-C to exit (stops devices, hub, edge, broker in turn)

T = TypeVar("T")


class Transcript(LineReader):
    """A LineReader that can wait for a condition over *all* the lines read so far.

    `wait_for` consumes lines up to its match, so waiting for two lines that may arrive in
    either order would miss one; `until` keeps every line and re-checks the condition.
    """

    def until(self, check: Callable[[], T], timeout: float, what: str) -> T:
        """Read lines until `check()` is truthy and return it; fail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not (result := check()):
            left = deadline - time.monotonic()
            if left <= 0:
                tail = "\n".join(self.lines[-40:])
                raise AssertionError(f"{what}: not within {timeout} s; last lines:\n{tail}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                tail = "\n".join(self.lines[-40:])
                raise AssertionError(f"{what}: the process ended first; last lines:\n{tail}")
            self.lines.append(line)
        return result

    def line_starting(self, prefix: str, timeout: float) -> str:
        """The first line that starts with `prefix` (`wait_for` also matches inside log lines:
        "ready" is in structlog's `discovery_ready` line)."""
        return self.until(
            lambda: next((line for line in self.lines if line.startswith(prefix)), None),
            timeout,
            f"a line starting with {prefix!r}",
        )


@dataclass(frozen=True, slots=True)
class Message:
    """One `mosquitto_sub -v` line: the topic, then the payload (JSON when it parses)."""

    index: int
    topic: str
    payload: Any


def matches(payload: Any, expected: Any) -> bool:
    """`expected` is a subset of `payload` (mappings compared recursively)."""
    if isinstance(expected, dict):
        return isinstance(payload, dict) and all(
            key in payload and matches(payload[key], value) for key, value in expected.items()
        )
    return bool(payload == expected)


class MqttLog(Transcript):
    """The output of `mosquitto_sub -v`, parsed line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(process)
        self._parsed: list[Message] = []

    @property
    def messages(self) -> list[Message]:
        for line in self.lines[len(self._parsed) :]:
            topic, _, raw = line.partition(" ")
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw
            self._parsed.append(Message(len(self._parsed), topic, payload))
        return self._parsed

    def find(self, topic: str, expected: dict[str, Any], after: int = -1) -> list[Message]:
        """Messages on `topic` (a `+` matches one level) whose payload contains `expected`."""
        pattern = re.compile("^" + re.escape(topic).replace(r"\+", "[^/]+") + "$")
        return [
            m
            for m in self.messages
            if m.index > after and pattern.match(m.topic) and matches(m.payload, expected)
        ]

    def wait(
        self, topic: str, expected: dict[str, Any], *, after: int = -1, timeout: float = 10.0
    ) -> Message:
        """The first message on `topic` containing `expected`; fail after `timeout` s."""
        found = self.until(
            lambda: self.find(topic, expected, after), timeout, f"{topic} {expected}"
        )
        return found[0]


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[19]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _session_id(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[-1].split()[3])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of `pid` (children, their children...), with its start time."""
    found: dict[int, str] = {}
    parents = [pid]
    while parents:
        parent = parents.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids = [int(p) for p in children.read_text(encoding="ascii").split()]
            except OSError:
                continue  # the task ended meanwhile
            for child in pids:
                if child not in found and (start := _start_time(child)) is not None:
                    found[child] = start
                    parents.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[str]:
    """Those of `processes` that are still alive (same pid, same start time), described."""
    left = []
    for pid, start in processes.items():
        if pid_alive(pid) and _start_time(pid) == start:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                cmdline = b"?"
            left.append(f"{pid} {cmdline.decode(errors='replace').strip()}")
    return left


def in_session(sid: int) -> list[int]:
    """Live processes of session `sid` (`up` leads its own): orphans re-parented to init too."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if _session_id(pid) == sid and pid_alive(pid)]


@dataclass
class UpProcess:
    """A running `xiaozhi up`, its terminal output and what it printed at start: the ports
    (it was asked for port 0 everywhere) and the broker's pid."""

    process: subprocess.Popen[str]
    out: Transcript
    broker_port: int = 0
    edge_port: int = 0
    hub_port: int = 0
    broker_pid: int = 0
    started: list[str] = field(default_factory=list)

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.broker_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.edge_port}/xiaozhi/v1/"

    @property
    def ota_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}/xiaozhi/ota/"

    def voice_lines(self) -> list[str]:
        return [line for line in self.out.lines if line.startswith("voice ")]

    def ctrl_c(self) -> list[str]:
        """Ctrl-C at the terminal, and check that nothing `up` started outlives it.

        As a terminal does, SIGINT goes to `up`'s whole process group (`up` leads its own
        session here). Returns every line `up` printed.
        """
        children = descendants(self.process.pid)
        assert self.broker_pid in children, f"the broker is not a child of `up`: {children}"
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=STOP_SECONDS)
        lines = self.out.rest(timeout=STOP_SECONDS)
        assert code == 0, f"`up` exited with {code}; output:\n" + "\n".join(lines[-40:])
        assert lines[-1] == "stopped", lines[-40:]
        assert "stopping" in lines
        assert not pid_alive(self.broker_pid), "the managed broker outlived `xiaozhi up`"
        assert not still_running(children), f"children of `up` left: {still_running(children)}"
        assert not in_session(self.process.pid), (
            f"left in up's session: {in_session(self.process.pid)}"
        )
        return lines

    def kill(self) -> None:
        """Teardown after a failure: nothing may be left for the next test."""
        if self.process.poll() is None:
            children = descendants(self.process.pid)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            for pid in children:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def up_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no inherited XIAOZHI_*), port 0 everywhere: `up` binds free ports
    and prints them, and the test reads them there (a port picked here could be taken)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env.update(
        XIAOZHI_STATE_DIR=str(state_dir),
        XIAOZHI_BROKER_PORT="0",
        XIAOZHI_EDGE_PORT="0",
        XIAOZHI_HUB_PORT="0",
        XIAOZHI_EDGE_HOST="127.0.0.1",
        XIAOZHI_HUB_HOST="127.0.0.1",
        # These tests type their commands: building the offline recogniser (10-14 s of CPU)
        # would only slow the suite. Speech end to end: tests/e2e/test_spoken_commands.py.
        XIAOZHI_STT_ENGINE="none",
    )
    env.update(extra)
    return env


def _port_in(line: str, url_prefix: str) -> int:
    """The port of the first URL starting with `url_prefix` in `line`."""
    found = re.search(re.escape(url_prefix) + r"(\d+)", line)
    assert found, f"no {url_prefix}PORT in {line!r}"
    return int(found.group(1))


def start_up(state_dir: Path, **settings: str) -> UpProcess:
    """Start `xiaozhi up` on free ports and return once it printed `ready`."""
    env = up_env(state_dir, **settings)
    process = subprocess.Popen(
        [XIAOZHI, "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the logs too: a failure shows them
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    up = UpProcess(process, Transcript(process))
    try:
        broker = up.out.line_starting("broker    ", START_SECONDS)
        assert " (managed mosquitto, pid " in broker, broker
        up.broker_port = _port_in(broker, "mqtt://127.0.0.1:")
        up.broker_pid = int(re.search(r"pid (\d+)", broker).group(1))  # type: ignore[union-attr]
        up.edge_port = _port_in(
            up.out.line_starting("edge      ", START_SECONDS), "ws://127.0.0.1:"
        )
        up.hub_port = _port_in(
            up.out.line_starting("hub       ", START_SECONDS), "http://127.0.0.1:"
        )
        up.out.line_starting("ready     ", START_SECONDS)
    except BaseException:
        up.kill()
        raise
    up.started = list(up.out.lines)
    return up


@dataclass
class Subscriber:
    """`mosquitto_sub -v` as an integrator runs it, its stdout read line by line."""

    process: subprocess.Popen[str]
    log: MqttLog

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def subscribe(port: int, *filters: str) -> Subscriber:
    """Start `mosquitto_sub -v -p PORT -t F...`; return once it is subscribed.

    Subscribed means: the hub's retained `bridge/state` arrived (a broker sends retained
    messages only after it granted the subscription), so later messages cannot be missed.
    """
    argv = [MOSQUITTO_SUB, "-v", "-p", str(port)]
    for topic in filters:
        argv += ["-t", topic]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    sub = Subscriber(process, MqttLog(process))
    try:
        sub.log.wait("xiaozhi/bridge/state", {"state": "online"}, timeout=START_SECONDS)
    except BaseException:
        sub.stop()
        raise
    return sub


def demo_speakers(up: UpProcess, paho: PahoAsyncio) -> tuple[WsDevice, MqttDevice]:
    """Two simulated devices with the demo home's ids (so each has an area): a firmware
    WebSocket device in the living room, which takes its URL and binary version from the
    hub's setup answer as real firmware does, and an MQTT device in the office, in the
    `all_speakers` group. Created, not started: the test decides when each comes up."""
    settings = SimSettings(
        mqtt_url=up.mqtt_url,
        base_topic="xiaozhi",
        sim_ws_url="ws://127.0.0.1:9/unused/",  # the setup answer must name the edge
        sim_ota_url=up.ota_url,
        sim_token="",
        sim_seed=0,
    )
    stats = SimStats()
    ws = build_device(
        DeviceSpec("ws", name="e2e-ws", device_id="demo_living_room"),
        settings,
        index=0,
        stats=stats,
        paho=paho,
        http=None,
    )
    mqtt = build_device(
        DeviceSpec("mqtt", name="e2e-mqtt", device_id="demo_office", groups=("all_speakers",)),
        settings,
        index=1,
        stats=stats,
        paho=paho,
        http=None,
    )
    assert isinstance(ws, WsDevice)
    assert isinstance(mqtt, MqttDevice)
    return ws, mqtt
