"""Serving an ASGI app in this event loop (xiaozhi_runtime.asgi): ready on return, a taken
port raised to the caller, a failed startup reported, stopped when the block exits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import connect

from xiaozhi.errors import StartupError
from xiaozhi_runtime.asgi import (
    AddressInUse,
    MessageWriter,
    ServedApp,
    _uvicorn_protocol,
    serve_app,
)


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def test_the_app_answers_once_serve_app_returns() -> None:
    async with serve_app(hello_app()) as served:
        assert served.port > 0
        assert served.url == f"http://127.0.0.1:{served.port}"
        async with httpx.AsyncClient(base_url=served.url) as http:
            assert (await http.get("/hello")).json() == {"hello": "world"}
    with pytest.raises(httpx.ConnectError):  # stopped with the block
        async with httpx.AsyncClient(base_url=served.url) as http:
            await http.get("/hello")


async def test_a_taken_port_is_an_oserror_naming_the_address_and_the_setting() -> None:
    async with serve_app(hello_app()) as served:
        with pytest.raises(OSError, match="in use") as info:
            async with serve_app(hello_app(), port=served.port, port_setting="XIAOZHI_X_PORT"):
                pass
    assert isinstance(info.value, AddressInUse)
    assert f"cannot listen on 127.0.0.1:{served.port}" in str(info.value)
    assert "set XIAOZHI_X_PORT to another port" in str(info.value)


async def test_a_failed_lifespan_is_a_startup_error() -> None:
    @contextlib.asynccontextmanager
    async def broken(_: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield  # pragma: no cover

    with pytest.raises(StartupError, match="did not start"):
        async with serve_app(FastAPI(lifespan=broken)):
            pass


def test_urls_of_wildcard_and_ipv6_hosts() -> None:
    server = None  # the URL needs no server
    assert ServedApp(server, "0.0.0.0", 80).url == "http://127.0.0.1:80"  # type: ignore[arg-type]
    assert ServedApp(server, "::1", 81).url == "http://[::1]:81"  # type: ignore[arg-type]


def writer_app(seen: dict[str, object], done: asyncio.Event) -> FastAPI:
    """A WebSocket that sends three messages with one MessageWriter call, then waits for the
    client to leave and sends again."""
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        writer = MessageWriter(websocket)
        seen["batched"] = writer.batched
        await writer.send([b"one", b"two" * 1000, b"three"])
        await websocket.receive()  # the client's close
        try:
            await writer.send([b"late"])
        except (ConnectionError, WebSocketDisconnect) as err:
            seen["after_close"] = type(err)
        done.set()

    return app


def wrapping_send(app: ASGIApp) -> ASGIApp:
    """ASGI middleware whose ``send`` is its own function, as many middlewares do."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def own_send(message: Message) -> None:
            await send(message)

        await app(scope, receive, own_send)

    return wrapped


@pytest.mark.parametrize("wrapped", [False, True])
async def test_a_message_writer_sends_each_message_whole_and_in_order(wrapped: bool) -> None:
    seen: dict[str, object] = {}
    done = asyncio.Event()
    app = writer_app(seen, done)
    async with serve_app(wrapping_send(app) if wrapped else app) as served:
        url = served.url.replace("http", "ws", 1) + "/ws"
        async with connect(url) as client:
            got = [await asyncio.wait_for(client.recv(), 5) for _ in range(3)]
        assert got == [b"one", b"two" * 1000, b"three"]
        await asyncio.wait_for(done.wait(), 5)
    # uvicorn's protocol behind a bare app: one socket write; behind a middleware: ASGI sends.
    assert seen["batched"] is not wrapped
    assert seen["after_close"] is (WebSocketDisconnect if wrapped else ConnectionError)


def stuck_closing_app(full: asyncio.Event, closing: asyncio.Event) -> FastAPI:
    """A WebSocket that sends until the client, which reads nothing, has the socket's
    buffers full, then waits for the client's close frame."""
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        protocol = _uvicorn_protocol(websocket._send)
        while protocol.writable.is_set():  # cleared once the transport's buffer is full
            await websocket.send_bytes(bytes(256 * 1024))
        full.set()
        await websocket.receive()  # the client's close frame: uvicorn answers it
        closing.set()

    return app


async def test_a_server_stops_cleanly_while_a_client_is_mid_close() -> None:
    """The client has sent its close frame; the server's answer is stuck behind data the
    client does not read, so the connection is still open when the server stops. uvicorn
    would send its own close (1012) on a closing connection: InvalidState out of the stop."""
    full, closing = asyncio.Event(), asyncio.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    sock.setblocking(False)
    async with serve_app(stuck_closing_app(full, closing), graceful_seconds=1) as served:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", served.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await asyncio.wait_for(full.wait(), 10)
        # A masked close frame (code 1000), and nothing read from here on.
        mask = os.urandom(4)
        writer.write(
            bytes([0x88, 0x82])
            + mask
            + bytes(b ^ m for b, m in zip(b"\x03\xe8", mask[:2], strict=True))
        )
        await asyncio.wait_for(closing.wait(), 10)
    writer.close()
