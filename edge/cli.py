"""`xiaozhi edge [--workers N]`: one or N edge worker processes on one port (SO_REUSEPORT).

Each worker prints one line once it accepts devices, with the port it bound
(``XIAOZHI_EDGE_PORT=0`` picks a free one); with ``--workers`` the parent prints the shared
port first. Scripts and tests read the port from these lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from xiaozhi.backoff import Backoff
from xiaozhi.errors import AddressInUse
from xiaozhi_edge.settings import EdgeSettings, EdgeSettingsError, load_edge_settings
from xiaozhi_runtime.runner import run_until_signal

if TYPE_CHECKING:
    from xiaozhi_edge.server import EdgeServer

__all__ = ["add_edge_parser"]

_RESTART_MIN_SECONDS = 0.5  # first delay before restarting a worker that died young
_RESTART_MAX_SECONDS = 30.0
_STABLE_SECONDS = 10.0  # a worker that lived this long restarts at once when it dies


def _say(line: str) -> None:
    """One line for whoever started us (flushed: tests and scripts read it live)."""
    print(line, flush=True)


def _device_url(settings: EdgeSettings, port: int) -> str:
    """Where devices connect: wss:// when the edge has a certificate (XIAOZHI_EDGE_TLS_*)."""
    host = settings.edge_host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = f"[{host}]" if ":" in host else host
    scheme = "ws" if settings.edge_tls_cert_file is None else "wss"
    return f"{scheme}://{host}:{port}/xiaozhi/v1/"


def _load_settings() -> EdgeSettings | None:
    try:
        return load_edge_settings()
    except EdgeSettingsError as err:
        print(f"xiaozhi edge: {err}", file=sys.stderr)
        return None


def _run_one(reuse_port: bool) -> int:
    from xiaozhi_edge.server import run_edge
    from xiaozhi_runtime.logs import configure_logging

    settings = _load_settings()
    if settings is None:
        return 2
    configure_logging(level=settings.log_level)

    def listening(server: EdgeServer) -> None:
        url = _device_url(settings, server.port)
        _say(f"edge      {url} (devices), edge id {settings.edge_id}, pid {os.getpid()}")
        if server.mqtt_udp is not None:
            mqtt, udp = server.mqtt_udp.mqtt_port, server.mqtt_udp.udp_port
            _say(f"edge      mqtt port {mqtt} (firmware MQTT + UDP), udp port {udp}")

    async def main(stop: asyncio.Event) -> int:
        try:
            await run_edge(settings, reuse_port=reuse_port, stop=stop, listening=listening)
        except AddressInUse as err:
            print(f"xiaozhi edge: {err}", file=sys.stderr)
            return 2
        return 0

    return run_until_signal(main)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind ``(host, port)`` with SO_REUSEPORT and return the socket, not listening.

    The workers' listening sockets join it on the same port; while it is held, the port
    cannot go to another program, so port 0 becomes one free port every worker shares.
    Being bound but not listening, it takes no connections itself.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _run_workers(count: int) -> int:
    """N children of `xiaozhi edge`, each its own edge id, sharing the port by SO_REUSEPORT.

    A worker that dies (a crash, the OOM killer, kill -9) is started again with the same edge
    id, so its devices reconnect to a full set of workers; restarts of a worker that keeps
    dying soon after it starts are spaced by a capped backoff. SIGINT and SIGTERM are passed
    to every worker, and then nothing is restarted.
    """
    settings = _load_settings()
    if settings is None:
        return 2
    base_id = os.environ.get("XIAOZHI_EDGE_ID") or f"edge-{os.getpid()}"
    try:
        reserved = _reserve_port(settings.edge_host, settings.edge_port)
    except OSError as err:
        print(
            f"xiaozhi edge: cannot listen on {settings.edge_host}:{settings.edge_port}: "
            f"{err.strerror or err} (set XIAOZHI_EDGE_PORT to another port, or 0 for any free one)",
            file=sys.stderr,
        )
        return 2
    with reserved:
        port = int(reserved.getsockname()[1])
        _say(f"edge      {_device_url(settings, port)} ({count} workers)")
        return _Supervisor(base_id, port, count).run()


class _Supervisor:
    """Starts the workers, restarts the ones that die, forwards stop signals."""

    def __init__(self, base_id: str, port: int, count: int) -> None:
        self.base_id = base_id
        self.port = port
        self.stopping = threading.Event()
        self.children: dict[int, subprocess.Popen[bytes]] = {}  # index -> its process
        self.started: dict[int, float] = {}
        self.backoff = {
            i: Backoff(base_seconds=_RESTART_MIN_SECONDS, max_seconds=_RESTART_MAX_SECONDS,
                       attempts=0)
            for i in range(count)
        }  # fmt: skip

    def start(self, index: int) -> None:
        env = dict(
            os.environ,
            XIAOZHI_EDGE_ID=f"{self.base_id}-w{index}",
            XIAOZHI_EDGE_PORT=str(self.port),
            XIAOZHI_EDGE_REUSE_PORT="1",
        )
        self.children[index] = subprocess.Popen([sys.argv[0], "edge"], env=env)
        self.started[index] = time.monotonic()

    def forward(self, signum: int, _frame: object) -> None:
        self.stopping.set()
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        for index in self.backoff:
            self.start(index)
        signal.signal(signal.SIGINT, self.forward)
        signal.signal(signal.SIGTERM, self.forward)
        while any(child.returncode is None for child in self.children.values()):
            pid, status = os.wait()
            ended = next((i for i, c in self.children.items() if c.pid == pid), None)
            if ended is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            self.children[ended].returncode = code  # reaped here: Popen must not wait again
            if not self.stopping.is_set():
                self.restart(ended, code)
        return max(child.returncode or 0 for child in self.children.values())

    def restart(self, index: int, code: int) -> None:
        backoff = self.backoff[index]
        if time.monotonic() - self.started[index] >= _STABLE_SECONDS:
            backoff.reset()  # it had been serving: come back at once
        delay = backoff.next_delay() or 0.0
        how = f"signal {-code}" if code < 0 else f"status {code}"
        print(
            f"xiaozhi edge: worker {self.base_id}-w{index} (pid {self.children[index].pid}) "
            f"ended with {how}; restarting in {delay:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if not self.stopping.wait(delay):  # a stop signal during the delay: no restart
            self.start(index)


def _cmd_edge(args: argparse.Namespace) -> int:
    if args.workers > 1:
        return _run_workers(args.workers)
    return _run_one(reuse_port=os.environ.get("XIAOZHI_EDGE_REUSE_PORT") == "1")


def add_edge_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("edge", help="run an edge worker (device WebSockets -> MQTT)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.set_defaults(func=_cmd_edge)
