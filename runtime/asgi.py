"""Serving an ASGI app with uvicorn inside this process's event loop.

The hub's HTTP side (and test servers, such as the fake Home Assistant) run beside MQTT work
in one event loop, so uvicorn is embedded rather than run as the process: the process that
embeds it owns the signals (:mod:`xiaozhi_runtime.runner`), and :func:`serve_app` returns
once the server accepts connections, from uvicorn's own startup (a readiness event, no
polling), and stops it when the block exits.

:class:`MessageWriter` sends several binary WebSocket messages of one connection in one
socket write (the live stream's fan-out, :mod:`xiaozhi_hub.http.stream`): ASGI has one
``send`` per message, and uvicorn writes each to the socket at once. It also ends a
connection the app gave up on (:meth:`MessageWriter.drop_within`), which ASGI cannot: a
``websocket.close`` waits for room in a socket a client that never reads keeps full.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from xiaozhi.errors import AddressInUse, StartupError

__all__ = ["AddressInUse", "MessageWriter", "ServedApp", "listen", "serve_app"]


class _WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` WebSocket protocol (named rather than "auto" because
    :class:`MessageWriter` writes through it), whose server stop survives connections
    already closing.

    uvicorn's stop calls :meth:`shutdown` on every connection still open, and that sends a
    close frame (1012) unless uvicorn itself sent one. A connection whose client sent its
    close frame (answered at once by ``websockets``), or that failed, is closing though: the
    connection is still there while its answer waits to be written (a client that does not
    read, a TLS close handshake), and ``websockets`` refuses a second close with
    ``InvalidState``, raised out of the server's stop (the hub's stop ended in a traceback).
    Such a connection only has its transport closed, as uvicorn does for one it closed.
    """

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and self.conn.state is not State.OPEN:
            self.stop_keepalive()
            self.transport.close()
            return
        super().shutdown()


_PROTOCOL_ATTRIBUTES = ("conn", "transport", "writable", "disconnected", "close_sent")
_STARLETTE_SENDER = "wrap_app_handling_exceptions.<locals>.wrapped_app.<locals>.sender"
"""Starlette's route wrapper around ``send``: it only notes an HTTP response's start, so
writing past it changes nothing for a WebSocket."""


def _uvicorn_protocol(send: Any) -> Any:
    """uvicorn's WebSocket protocol behind an ASGI ``send``, or None.

    ``send`` is the protocol's bound method, or Starlette's route wrapper around it; any
    other wrapper (a middleware's) is respected: None, and the caller sends through ASGI.
    """
    if getattr(send, "__qualname__", "").endswith(_STARLETTE_SENDER):
        cells = [cell.cell_contents for cell in send.__closure__ or ()]
        send = next((c for c in cells if hasattr(c, "__self__")), None)
    protocol = getattr(send, "__self__", None)
    if all(hasattr(protocol, name) for name in _PROTOCOL_ATTRIBUTES):
        return protocol
    return None


class MessageWriter:
    """Sends binary WebSocket messages of one ASGI connection, many in one socket write.

    Each message stays its own WebSocket message; only the socket write is shared. This
    reaches past ASGI into uvicorn's WebSocket protocol (the connection's ``send`` is its
    bound method): its ``websockets`` connection frames the messages, its transport gets them
    joined, and its flow control (the ``writable`` event, cleared while the transport's
    buffer is over its high-water mark) is awaited first, as uvicorn's own ``send`` does. On
    any other server (or protocol) :attr:`batched` is False and every message goes through
    the ASGI ``send``, one at a time.
    """

    def __init__(self, websocket: Any) -> None:
        self._websocket = websocket
        self._protocol: Any = _uvicorn_protocol(getattr(websocket, "_send", None))
        self._drop: asyncio.TimerHandle | None = None

    @property
    def batched(self) -> bool:
        """True when messages share socket writes (uvicorn's protocol was found)."""
        return self._protocol is not None

    async def send(self, messages: list[bytes]) -> None:
        """Send ``messages``, in order, as binary WebSocket messages.

        Raises:
            ConnectionError: the client is gone (or the connection is closing); through
                ASGI, what its ``send`` raises (Starlette's ``WebSocketDisconnect``).
        """
        protocol = self._protocol
        if protocol is None:
            for message in messages:
                await self._websocket.send_bytes(message)
            return
        await protocol.writable.wait()
        if protocol.disconnected or protocol.close_sent or protocol.transport.is_closing():
            raise ConnectionError("the WebSocket client is gone")
        conn = protocol.conn
        try:
            for message in messages:
                conn.send_binary(message)
        except Exception as err:  # websockets' InvalidState: the connection is closing
            raise ConnectionError(f"the WebSocket is closing: {err}") from err
        protocol.transport.write(b"".join(conn.data_to_send()))

    def drop_within(self, seconds: float) -> None:
        """Abort the connection unless the client is gone within ``seconds``.

        For a connection the app is ending: a client that reads answers the close frame in
        time and this does nothing. One that never reads keeps the socket's buffers full, so
        neither the close frame nor anything before it leaves: uvicorn's ``send`` (the ASGI
        close included) waits for room, and a transport's ``close()`` waits for its buffer
        to drain, until uvicorn's keepalive gives up (ping interval + timeout, ~40 s). The
        abort resets the TCP connection (``SO_LINGER`` 0, so the kernel keeps nothing of it
        either) and wakes every waiting ``send`` with the client gone. Once per connection;
        on another server (:attr:`batched` False) it does nothing.
        """
        if self._protocol is None or self._drop is not None:
            return
        self._drop = asyncio.get_running_loop().call_later(seconds, _abort, self._protocol)


