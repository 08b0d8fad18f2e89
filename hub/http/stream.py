"""``/api/v1/stream``: the live stream, seed 002's frames over a WebSocket (docs/protocols.md §3.9).

The protocol is :class:`~xiaozhi.stream_session.StreamSession`'s (no I/O there); this module
is the socket around it: one reader task hands every received message to the session, one
writer loop sends what the session has due and sleeps until it is woken (a message offered,
a frame received) or the session's next deadline (heartbeat, ack resend). What the hub hears
comes from :class:`~xiaozhi_hub.stream.StreamUnit`, which offers it to every attached
connection without waiting: a client that does not read fills only its own bounded queue.

The fan-out's cost is per frame and per wake-up, so both are shared (docs/benchmarks.md,
"Stream and dashboard"): the frames due at one pass go out in one socket write
(:class:`~xiaozhi_runtime.asgi.MessageWriter`; each is still its own WebSocket message), and
a writer that has just sent data lets a burst gather for :data:`_GATHER_SECONDS` before its
next pass, rather than waking once per MQTT message (the hub's MQTT client reads one message
per pass of the event loop). A message after a quiet spell goes out at once.

Authentication, as the REST API's: ``X-API-Key`` or ``Authorization: Bearer <JWT>`` on the
upgrade request (scripts, ``xiaozhi watch``), or ``"api_key"`` / ``"token"`` in the client's
``VERSION_CHECK`` (browsers cannot set headers on a WebSocket). A read-only key is enough.
Bad credentials get an ``ERROR`` 0x202 frame and close code 1008. The key is never taken
from the query string, which ends up in access logs.

A connection has ``XIAOZHI_SIGN_IN_SECONDS`` (10) to sign in and agree a version, else
``ERROR`` 0x202 (0x100 when its upgrade request was authenticated) and 1008; at most
``XIAOZHI_STREAM_MAX_SIGNING_IN`` are open without credentials at once, one more is refused
at once (``ERROR`` 0x204, close 1013 "try again later"). Both counted in ``/api/v1/stats``
and ``/metrics``: an unauthenticated socket may not be held open for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from xiaozhi import __version__
from xiaozhi.errors import ErrorCode
from xiaozhi.stream_frame import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEADER_V3,
    StreamVersion,
    encode_message,
    error_message,
)
from xiaozhi.stream_session import (
    Credentials,
    SessionState,
    StreamItem,
    StreamPolicy,
    StreamSession,
    Subscribed,
)
from xiaozhi_hub.http.auth import Authenticator
from xiaozhi_hub.http.envelopes import API_PREFIX, ApiError
from xiaozhi_hub.service import HubService
from xiaozhi_hub.stream import StreamUnit
from xiaozhi_runtime.asgi import MessageWriter

__all__ = ["STREAM_PATH", "WS_MAX_SIZE", "add_stream_routes"]

log = structlog.get_logger("xiaozhi.hub.stream")

STREAM_PATH = API_PREFIX + "/stream"
WS_MAX_SIZE = DEFAULT_MAX_MESSAGE_BYTES + HEADER_V3.size
"""The largest WebSocket message the hub takes (uvicorn's ``ws_max_size``): a stream frame
at the session's payload limit and the longest header. uvicorn's default (16 MiB) would
have a message 16 times the limit read whole before the session refuses it."""
_POLICY_CLOSE = 1008  # RFC 6455: the message violates the endpoint's policy (auth, version)
_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: the server is overloaded, try again later
_DROP_SECONDS = 2.0
"""How long a connection the hub ends has to go (its close handshake) before it is aborted:
a client cut off for not reading never would (:meth:`MessageWriter.drop_within`)."""
_GATHER_SECONDS = 0.005
"""How long a writer that just sent data lets the next ones gather: at most this much added
latency during a burst, and one pass (one socket write) per subscriber per gathering."""


class _Connection:
    """One stream client: its session, and what wakes its writer.

    Woken by a plain flag and a future created only while the writer waits: an offer costs
    an attribute check when the writer is busy or already woken.
    """

    def __init__(self, session: StreamSession, unit: StreamUnit) -> None:
        self.session = session
        self.unit = unit
        self.woken = False
        self._waiter: asyncio.Future[None] | None = None
        self.signing_in = False  # counted by the unit's begin_sign_in until signed_in()

    def signed_in(self) -> None:
        """The session left negotiation (or the connection ended): no longer counted."""
        if self.signing_in:
            self.signing_in = False
            self.unit.end_sign_in()

    def offer(self, item: StreamItem, *, retained: bool = False) -> None:
        before = self.session.dropped
        if self.session.offer(item, retained=retained):
            self.wake()
            if self.session.dropped != before:
                self.unit.dropped(self.session.dropped - before)

    def replay(self, items: list[StreamItem]) -> None:
        """The retained state a new subscription starts with: kept whole, not queued."""
        if self.session.replay(items):
            self.wake()

    def wake(self) -> None:
        self.woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, within: float | None) -> None:
        """Until :meth:`wake` (or was woken since the flag was cleared), at most ``within`` s."""
        if self.woken:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None
        if within is not None:
            timer = loop.call_later(within, self.wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def add_stream_routes(app: FastAPI, auth: Authenticator) -> None:
    """Add the ``/api/v1/stream`` WebSocket."""

    def check(credentials: Credentials) -> bool:
        if credentials.api_key is None and credentials.token is None:
            return False
        bearer = f"Bearer {credentials.token}" if credentials.token is not None else None
        try:
            auth.authenticate(credentials.api_key, bearer)
        except ApiError:
            return False
        return True

    @app.websocket(STREAM_PATH)
    async def stream(websocket: WebSocket) -> None:
        service: HubService = websocket.app.state.service
        key = websocket.headers.get("x-api-key")
        authorization = websocket.headers.get("authorization")
        await websocket.accept()
        authenticated = False
        if key is not None or authorization:
            try:
                auth.authenticate(key, authorization)
            except ApiError as err:
                refusal = error_message(
                    ErrorCode.AUTHENTICATION_FAILED, err.message, version=StreamVersion.V1
                )
                await websocket.send_bytes(encode_message(refusal))
                await websocket.close(code=_POLICY_CLOSE, reason=err.code)
                return
            authenticated = True
        elif not service.stream.begin_sign_in():
            limit = service.settings.stream_max_signing_in
            busy = error_message(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"{limit} connections are signing in already: try again later, or send "
                "X-API-Key or 'Authorization: Bearer' on the upgrade request",
                version=StreamVersion.V1,
            )
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.send_bytes(encode_message(busy))
                await websocket.close(code=_TRY_AGAIN_LATER, reason="too many signing in")
            return
        settings = service.settings
        session = StreamSession(
            check_credentials=check,
            authenticated=authenticated,
            policy=StreamPolicy(
                queue_limit=settings.stream_queue_limit,
                heartbeat_seconds=settings.stream_heartbeat_seconds,
                ack_timeout_seconds=settings.stream_ack_timeout_seconds,
                negotiate_seconds=settings.sign_in_seconds,
            ),
            server=f"xiaozhi-hub {__version__}",
        )
        await _serve(websocket, session, service.stream, signing_in=not authenticated)


async def _serve(
    websocket: WebSocket, session: StreamSession, unit: StreamUnit, *, signing_in: bool
) -> None:
    """Run one connection until either side ends it; ``signing_in``: counted by
    :meth:`StreamUnit.begin_sign_in` until the session opens or ends."""
    connection = _Connection(session, unit)
    connection.signing_in = signing_in
    session.start(time.time())
    unit.attach(connection)
    writer = MessageWriter(websocket)

    def read_done(_: asyncio.Task[None]) -> None:
        # The session is over (cut off, or the client closed): the writer may be waiting for
        # room in a socket the client never drains, so the socket goes by force if need be.
        connection.wake()
        writer.drop_within(_DROP_SECONDS)

    reader = asyncio.create_task(_read(websocket, connection, unit), name="stream-reader")
    reader.add_done_callback(read_done)
    client = websocket.client
    log.info(
        "stream_opened",
        client=f"{client.host}:{client.port}" if client else None,
        batched=writer.batched,
    )
    try:
        while True:
            connection.woken = False
            frames = session.frames(time.time())
            if frames:
                await writer.send(frames)
            if session.state is SessionState.CLOSED or reader.done():
                break
            if frames:
                await asyncio.sleep(_GATHER_SECONDS)
                continue
            deadline = session.next_deadline()
            await connection.wait(None if deadline is None else max(0.0, deadline - time.time()))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away while we were sending
    finally:
        connection.signed_in()
        if session.timed_out:
            unit.refuse("timeout")
        unit.detach(connection)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        log.info(
            "stream_closed",
            reason=session.close_reason or "client",
            version=int(session.version),
            dropped=session.dropped,
            sent=session.stats.sent,
            errors=session.stats.errors,
        )
        writer.drop_within(_DROP_SECONDS)  # the close handshake, if it comes, or the abort
        if websocket.application_state is WebSocketState.CONNECTED and (
            websocket.client_state is WebSocketState.CONNECTED
        ):
            code = _POLICY_CLOSE if session.close_reason else 1000
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.close(code=code, reason=session.close_reason[:120])


async def _read(websocket: WebSocket, connection: _Connection, unit: StreamUnit) -> None:
    """Hand every message from the client to the session; returns when the client leaves."""
    session = connection.session
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            session.close("client closed")
            return
        data = message.get("bytes")
        if data is None:
            session.refuse(ErrorCode.INVALID_DATA_FORMAT, "text frame: the stream is binary")
        else:
            for result in session.receive(data, time.time()):
                if isinstance(result, Subscribed):
                    connection.replay(unit.retained(result.filters))
        if session.state is not SessionState.NEGOTIATING:
            connection.signed_in()
        connection.wake()
        if session.state is SessionState.CLOSED:
            # Cut off (a client that sends but does not read, bad credentials...): read no
            # more from it; its last frame (the ERROR) goes out, then the socket closes.
            return
