"""The reference server: bare `websockets` with the edge's settings, and nothing else.

``python -m xiaozhi_bench.bare_server --port N`` accepts WebSockets on any path with the
same limits as the edge (`EdgeServer.start`: compression off, `max_queue` 4, `max_size`
2 x 64 KiB, pings every 20 s) on the same event loop (uvloop), answers a device's hello with a
fixed server hello and drops every other message. It serves ``GET /stats`` with its open
connections and asyncio tasks. What the edge costs beyond this is the edge's own doing.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import resource
import signal

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = ["main"]

_SERVER_HELLO = orjson.dumps(
    {
        "type": "hello",
        "transport": "websocket",
        "session_id": "0" * 32,
        "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1,
                         "frame_duration": 60},
    }
).decode()  # fmt: skip
_connections: set[ServerConnection] = set()


async def _handle(ws: ServerConnection) -> None:
    _connections.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str) and '"hello"' in message:
                await ws.send(_SERVER_HELLO)
    except ConnectionClosed:
        pass
    finally:
        _connections.discard(ws)


def _stats(connection: ServerConnection, request: Request) -> Response | None:
    if request.path != "/stats":
        return None
    body = orjson.dumps({"connections": len(_connections), "tasks": len(asyncio.all_tasks())})
    headers = Headers(
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
         ("Connection", "close")]
    )  # fmt: skip
    return Response(http.HTTPStatus.OK.value, "OK", headers, body)


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        _handle,
        host,
        port,
        process_request=_stats,
        max_size=2 * 65_536,
        max_queue=4,
        compression=None,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=5,
    ) as server:
        bound = server.sockets[0].getsockname()[1]  # --port 0: the port the OS picked
        print(f"bare-server ws://{host}:{bound}/", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the bench raised the hard one
    uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