def _abort(protocol: Any) -> None:
    """Reset ``protocol``'s connection now, unless it is gone already."""
    if protocol.disconnected:
        return
    sock = protocol.transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):  # a transport without one: abort alone
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    protocol.transport.abort()


class _Server(uvicorn.Server):
    """uvicorn's server with a readiness event and, when embedded, no signal handlers."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the process that embeds us owns the signals (runtime.runner)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclass(frozen=True, slots=True)
class ServedApp:
    """A served app: its uvicorn server and where it listens (``port`` is the real one)."""

    server: uvicorn.Server
    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def listen(host: str, port: int, *, setting: str | None = None) -> socket.socket:
    """Bind the HTTP address now, to serve on it later (:func:`serve_app` ``listener=``).

    A process that does slow work before serving (the hub connects to the broker and loads
    its recogniser) binds first, so a taken port fails at once, before anything started.

    Args:
        setting: the setting that chooses ``port`` (``XIAOZHI_HUB_PORT``), named in the
            error when it is taken.

    Raises:
        AddressInUse: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        hint = f" (set {setting} to another port, or 0 for any free one)" if setting else ""
        raise AddressInUse(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from err
    sock.set_inheritable(True)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as err:  # uvicorn exits the process when the app's startup fails
        raise StartupError(f"uvicorn stopped with exit status {err.code}") from err


@contextlib.asynccontextmanager
async def serve_app(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    graceful_seconds: float = 5.0,
    port_setting: str | None = None,
    listener: socket.socket | None = None,
    ws_max_size: int = 16 * 1024 * 1024,
    certificate: tuple[Path, Path] | None = None,
) -> AsyncIterator[ServedApp]:
    """Serve an ASGI app with uvicorn in this event loop until the block exits.

    The socket is bound here first (or comes bound, ``listener``), so a taken port raises to
    the caller (uvicorn would exit the process). Returns once the server accepts
    connections: no polling.

    Args:
        port_setting: the setting that chooses ``port`` (``XIAOZHI_HUB_PORT``), named in the
            error when it is taken.
        listener: a socket from :func:`listen`, served instead of binding ``host:port``;
            closed with the server.
        ws_max_size: the largest WebSocket message a client may send (uvicorn's default,
            16 MiB): larger ones close the connection (1009) before any of it is kept.
        certificate: PEM certificate chain and key files: serve https (and ``wss://``)
            rather than plain http.

    Raises:
        AddressInUse: the address cannot be bound (a taken port); also an ``OSError``.
        StartupError: uvicorn ended before it accepted connections (the app's lifespan failed).
    """
    sock = listener if listener is not None else listen(host, port, setting=port_setting)
    host, actual_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_seconds),
        lifespan="on",
        ws=_WebSocketProtocol,
        ws_max_size=ws_max_size,
        ssl_certfile=str(certificate[0]) if certificate else None,
        ssl_keyfile=str(certificate[1]) if certificate else None,
    )
    server = _Server(config)
    task = asyncio.create_task(_serve(server, sock), name=f"http-{actual_port}")
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        sock.close()
        raise StartupError(f"the HTTP server on {host}:{actual_port} did not start") from (
            task.exception() if task.done() and not task.cancelled() else None
        )
    try:
        yield ServedApp(server, host, actual_port, tls=certificate is not None)
    finally:
        server.should_exit = True
        await task
        sock.close()
