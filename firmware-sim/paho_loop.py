"""Many paho-mqtt clients on one asyncio event loop (paho's "external event loop" integration).

``loop_start()`` costs one thread per client: fine for one device, not for thousands. paho
documents the alternative (``examples/loop_asyncio.py``): the client tells us when its socket
opens and closes and when it has bytes to write (``on_socket_open``, ``on_socket_close``,
``on_socket_register_write``, ``on_socket_unregister_write``); the event loop calls
``loop_read()`` when the socket is readable, ``loop_write()`` when it is writable, and
``loop_misc()`` about once a second for keepalive pings and timeouts.

Here one :class:`PahoAsyncio` serves every client of the process, with a **single** 1 s
``loop_misc`` ticker for all of them instead of a task each. paho's callbacks (``on_connect``,
``on_message``...) then run on the event loop thread, so devices can touch asyncio objects
from them directly.

Limits: ``connect()``/``reconnect()`` open the TCP connection with a blocking
``socket.create_connection`` (paho has no non-blocking connect). On loopback that takes well
under a millisecond; a fleet paces its connects (``ramp``) so the broker's accept queue never
overflows, which would turn a connect into a one-second SYN retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import paho.mqtt.client as mqtt
import structlog

__all__ = ["MISC_INTERVAL_SECONDS", "PahoAsyncio"]

MISC_INTERVAL_SECONDS = 1.0
_log = structlog.get_logger(__name__)


class PahoAsyncio:
    """Drives paho clients from the running asyncio loop.

    Create it inside the loop; :meth:`attach` each client before its ``connect()``; call
    :meth:`close` when done (it stops the ticker; clients disconnect themselves).
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._clients: set[mqtt.Client] = set()
        self._ticker: asyncio.Task[None] | None = None

    def attach(self, client: mqtt.Client) -> None:
        """Route this client's socket through the event loop."""
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    @property
    def clients(self) -> int:
        """Clients with an open socket now."""
        return len(self._clients)

    def _on_socket_open(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        # paho leaves Nagle on: small QoS 1 publishes then wait for delayed ACKs (~20-40 ms
        # per hop on Linux), which would be the simulator's latency, not the system's.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.add_reader(sock, self._read, client)
        self._clients.add(client)
        if self._ticker is None or self._ticker.done():
            self._ticker = self.loop.create_task(self._tick(), name="paho-loop-misc")

    def _on_socket_close(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._clients.discard(client)
        with contextlib.suppress(ValueError, OSError):  # already closed: nothing registered
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)

    def _on_register_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, self._write, client)

    def _on_unregister_write(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_writer(sock)

    @staticmethod
    def _read(client: mqtt.Client) -> None:
        try:
            client.loop_read()
        except Exception:  # a callback bug must not kill the loop's reader for every client
            _log.exception("paho_loop_read_failed")

    @staticmethod
    def _write(client: mqtt.Client) -> None:
        try:
            client.loop_write()
        except Exception:
            _log.exception("paho_loop_write_failed")

    async def _tick(self) -> None:
        while self._clients:
            await asyncio.sleep(MISC_INTERVAL_SECONDS)
            for client in list(self._clients):
                try:
                    client.loop_misc()
                except Exception:
                    _log.exception("paho_loop_misc_failed")

    async def close(self) -> None:
        """Stop the ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
