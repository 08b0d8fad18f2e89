"""The processes a system benchmark runs, and what it reads from them.

Each server under test is its own process, so its memory (``VmRSS`` in ``/proc/<pid>/status``),
its file descriptors (``/proc/<pid>/fd``) and its CPU are its own: an edge is ``xiaozhi edge``,
a hub ``xiaozhi hub``, the reference server :mod:`xiaozhi_bench.bare_server`. Subscribers are
Mosquitto's own ``mosquitto_sub`` (C, one line per message, flushed, stamped with
``%U``: Unix time with nanoseconds), so counting and timing messages costs Python nothing.

Every child is started by an async context manager that stops it (SIGTERM, then SIGKILL) on
the way out, and Linux sends it SIGTERM if the benchmark itself dies (``setpriv --pdeathsig``).
Servers bind port 0 and print the port they got on a line of their output, which is read
from the log file: no port is picked here and handed on (another process could take it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from xiaozhi.errors import StartupError
from xiaozhi_cli.broker import ManagedMosquitto

__all__ = [
    "BenchProcessError",
    "Child",
    "Subscriber",
    "bare_server",
    "broker",
    "cpu_seconds",
    "edge",
    "fd_count",
    "http_json",
    "hub",
    "load_average",
    "nofile_limit",
    "raise_nofile",
    "rss_kib",
]

HOST = "127.0.0.1"
NOFILE_WANTED = 65_536


class BenchProcessError(StartupError):
    """A child did not start or answer; the message carries the end of its log."""


def raise_nofile(wanted: int = NOFILE_WANTED) -> int:
    """Raise this process's open-file limit (children inherit it); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):  # not root: the hard limit is the ceiling
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchProcessError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time `pid` has used (``/proc/<pid>/stat``), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    """Open file descriptors of `pid`."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> int:
    """The soft open-file limit `pid` runs with (``/proc/<pid>/limits``)."""
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise BenchProcessError(f"no open-file limit for pid {pid}")


def load_average() -> str:
    """The 1/5/15-minute load averages, to judge whether a run was disturbed."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _xiaozhi() -> list[str]:
    script = Path(sys.executable).with_name("xiaozhi")
    return [str(script)] if script.exists() else [sys.executable, "-m", "xiaozhi_cli.main"]


def _die_with_parent(argv: list[str]) -> list[str]:
    setpriv = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
    return [setpriv, "--pdeathsig", "TERM", *argv] if setpriv else argv


async def http_json(port: int, path: str, within: float = 5.0) -> tuple[int, Any]:
    """GET ``http://127.0.0.1:<port><path>``; (status, parsed JSON body)."""

    async def _get() -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, orjson.loads(body) if body else None

    return await asyncio.wait_for(_get(), within)


