"""`xiaozhi edge [--workers N]`: one or N edge worker processes on one port (SO_REUSEPORT)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

from xiaozhi_edge.settings import EdgeSettingsError, load_edge_settings
from xiaozhi_runtime.runner import run_until_signal

__all__ = ["add_edge_parser"]


def _run_one(reuse_port: bool) -> int:
    from xiaozhi_edge.server import run_edge
    from xiaozhi_runtime.logs import configure_logging

    try:
        settings = load_edge_settings()
    except EdgeSettingsError as err:
        print(f"xiaozhi edge: {err}", file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level)

    async def main(stop: asyncio.Event) -> int:
        await run_edge(settings, reuse_port=reuse_port, stop=stop)
        return 0

    return run_until_signal(main)


def _run_workers(count: int) -> int:
    """N children of `xiaozhi edge`, each its own edge id, sharing the port by SO_REUSEPORT."""
    base_id = os.environ.get("XIAOZHI_EDGE_ID") or f"edge-{os.getpid()}"
    children = []
    for index in range(count):
        env = dict(os.environ, XIAOZHI_EDGE_ID=f"{base_id}-w{index}", XIAOZHI_EDGE_REUSE_PORT="1")
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
