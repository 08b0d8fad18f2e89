"""The reference server: bare `websockets` with the edge's settings, and nothing else.

``python -m xiaozhi_bench.bare_server --port N`` accepts WebSockets on any path with the
same limits as the edge (`EdgeServer.start`: compression off, `max_queue` 4, `max_size`
2 x 64 KiB, pings every 20 s) on the same event loop (uvloop), answers a device's hello with a
fixed server hello and drops every other message. It serves ``GET /stats`` with its open
connections and asyncio tasks. What the edge costs beyond this is the edge's own doing.

With ``--mqtt-port P`` it is the bare bridge of design.md section 8, the reference of
`xiaozhi bench telemetry`: each ``sensor`` text message is parsed (orjson), its topic built
(``xiaozhi/sensors/{device_id}/{sensor_type}``, the device id from the ``Device-Id`` header)
and its payload written as the edge writes a ``SensorPayload`` (a wall-clock string made once
per event-loop pass); the QoS 0 retained PUBLISH packets go to Mosquitto in one write per
event-loop pass. No validation, no limits, no status: the least a bridge can do, so what the
edge costs beyond it is the edge's own doing. ``/stats`` then also counts ``published``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http
import resource
import signal
import time

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from xiaozhi.timestamps import wire_timestamp
from xiaozhi_bench.loadgen import MqttPublisher, mqtt_publish_packet

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


class _Bridge:
    """Sensor messages to Mosquitto: packets gathered, written once per event-loop pass."""

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher
        self.published = 0
        self._packets: list[bytes] = []
        self._wall: tuple[float, str] = (-1.0, "")
        self._loop = asyncio.get_running_loop()

    def wall(self) -> str:
        now = self._loop.time()
        if self._wall[0] != now:
            self._wall = (now, wire_timestamp(time.time()))
        return self._wall[1]

    def sensor(self, device_id: str, text: str) -> None:
        message = orjson.loads(text)
        data = message["data"]
        topic = f"xiaozhi/sensors/{device_id}/{data['sensor_type']}".encode()
        payload = orjson.dumps(
            {"sensor_type": data["sensor_type"], "value": data["value"],
             "device_id": device_id, "unit": data["unit"], "timestamp": self.wall()}
        )  # fmt: skip
        if not self._packets:
            self._loop.call_soon(self._flush)
        self._packets.append(mqtt_publish_packet(topic, payload, retain=True))

    def _flush(self) -> None:
        packets, self._packets = self._packets, []
        self.publisher.write(b"".join(packets))
        self.published += len(packets)


async def _handle(bridge: _Bridge | None, ws: ServerConnection) -> None:
    _connections.add(ws)
    raw_id = ws.request.headers.get("Device-Id", "") if ws.request else ""
    device_id = raw_id.replace(":", "").lower()
    try:
        async for message in ws:
            if isinstance(message, str):
                if '"sensor"' in message and bridge is not None:
                    bridge.sensor(device_id, message)
                elif '"hello"' in message:
                    await ws.send(_SERVER_HELLO)
    except ConnectionClosed:
        pass
    finally:
        _connections.discard(ws)


def _stats(
    bridge: _Bridge | None, connection: ServerConnection, request: Request
) -> Response | None:
    if request.path != "/stats":
        return None
    stats = {"connections": len(_connections), "tasks": len(asyncio.all_tasks())}
    if bridge is not None:
        stats["published"] = bridge.published
    body = orjson.dumps(stats)
    headers = Headers(
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
         ("Connection", "close")]
    )  # fmt: skip
    return Response(http.HTTPStatus.OK.value, "OK", headers, body)


async def _serve(host: str, port: int, mqtt_port: int | None) -> None:
    bridge = None
    if mqtt_port is not None:
        publisher = await MqttPublisher.connect(host, mqtt_port, f"bare-bridge-{port}")
        bridge = _Bridge(publisher)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        functools.partial(_handle, bridge),
        host,
        port,
        process_request=functools.partial(_stats, bridge),
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
    parser.add_argument("--mqtt-port", type=int, help="bridge sensor messages to this broker")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the bench raised the hard one
    uvloop.run(_serve(args.host, args.port, args.mqtt_port))


if __name__ == "__main__":
    main()