@dataclass
class Child:
    """A child process whose output goes to a log file (never to an unread pipe)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchProcessError(
                f"{self.name} exited with {self.process.returncode}; its log:\n{self.tail()}"
            )

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def fd_count(self) -> int:
        return fd_count(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    async def stats(self, within: float = 5.0) -> dict[str, Any]:
        status, body = await http_json(self.port, "/stats", within)
        if status != 200:
            raise BenchProcessError(f"{self.name} /stats answered {status}")
        return dict(body)

    async def wait_port(self, listening: re.Pattern[str], within: float = 30.0) -> int:
        """Read the port from the child's listening line (`listening`'s one group); the child
        bound port 0. The log is a file, so it is read again until the line is there."""
        deadline = time.monotonic() + within
        while True:
            self.check_alive()
            try:
                text = self.log_path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                text = ""
            if found := listening.search(text):
                self.port = int(found.group(1))
                return self.port
            if time.monotonic() > deadline:
                raise BenchProcessError(
                    f"{self.name} printed no listening line within {within:.0f} s; "
                    f"its log:\n{self.tail()}"
                )
            await asyncio.sleep(0.05)

    async def wait_http(self, path: str, ready: Any, within: float = 30.0) -> None:
        """Poll `path` until `ready(status, body)` is true."""
        deadline = time.monotonic() + within
        while True:
            self.check_alive()
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
                status, body = await http_json(self.port, path, within=2)
                if ready(status, body):
                    return
            if time.monotonic() > deadline:
                raise BenchProcessError(
                    f"{self.name} not ready on :{self.port}{path} within {within:.0f} s; "
                    f"its log:\n{self.tail()}"
                )
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL now: when what is measured is done and a graceful stop would only cost
        time (an edge holding 10,000 devices publishes each one's disconnect first)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(argv: list[str], out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `argv` with its output (stdout and stderr) going to the file `out`."""
    with out.open("wb") as log:
        return subprocess.Popen(
            _die_with_parent(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,  # a Ctrl-C reaches the bench, which stops its children
        )


# The line each server prints once it listens, with the port it bound.
_EDGE_LISTENING = re.compile(r"^edge +ws://127\.0\.0\.1:(\d+)/", re.MULTILINE)
_HUB_LISTENING = re.compile(r"^hub +http://127\.0\.0\.1:(\d+) ", re.MULTILINE)
_BARE_LISTENING = re.compile(r"^bare-server ws://127\.0\.0\.1:(\d+)/", re.MULTILINE)


@contextlib.asynccontextmanager
async def _child(
    name: str, argv: list[str], workdir: Path, env: dict[str, str]
) -> AsyncIterator[Child]:
    log_path = workdir / f"{name}.log"
    process = _spawn(argv, log_path, env)
    child = Child(name, process, log_path)
    try:
        yield child
    finally:
        await asyncio.to_thread(child.stop)


@contextlib.asynccontextmanager
async def broker(workdir: Path) -> AsyncIterator[ManagedMosquitto]:
    """Mosquitto with the project's `mosquitto/dev.conf` on a free loopback port."""
    mosquitto = ManagedMosquitto(workdir / "mosquitto")
    await asyncio.to_thread(mosquitto.start)
    try:
        yield mosquitto
    finally:
        await asyncio.to_thread(mosquitto.stop)


@contextlib.asynccontextmanager
async def edge(workdir: Path, mqtt_url: str, **settings: object) -> AsyncIterator[Child]:
    """`xiaozhi edge` on a free loopback port, open device auth; ready once MQTT is up.

    `settings` are edge settings by field name (``max_messages_per_second=...``), passed
    as their ``XIAOZHI_`` variables.
    """
    env = {
        "XIAOZHI_MQTT_URL": mqtt_url,
        "XIAOZHI_EDGE_HOST": HOST,
        "XIAOZHI_EDGE_PORT": "0",
        "XIAOZHI_DEVICE_AUTH": "open",
        "XIAOZHI_EDGE_ID": f"bench-edge-{uuid.uuid4().hex[:8]}",
        "XIAOZHI_STATE_DIR": str(workdir / "edge-state"),
        "XIAOZHI_EDGE_REUSE_PORT": "",
        **{f"XIAOZHI_{key.upper()}": str(value) for key, value in settings.items()},
    }
    async with _child("edge", [*_xiaozhi(), "edge"], workdir, env) as child:
        await child.wait_port(_EDGE_LISTENING)
        await child.wait_http(
            "/health", lambda status, body: status == 200 and body.get("mqtt_connected")
        )
        yield child


@contextlib.asynccontextmanager
async def hub(workdir: Path, mqtt_url: str, **settings: object) -> AsyncIterator[Child]:
    """`xiaozhi hub` (the demo home) on a free loopback port; ready once `/health` is 200."""
    env = {
        "XIAOZHI_MQTT_URL": mqtt_url,
        "XIAOZHI_HUB_HOST": HOST,
        "XIAOZHI_HUB_PORT": "0",
        "XIAOZHI_HUB_ID": f"bench-hub-{uuid.uuid4().hex[:8]}",
        "XIAOZHI_STATE_DIR": str(workdir / "hub-state"),
        **{f"XIAOZHI_{key.upper()}": str(value) for key, value in settings.items()},
    }
    async with _child("hub", [*_xiaozhi(), "hub"], workdir, env) as child:
        await child.wait_port(_HUB_LISTENING, within=60)
        await child.wait_http("/health", lambda status, _: status == 200, within=60)
        yield child


@contextlib.asynccontextmanager
async def bare_server(workdir: Path, mqtt_port: int | None = None) -> AsyncIterator[Child]:
    """The reference: a bare `websockets` server with the edge's settings; with `mqtt_port`,
    the bare bridge that republishes sensor messages to that broker."""
    argv = [sys.executable, "-m", "xiaozhi_bench.bare_server", "--port", "0"]
    if mqtt_port is not None:
        argv += ["--mqtt-port", str(mqtt_port)]
    async with _child("bare-server", argv, workdir, {}) as child:
        await child.wait_port(_BARE_LISTENING)
        await child.wait_http("/stats", lambda status, _: status == 200)
        yield child


class Subscriber:
    """``mosquitto_sub -F '%U %p'`` into a file: one line per message, stamped on arrival."""

    def __init__(self, workdir: Path, broker_port: int, filters: list[str], name: str) -> None:
        self.path = workdir / f"{name}.txt"
        self.broker_port = broker_port
        self.filters = filters
        self.name = name
        self._offset = 0
        self._child: Child | None = None

    @contextlib.asynccontextmanager
    async def running(self, probe_topic: str) -> AsyncIterator[Subscriber]:
        """Run it; return once a probe published on `probe_topic` came back (subscribed)."""
        binary = shutil.which("mosquitto_sub")
        if binary is None:
            raise BenchProcessError("mosquitto_sub is missing: apt-get install mosquitto-clients")
        argv = [binary, "-h", HOST, "-p", str(self.broker_port), "-F", "%U %p", "-R",
                "-i", f"bench-{self.name}-{uuid.uuid4().hex[:6]}"]  # fmt: skip
        for topic_filter in self.filters:
            argv += ["-t", topic_filter]
        process = _spawn(argv, self.path, {})
        self._child = Child(self.name, process, self.path)
        try:
            await self._wait_probe(probe_topic)
            yield self
        finally:
            await asyncio.to_thread(self._child.stop)

    async def _wait_probe(self, topic: str) -> None:
        from xiaozhi_bench.loadgen import MqttPublisher, mqtt_publish_packet

        publisher = await MqttPublisher.connect(HOST, self.broker_port, f"probe-{self.name}")
        marker = f"probe-{uuid.uuid4().hex}".encode()
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                assert self._child is not None
                self._child.check_alive()
                publisher.write(mqtt_publish_packet(topic.encode(), marker))
                await asyncio.sleep(0.1)
                if marker in self.path.read_bytes():
                    self.take()
                    return
        finally:
            await publisher.disconnect()
        raise BenchProcessError(f"mosquitto_sub for {self.filters} never got its probe")

    def take(self) -> list[tuple[int, bytes]]:
        """Lines received since the last call: (arrival time in ns, payload)."""
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        end = data.rfind(b"\n") + 1  # a line being written stays for the next call
        self._offset += end
        out = []
        for line in data[:end].splitlines():
            stamp, _, payload = line.partition(b" ")
            seconds, _, nanos = stamp.partition(b".")
            with contextlib.suppress(ValueError):
                out.append((int(seconds) * 1_000_000_000 + int(nanos), payload))
        return out
