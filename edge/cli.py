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
from typing import TYPE_CHECKING, Any

from xiaozhi_edge.settings import EdgeSettings, EdgeSettingsError, load_edge_settings
from xiaozhi_runtime.runner import run_until_signal

if TYPE_CHECKING:
    from xiaozhi_edge.server import EdgeServer

__all__ = ["add_edge_parser"]


def _say(line: str) -> None:
    """One line for whoever started us (flushed: tests and scripts read it live)."""
    print(line, flush=True)


def _device_url(host: str, port: int) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"ws://[{host}]:{port}/xiaozhi/v1/" if ":" in host else f"ws://{host}:{port}/xiaozhi/v1/"


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
        url = _device_url(settings.edge_host, server.port)
        _say(f"edge      {url} (devices), edge id {settings.edge_id}, pid {os.getpid()}")
        if server.mqtt_udp is not None:
            mqtt, udp = server.mqtt_udp.mqtt_port, server.mqtt_udp.udp_port
            _say(f"edge      mqtt port {mqtt} (firmware MQTT + UDP), udp port {udp}")

    async def main(stop: asyncio.Event) -> int:
        await run_edge(settings, reuse_port=reuse_port, stop=stop, listening=listening)
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
    """N children of `xiaozhi edge`, each its own edge id, sharing the port by SO_REUSEPORT."""
    settings = _load_settings()
    if settings is None:
        return 2
    base_id = os.environ.get("XIAOZHI_EDGE_ID") or f"edge-{os.getpid()}"
    try:
        reserved = _reserve_port(settings.edge_host, settings.edge_port)
    except OSError as err:
        print(f"xiaozhi edge: {settings.edge_host}:{settings.edge_port}: {err}", file=sys.stderr)
        return 2
    with reserved:
        port = int(reserved.getsockname()[1])
        _say(f"edge      {_device_url(settings.edge_host, port)} ({count} workers)")
        children = []
        for index in range(count):
            env = dict(
                os.environ,
                XIAOZHI_EDGE_ID=f"{base_id}-w{index}",
                XIAOZHI_EDGE_PORT=str(port),
                XIAOZHI_EDGE_REUSE_PORT="1",
            )
            children.append(subprocess.Popen([sys.argv[0], "edge"], env=env))

        def _forward(signum: int, _frame: object) -> None:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        signal.signal(signal.SIGINT, _forward)
        signal.signal(signal.SIGTERM, _forward)
        return max(child.wait() for child in children)


def _cmd_edge(args: argparse.Namespace) -> int:
    if args.workers > 1:
        return _run_workers(args.workers)
    return _run_one(reuse_port=os.environ.get("XIAOZHI_EDGE_REUSE_PORT") == "1")


def add_edge_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("edge", help="run an edge worker (device WebSockets -> MQTT)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.set_defaults(func=_cmd_edge)
