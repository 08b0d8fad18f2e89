"""The edge's asyncio layer: device WebSockets in, MQTT out. It only moves bytes.

Every decision about a device lives in :class:`~xiaozhi_edge.session.DeviceSession`; this
module feeds it what arrives and executes the outputs it returns, in order:

* the WebSocket server (`websockets`, one event loop, no thread per connection) with auth in
  the handshake hook, so a refused device gets HTTP 401 with a reason and never a WebSocket;
* one :class:`~xiaozhi_runtime.mqtt.MqttOwner`: the hot path enqueues, never awaits the broker
  per message (design.md section 8). When the owner's queue passes its high watermark, each
  device's reader pauses before its next frame (QoS 1 backpressure);
* a reference-counted command router: the broker sees one SUBSCRIBE per filter, however many
  sessions hold it, and each command reaches every session holding its topic;
* one ticker for all sessions' timers (hello and idle timeouts, MCP deadlines), instead of a
  task per connection;
* paced TTS playback, one task per speaking device only;
* the audio monitor (`/api/ws/audio?device_id=...`, seed 004; edge/monitor.py): listeners get
  a device's uplink Opus as monitor packets, whichever edge process holds the device;
* `/health`, `/stats` (seed 000's fields) and `/metrics` (Prometheus) on the same port.

Shutdown follows uvicorn: stop accepting, close every device with 1012 (service restart), let
their `disconnected` status flush, mark the edge offline, disconnect from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, assert_never, cast
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from xiaozhi import jsonutil
from xiaozhi.errors import (
    AddressInUse,
    AuthenticationFailed,
    InvalidTopic,
    UnsupportedVersion,
)
from xiaozhi.gateway_audio import is_gateway_query
from xiaozhi.payloads import Availability, DeviceTransport, EdgeState
from xiaozhi.timestamps import wire_timestamp
from xiaozhi.tokens import bearer_token, verify_gateway_token, verify_token
from xiaozhi.topics import TopicKind, TopicTree, normalize_device_id, publish_options
from xiaozhi_edge.counters import EdgeCounters
from xiaozhi_edge.identity import ConnectionIdentity
from xiaozhi_edge.logfeed import EdgeLogFeed
from xiaozhi_edge.monitor import MONITOR_PATH, AudioMonitor
from xiaozhi_edge.outputs import (
    Close,
    Output,
    PlayAudio,
    Publish,
    SendBinary,
    SendText,
    StopAudio,
    Subscribe,
    Unsubscribe,
)
from xiaozhi_edge.session import DeviceSession
from xiaozhi_edge.settings import DeviceAuth, EdgeSettings
from xiaozhi_edge.utterances import ToneSynthesizer
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

if TYPE_CHECKING:
    from xiaozhi_edge.mqtt_udp import MqttUdpListener

__all__ = ["DEVICE_PATHS", "DEVICE_RECEIVE_BUFFER_BYTES", "EdgeServer", "run_edge"]

log = structlog.get_logger("xiaozhi.edge")

DEVICE_PATHS = ("/xiaozhi/v1/", "/xiaozhi/v1", "/")
"""Where devices connect; the reference server does not enforce the path (reference 5.1)."""
_TICK_SECONDS = 1.0
_SERVICE_RESTART = 1012
_SUBACK_WAIT_SECONDS = 5.0  # longest a hello answer waits for its subscription's SUBACK
_ANNOUNCE_BATCH = 64  # devices whose tools are re-announced per event-loop pass
_HEADERS_READ = Headers()  # stands for a device's handshake headers once they are read
DEVICE_RECEIVE_BUFFER_BYTES = 32 * 1024
"""SO_RCVBUF of each device socket (Linux doubles it: 64 KiB). Set, it stops the kernel's
autotuning, which under overload grew an unread device socket's buffer towards
``net.ipv4.tcp_rmem``'s maximum (32 MiB here): 750,000 messages waited in the edge's kernel
buffers, unseen by its bounds and counters, and no device was ever slowed
(docs/benchmarks.md, "Issue 14, point 4"). Fixed, a device whose reads pause fills its own
send buffer within a few hundred messages and waits. 64 KiB still carries a device's whole
uplink (a few KiB/s of Opus) at any round-trip time a device has.

Set on the listening socket, so each accepted socket has it from its SYN on: set after the
handshake, the window already offered was larger than the buffer, the kernel dropped what did
not fit (``TcpExtTCPRcvQDrop``) and the devices' retransmissions backed off for seconds."""


def _http_response(status: http.HTTPStatus, content_type: str, body: bytes) -> Response:
    """A plain HTTP answer on the device port. websockets closes the connection after it,
    so say so: a keep-alive client (a load balancer's health check) must not reuse it."""
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _json_response(status: http.HTTPStatus, body: dict[str, Any]) -> Response:
    return _http_response(status, "application/json", jsonutil.dumps(body))


def _handshake_fields(request: Request) -> dict[str, str]:
    """The four firmware headers, or their query-parameter twins (browsers cannot set headers)."""
    query = {k.lower(): v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
    found: dict[str, str] = {}
    for name in ("device-id", "client-id", "authorization", "protocol-version", "user-agent"):
        value = request.headers.get(name) or query.get(name) or query.get(name.replace("-", "_"))
        if value:
            found[name] = value
    return found


def _remote(ws: ServerConnection) -> str | None:
    """``host:port`` of the peer (a load balancer's, behind one), for log lines."""
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else None


def _close_fields(ws: ServerConnection) -> dict[str, Any]:
    """How a device connection ended, for its ``device_disconnected`` line: who closed it
    (``device``, ``edge``, or ``network`` when no close frame came), the code and reason.

    1006 means the TCP connection ended without a close frame (power loss, Wi-Fi gone)."""
    protocol = ws.protocol
    if protocol is None:  # an MQTT + UDP voice session's stand-in socket says it itself
        return dict(ws.close_fields)
    received, sent = protocol.close_rcvd, protocol.close_sent
    if received is not None and (sent is None or protocol.close_rcvd_then_sent):
        by, frame = "device", received
    elif sent is not None:
        by, frame = "edge", sent
    else:
        return {"closed_by": "network", "close_code": 1006, "close_reason": ""}
    return {"closed_by": by, "close_code": frame.code, "close_reason": frame.reason}


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Done callback: a background task that raised is a bug; log it with its traceback
    (asyncio would only say "Task exception was never retrieved", at garbage collection)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("edge_task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)


class _Router:
    """Reference-counted command subscriptions: filter -> the connections that hold it.

    Most filters (a device's own command topics) have one holder, kept as itself; a set is
    made only for a filter held by two or more (a group, the broadcast): a one-element set
    per device filter cost 0.2 KB per idle connection.
    """

    def __init__(self, owner: MqttOwner) -> None:
        self._owner = owner
        self._holders: dict[str, DeviceConnection | set[DeviceConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribing: dict[str, asyncio.Task[None]] = {}  # filter -> SUBSCRIBE in flight

    def add(self, conn: DeviceConnection, filters: Iterable[str]) -> set[asyncio.Task[None]]:
        """Route ``filters`` to ``conn``; returns the SUBSCRIBEs still in flight for them
        (this one's, or another connection's for a shared filter such as the broadcast):
        once they are done, the broker delivers every command on them."""
        filters = tuple(filters)
        new = []
        for topic_filter in filters:
            held = self._holders.get(topic_filter)
            if held is None:
                self._holders[topic_filter] = conn
                new.append(topic_filter)
            elif isinstance(held, set):
                held.add(conn)
            elif held is not conn:
                self._holders[topic_filter] = {held, conn}
        if new:
            task = self._spawn(self._owner.subscribe(new, qos=1))
            for topic_filter in new:
                self._subscribing[topic_filter] = task
            task.add_done_callback(lambda done: self._subscribed(new, done))
        return {self._subscribing[f] for f in filters if f in self._subscribing}

    def _subscribed(self, filters: list[str], task: asyncio.Task[None]) -> None:
        for topic_filter in filters:
            if self._subscribing.get(topic_filter) is task:
                del self._subscribing[topic_filter]

    def remove(self, conn: DeviceConnection, filters: Iterable[str]) -> None:
        gone = []
        for topic_filter in filters:
            held = self._holders.get(topic_filter)
            if isinstance(held, set):
                held.discard(conn)
                if len(held) == 1:
                    self._holders[topic_filter] = next(iter(held))
            elif held is conn:
                del self._holders[topic_filter]
                gone.append(topic_filter)
        if gone:
            self._spawn(self._owner.unsubscribe(gone))

    def route(self, topic: str) -> tuple[DeviceConnection, ...]:
        held = self._holders.get(topic)
        if held is None:
            return ()
        return tuple(held) if isinstance(held, set) else (held,)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task


class DeviceConnection:
    """One device WebSocket: its session, its output lock, its playback.

    Slotted, and its logger is bound when a line is written (connect, disconnect, a fault)
    rather than held: an edge holds 10,000 of these, mostly idle.
    """

    __slots__ = ("announced", "lock", "playback", "remote", "server", "session", "ws")

    def __init__(self, server: EdgeServer, ws: ServerConnection, session: DeviceSession) -> None:
        self.server = server
        self.ws = ws
        self.session = session
        self.lock = asyncio.Lock()  # outputs from the reader, MQTT and timers stay in order
        self.playback: asyncio.Task[None] | None = None
        self.remote = _remote(ws)  # kept: the peer's address may be gone by the disconnect
        self.announced = False  # device_connected logged

    @property
    def log(self) -> Any:
        """The logger with this connection's context: its peer and device, and the session
        once ``device_connected`` was logged."""
        session = self.session
        if self.announced:
            return log.bind(
                remote=self.remote, device_id=session.device_id, session_id=session.session_id
            )
        identity = session.identity
        return log.bind(
            remote=self.remote, device_id=identity.device_id if identity is not None else None
        )

    def fault(self, exc: Exception) -> None:
        """The session caught a bug (called inside its ``except``): log it with its
        traceback, once per fault, so an operator sees what the device got as a bare
        INTERNAL_ERROR."""
        self.log.error("edge_internal_fault", error=repr(exc), exc_info=exc)

    async def run(self) -> None:
        server = self.server
        owner = server.owner
        session = self.session
        loop = asyncio.get_running_loop()
        lock = self.lock
        try:
            async for message in self.ws:
                now = loop.time()
                wall = server.wall(now)
                if isinstance(message, str):
                    outputs = session.on_text(message, now, wall)
                else:
                    server.monitor.tap(self, message, now)
                    outputs = session.on_binary(message, now, wall)
                if not outputs:
                    pass
                elif not lock.locked() and all(type(o) is Publish for o in outputs):
                    # Telemetry: publishes only, and nothing of this device's is being
                    # executed, so order holds without taking the lock or a coroutine.
                    for output in outputs:
                        server.publish(cast(Publish, output))
                    del output
                else:
                    await self.execute(outputs)
                # An idle device waits in the `async for` for minutes: what this message
                # made (its status payload, the pong) must not wait there with it.
                del message, outputs
                if not owner.room.is_set():
                    server.counters.reads_paused += 1
                    await owner.room.wait()  # backpressure: pause this device's reads
        except ConnectionClosed:
            pass
        finally:
            await self.finish()

    async def finish(self) -> None:
        self.log.info("device_disconnected", **_close_fields(self.ws))
        if self.playback is not None:
            self.playback.cancel()
        now = asyncio.get_running_loop().time()
        outputs = self.session.on_close(now, wire_timestamp(time.time()))
        async with self.lock:
            for output in outputs:  # only publishes and unsubscribes matter now
                if isinstance(output, Publish | Unsubscribe):
                    await self._perform(output)
        self.server.forget(self)

    def execute_soon(self, outputs: list[Output]) -> None:
        """Execute outputs produced outside the reader (a command, a timer)."""
        if outputs:
            self.server.spawn(self.execute(outputs))

    async def execute(self, outputs: list[Output]) -> None:
        async with self.lock:
            for output in outputs:
                await self._perform(output)

    async def _perform(self, output: Output) -> None:
        server = self.server
        match output:
            case Publish():
                server.publish(output)
            case SendText(text=text):
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.send(text)
            case SendBinary(data=data):
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.send(data)
            case Subscribe(filters=filters):
                in_flight = server.router.add(self, filters)
                server.claim(self)
                if not self.announced:
                    self._log_connected()
                if in_flight:
                    # Hold the outputs after it (the server hello) until the broker has the
                    # subscription: a command sent the moment the device is greeted must
                    # reach it. Bounded, so a hung broker cannot hold a device forever; the
                    # owner subscribes again on reconnect either way.
                    await asyncio.wait(in_flight, timeout=_SUBACK_WAIT_SECONDS)
            case Unsubscribe(filters=filters):
                server.router.remove(self, filters)
            case PlayAudio():
                self._stop_playback()
                self.playback = server.spawn(self._play(output))
            case StopAudio():
                self._stop_playback()
            case Close(code=code, reason=reason):
                self._stop_playback()
                server.spawn(self.ws.close(code, reason))
            case _:
                # Exhaustive over outputs.Output: a new output kind fails mypy here.
                assert_never(output)

    def _log_connected(self) -> None:
        session = self.session
        identity = session.identity
        self.announced = True
        self.log.info(
            "device_connected",
            device_kind=str(session.kind),
            protocol_version=session.binary_version,
            client_id=identity.client_id if identity is not None else None,
            authenticated=identity is not None and identity.authenticated,
            **({"via": "mqtt_gateway"} if session.via_gateway else {}),
        )

    def _stop_playback(self) -> None:
        if self.playback is not None and not self.playback.done():
            self.playback.cancel()  # a cut playback never runs its `then`
        self.playback = None

    async def _play(self, audio: PlayAudio) -> None:
        """Send frames paced at frame duration after a pre-buffer (reference 1.7, 5.2)."""
        loop = asyncio.get_running_loop()
        period = audio.frame_duration_ms / 1000
        start = loop.time()
        try:
            for index, frame in enumerate(audio.frames):
                due = start + max(0, index - audio.prebuffer_frames + 1) * period
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the device's 2.4 s decode queue
                await self.ws.send(frame)
            if audio.then:
                self.playback = None
                await self.execute(list(audio.then))
        except ConnectionClosed:
            pass


class EdgeServer:
    """One edge worker process: the WebSocket server, its sessions and its MQTT owner."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.topics = TopicTree(base=settings.base_topic)
        self.limits = settings.limits()
        self.counters = EdgeCounters()
        self.synthesizer = ToneSynthesizer()
        self.started_at = time.monotonic()
        edge_topic = self.topics.bridge_edge(settings.edge_id)
        qos, retain = publish_options(TopicKind.BRIDGE_EDGE)
        self._edge_state = (edge_topic, qos, retain)
        self.owner = MqttOwner(
            settings.mqtt_url,
            client_id=f"xiaozhi-{settings.edge_id}",
            will=OutMessage(edge_topic, self._edge_payload(Availability.OFFLINE), qos, retain),
            birth=[OutMessage(edge_topic, self._edge_payload(Availability.ONLINE), qos, retain)],
            on_message=self._on_mqtt,
            max_queued_messages=settings.max_queued_mqtt_messages,
            max_queued_bytes=settings.max_queued_mqtt_bytes,
            tls_context=settings.mqtt_tls(),
            # A persistent session: commands published while the broker restarts or this
            # edge reconnects wait at the broker for it, instead of going nowhere
            # (docs/operations.md section 9). A restarted edge starts a fresh one.
            clean_session=False,
        )
        self.router = _Router(self.owner)
        self.connections: set[DeviceConnection] = set()
        self.idle = asyncio.Event()  # set while no device is connected (shutdown, tests)
        self.idle.set()
        self.by_device: dict[str, DeviceConnection] = {}
        self.monitor = AudioMonitor(self)  # seed 004, across edge processes
        # Its warnings and errors, for the hub's live stream (edge/logfeed.py).
        log_topic = self.topics.bridge_edge_log(settings.edge_id)
        self.log_feed = EdgeLogFeed(self.owner, log_topic, settings.edge_id, self.counters)
        # Who each upgrading connection said it was, from the handshake to its handler. Weak:
        # an upgrade that fails after the check (a bad Sec-WebSocket-Key) never reaches the
        # handler, and its entry must go with the connection, not stay forever.
        self._identities: weakref.WeakKeyDictionary[ServerConnection, ConnectionIdentity | None]
        self._identities = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: Server | None = None
        self.mqtt_udp: MqttUdpListener | None = None  # real firmware's MQTT + UDP, when on
        self._ticker: asyncio.Task[None] | None = None
        self._announcing: asyncio.Task[None] | None = None  # re-announcing MCP tools
        # Only the public half: this process can check device tokens, never mint one.
        self._token_key = (
            settings.token_public_key() if settings.device_auth is DeviceAuth.TOKEN else None
        )
        # A gateway's shared secret, by contrast, could mint its tokens (docs/edge.md).
        secret = settings.gateway_secret
        self._gateway_secret = secret.get_secret_value().encode() if secret is not None else None
        self._wall_at = -1.0
        self._wall_text = ""
        self.metrics = CollectorRegistry(auto_describe=False)
        self.metrics.register(_EdgeCollector(self))

    def _edge_payload(self, state: Availability) -> bytes:
        return EdgeState(
            state=state, edge_id=self.settings.edge_id, timestamp=wire_timestamp(time.time())
        ).to_wire()

    @property
    def port(self) -> int:
        """The port devices connect to, once started: the bound one when the setting is 0."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    # ------------------------------------------------------------------ lifetime

    async def start(self, *, reuse_port: bool = False) -> None:
        self.log_feed.start()  # first: the warnings below are queued until the broker is up
        if self.settings.device_auth is DeviceAuth.OPEN:
            log.warning("device_auth_open", hint="any device may connect; use token in production")
        if self.settings.gateway_secret is not None and self._token_key is None:
            log.warning(
                "gateway_secret_unused",
                hint="XIAOZHI_GATEWAY_SECRET is checked with XIAOZHI_DEVICE_AUTH=token only; "
                f"in {self.settings.device_auth} mode a gateway is admitted as its devices are",
            )
        host, port = self.settings.edge_host, self.settings.edge_port
        try:
            self._server = await self._serve(host, port, reuse_port=reuse_port)
        except OSError as err:
            self.log_feed.stop()
            raise AddressInUse(
                f"cannot listen on {host}:{port}: {err.strerror or err} "
                f"(set XIAOZHI_EDGE_PORT to another port, or 0 for any free one)"
            ) from err
        await self.owner.start()  # only once devices can be served: nothing to undo before
        await self.monitor.start()
        self._ticker = asyncio.create_task(self._tick(), name="edge-ticker")
        self._ticker.add_done_callback(_log_failure)  # a dead ticker stops every timeout
        log.info("edge_listening", port=self.port, edge_id=self.settings.edge_id)
        if self.settings.device_mqtt_port is not None:
            # Imported here: the transport builds on DeviceConnection from this module.
            from xiaozhi_edge.mqtt_udp import MqttUdpListener

            self.mqtt_udp = MqttUdpListener(self)
            await self.mqtt_udp.start(reuse_port=reuse_port)

    async def _serve(self, host: str, port: int, *, reuse_port: bool) -> Server:
        server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=2 * self.limits.max_frame_bytes,  # the session answers up to 2x, then closes
            max_queue=4,  # worst case per connection: 4 x max_size buffered (docs/edge.md)
            compression=None,  # per-message deflate costs memory per connection
            reuse_port=reuse_port,
            ssl=self.settings.device_tls(),  # wss:// when a certificate is set
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
        )
        for sock in server.sockets:  # accepted sockets inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DEVICE_RECEIVE_BUFFER_BYTES)
        return server

    async def stop(self) -> None:
        """Stop accepting, close devices with 1012, flush their status, go offline."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        if self.mqtt_udp is not None:
            await self.mqtt_udp.stop()
        devices = set()
        for conn in list(self.connections):
            devices.add(conn.ws)
            self.spawn(conn.ws.close(_SERVICE_RESTART, "edge restarting"))
        for ws in list(self._server.connections):  # audio monitor listeners: they would hold
            if ws not in devices:  # the stop for the whole shutdown timeout
                self.spawn(ws.close(_SERVICE_RESTART, "edge restarting"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._server.wait_closed(), self.settings.shutdown_timeout_seconds
            )
        if self._ticker is not None:
            self._ticker.cancel()
        if self._announcing is not None:
            self._announcing.cancel()
        self.log_feed.stop()
        topic, qos, retain = self._edge_state
        self.owner.retain(OutMessage(topic, self._edge_payload(Availability.OFFLINE), qos, retain))
        await self.owner.stop(flush_seconds=self.settings.shutdown_timeout_seconds)
        self._server = None

    def wall(self, now: float) -> str:
        """The wall-clock timestamp for what arrives at loop time `now`.

        Formatting it cost 4.7 µs, 6 % of the edge's time at 1,000 devices when it was made
        for every message (docs/benchmarks.md). uvloop's clock moves once per event-loop
        pass, so every message read in one pass shares one string (asyncio's moves on each
        call, which only makes the cache miss).
        """
        if now != self._wall_at:
            self._wall_at = now
            self._wall_text = wire_timestamp(time.time())
        return self._wall_text

    def publish(self, output: Publish) -> None:
        """Hand a session's publish to the broker connection (never waits).

        A retained status (QoS 1) is remembered, to publish again after a broker restart
        that lost it; a retained sensor reading (QoS 0) is not: the device's next reading
        replaces it, and remembering every device's every sensor would grow with the fleet.
        """
        message = OutMessage(output.topic, output.payload, output.qos, output.retain)
        if output.retain and output.qos:
            self.owner.retain(message)
        else:
            self.owner.publish_nowait(message)

    def announce_tools(self) -> None:
        """A hub replica came online (edge/monitor.py): publish the ``mcp_tools`` event of
        every device held here that listed its tools, again, for that hub to keep.

        Spread over event-loop passes, :data:`_ANNOUNCE_BATCH` devices each, and paused, as a
        device's reads are, while the MQTT queue is above its high watermark. A replica
        coming online during a pass starts it over: it must hear every device too.
        """
        if self._announcing is not None:
            self._announcing.cancel()
        self._announcing = self.spawn(self._announce_tools()) if self.by_device else None

    async def _announce_tools(self) -> None:
        for done, (device_id, conn) in enumerate(list(self.by_device.items()), 1):
            if self.by_device.get(device_id) is not conn:
                continue  # it left (or was superseded) during the pass
            outputs: list[Output] = []
            if conn.session.announce_tools(outputs):
                self.counters.mcp_tools_announced_again += 1
                for output in outputs:
                    self.publish(cast(Publish, output))
            if done % _ANNOUNCE_BATCH == 0:
                await asyncio.sleep(0)  # the next batch in the next pass
            if not self.owner.room.is_set():
                await self.owner.room.wait()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def _tick(self) -> None:
        """One ticker for every session's deadlines (no timer task per connection)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_TICK_SECONDS)
            now = loop.time()
            wall = None
            for conn in list(self.connections):
                deadline = conn.session.next_deadline()
                if deadline is not None and deadline <= now:
                    wall = wall or wire_timestamp(time.time())
                    conn.execute_soon(conn.session.on_timer(now, wall))

    # ------------------------------------------------------------------ handshake

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/health":
            return _json_response(http.HTTPStatus.OK, self.health())
        if path == "/stats":
            return _json_response(http.HTTPStatus.OK, self.stats())
        if path == "/metrics":
            body = generate_latest(self.metrics)
            return _http_response(http.HTTPStatus.OK, "text/plain; version=0.0.4", body)
        if path == MONITOR_PATH:
            return self._check_monitor(request)
        if path not in DEVICE_PATHS:
            return _json_response(http.HTTPStatus.NOT_FOUND, {"error": f"no such path {path!r}"})
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _json_response(
                http.HTTPStatus.OK, {"status": "ok", "hint": "devices connect here by WebSocket"}
            )
        via_gateway = is_gateway_query(urlsplit(request.path).query)
        try:
            identity = self._authenticate(_handshake_fields(request), via_gateway=via_gateway)
        except AuthenticationFailed as err:
            self.counters.count_error(err.code.name)
            log.info("device_refused", reason=err.reason)
            return _json_response(http.HTTPStatus.UNAUTHORIZED, {"error": err.reason})
        except (InvalidTopic, UnsupportedVersion) as err:
            self.counters.count_error("INVALID_DATA_FORMAT")
            return _json_response(http.HTTPStatus.BAD_REQUEST, {"error": str(err)})
        self._identities[connection] = identity
        return None

    def _authenticate(
        self, fields: dict[str, str], *, via_gateway: bool
    ) -> ConnectionIdentity | None:
        raw_id = fields.get("device-id")
        mode = self.settings.device_auth
        if raw_id is None:
            if mode is DeviceAuth.OPEN:
                return None  # a seed-style client names itself in device_register
            raise AuthenticationFailed("Device-Id header (or device-id query parameter) required")
        authenticated = False
        if mode is DeviceAuth.TOKEN and via_gateway:
            self._verify_gateway(fields, raw_id)
            authenticated = True
        elif mode is DeviceAuth.TOKEN:
            assert self._token_key is not None
            verify_token(
                self._token_key,
                bearer_token(fields.get("authorization")),
                client_id=fields.get("client-id", ""),
                device_id=raw_id,
                now=int(time.time()),
            )
            authenticated = True
        elif mode is DeviceAuth.ALLOWLIST:
            allowed = {normalize_device_id(d) for d in self.settings.allowed_devices}
            if normalize_device_id(raw_id) not in allowed:
                raise AuthenticationFailed("device not in the allow-list")
            authenticated = True
        return ConnectionIdentity.from_handshake(
            raw_id,
            client_id=fields.get("client-id"),
            protocol_version=fields.get("protocol-version"),
            authenticated=authenticated,
            user_agent=fields.get("user-agent"),
        )

    def _verify_gateway(self, fields: dict[str, str], device_id: str) -> None:
        """A xiaozhi-mqtt-gateway's connection in token mode: its HMAC token, the xinnan
        server's, checked with the shared secret; device tokens are not what it sends.

        Raises:
            AuthenticationFailed: no secret set here, or the token does not verify.
        """
        if self._gateway_secret is None:
            raise AuthenticationFailed(
                "a xiaozhi-mqtt-gateway connection (?from=mqtt_gateway) needs "
                "XIAOZHI_GATEWAY_SECRET on the edge, set to the gateway's SERVER_SECRET"
            )
        verify_gateway_token(
            self._gateway_secret,
            bearer_token(fields.get("authorization")),
            client_id=fields.get("client-id"),
            device_id=device_id,
            now=int(time.time()),
            max_age_seconds=self.settings.gateway_token_max_age_seconds,
        )

    def _check_monitor(self, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        key = self.settings.monitor_api_key
        if key and query.get("key", [""])[-1] != key and request.headers.get("X-API-Key") != key:
            return _json_response(http.HTTPStatus.UNAUTHORIZED, {"error": "monitor key required"})
        raw = query.get("device_id", [""])[-1]
        try:
            normalize_device_id(raw)
        except InvalidTopic as err:
            return _json_response(http.HTTPStatus.BAD_REQUEST, {"error": str(err)})
        return None

    # ------------------------------------------------------------------ connections

    def _handle(self, ws: ServerConnection) -> Awaitable[None]:
        """websockets' handler. Not a coroutine itself: it returns the connection's (or the
        monitor's) coroutine, which websockets awaits, so that an idle device holds one
        coroutine frame rather than two."""
        request = ws.request
        path = urlsplit(request.path).path if request else ""
        if path == MONITOR_PATH:
            return self.monitor.serve(ws)
        identity = self._identities.pop(ws, None)
        # A xiaozhi-mqtt-gateway bridging MQTT + UDP firmware (reference §2.6).
        via_gateway = request is not None and is_gateway_query(urlsplit(request.path).query)
        # The handshake is read (`_process_request` took the identity from it); websockets
        # would keep its headers and our response's for the connection's life, about 3 KB
        # per device. The request itself stays: websockets tells frames from it by its
        # presence.
        if request is not None:
            request.headers = _HEADERS_READ
        ws.response = None
        session = self.new_session(identity, via_gateway=via_gateway)
        conn = DeviceConnection(self, ws, session)
        session.on_fault = conn.fault  # the connection logs its session's bugs
        self.connections.add(conn)
        self.idle.clear()
        return conn.run()

    def new_session(
        self,
        identity: ConnectionIdentity | None,
        *,
        on_fault: Callable[[Exception], None] | None = None,
        via_gateway: bool = False,
        transport: DeviceTransport = DeviceTransport.WEBSOCKET,
    ) -> DeviceSession:
        """A device session with this edge's settings, for either transport's connection;
        ``on_fault`` logs an internal fault with its connection's context."""
        now = asyncio.get_running_loop().time()
        return DeviceSession(
            identity,
            edge_id=self.settings.edge_id,
            topics=self.topics,
            limits=self.limits,
            counters=self.counters,
            language=self.settings.language,
            forward_utterances=self.settings.forward_utterances,
            stream_utterances=self.settings.stream_utterances,
            wake_words=self.settings.wake_words,
            synthesizer=self.synthesizer,
            now=now,
            wall=self.wall(now),  # one string for every device connecting in this pass
            on_fault=on_fault,
            via_gateway=via_gateway,
            transport=transport,
        )

    def claim(self, conn: DeviceConnection) -> None:
        """A session announced its device: an older connection of the same device yields."""
        device_id = conn.session.device_id
        if device_id is None:
            return
        older = self.by_device.get(device_id)
        self.by_device[device_id] = conn
        if older is not None and older is not conn:
            now = asyncio.get_running_loop().time()
            older.execute_soon(older.session.supersede(now, wire_timestamp(time.time())))

    def forget(self, conn: DeviceConnection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self.idle.set()
        device_id = conn.session.device_id
        if device_id is not None and self.by_device.get(device_id) is conn:
            del self.by_device[device_id]
            # Its last status is published (retained at the broker); this edge need not keep
            # a copy for a device it no longer holds.
            self.owner.forget(self.topics.status(device_id))

    def _on_mqtt(self, topic: str, payload: bytes) -> None:
        """A command for devices held here (their own, a group's or broadcast), or the audio
        monitor's traffic between edges."""
        holders = self.router.route(topic)
        if not holders and self.monitor.handles(topic):
            self.monitor.on_mqtt(topic, payload, asyncio.get_running_loop().time())
            return
        if not holders:
            # Its device left (the unsubscribe was on its way): nobody here to deliver to.
            self.counters.commands_unrouted += 1
            return
        loop = asyncio.get_running_loop()
        now, wall = loop.time(), wire_timestamp(time.time())
        if topic.endswith("/claim") and self.topics.parse(topic).kind is TopicKind.UTTERANCE_CLAIM:
            for conn in holders:
                conn.execute_soon(conn.session.on_claim(payload, now, wall))
            return
        for conn in holders:
            conn.execute_soon(conn.session.on_command(payload, now, wall))

    # ------------------------------------------------------------------ observability

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "edge_id": self.settings.edge_id,
            "mqtt_connected": self.owner.connected.is_set(),
            "connections": len(self.connections),
        }

    def stats(self) -> dict[str, Any]:
        """Seed 000's `/stats` fields, then the edge's own counters."""
        uptime = time.monotonic() - self.started_at
        counters = self.counters.snapshot()
        mqtt = self.owner.stats
        return {
            "frames_received": counters["frames_received"],
            "bytes_received": counters["bytes_received"],
            "errors": counters["errors_total"],
            "uptime_seconds": round(uptime, 3),
            "fps": counters["frames_received"] / max(uptime, 1.0),
            "edge_id": self.settings.edge_id,
            "pid": os.getpid(),
            "connections": len(self.connections),
            "devices": len(self.by_device),
            "monitor_listeners": self.monitor.listener_count,
            "tasks": len(asyncio.all_tasks()),  # a leak shows here first (bench churn)
            "counters": counters,
            "mqtt": {
                "connected": mqtt.connected,
                "published": mqtt.published,
                "acknowledged": mqtt.acknowledged,
                "queued": mqtt.queued,
                "queued_bytes": mqtt.queued_bytes,
                "inflight": mqtt.inflight,
                "dropped_qos0": mqtt.dropped_qos0,
                "dropped_qos1": mqtt.dropped_qos1,
                "requeued_qos1": mqtt.requeued_qos1,
                "connects": mqtt.connects,
                "retained_remembered": mqtt.retained_remembered,
                "socket_backlog_bytes": mqtt.socket_backlog_bytes,
            },
            "handshakes_in_flight": len(self._identities),
            **({"mqtt_udp": self.mqtt_udp.stats()} if self.mqtt_udp is not None else {}),
        }


class _EdgeCollector:
    """Prometheus metrics read from the counters at scrape time (nothing on the hot path)."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server

    def collect(self) -> Iterable[Any]:
        stats = self.server.stats()
        counters = stats["counters"]
        for name in ("frames_received", "bytes_received", "text_messages", "binary_frames",
                     "utterances", "voice_commands", "commands_delivered", "rate_limited",
                     "dropped_audio_frames", "duplicate_commands",
                     "commands_unrouted", "reads_paused", "logs_published",
                     "logs_dropped", "mcp_tools_announced_again"):  # fmt: skip
            if name in counters:
                yield CounterMetricFamily(
                    f"xiaozhi_edge_{name}", name.replace("_", " "), counters[name]
                )
        errors = CounterMetricFamily(
            "xiaozhi_edge_errors", "refused input by code", labels=["code"]
        )
        for code, count in counters.get("errors", {}).items():
            errors.add_metric([code], count)
        yield errors
        yield GaugeMetricFamily(
            "xiaozhi_edge_connections", "open device WebSockets", stats["connections"]
        )
        mqtt = stats["mqtt"]
        yield GaugeMetricFamily(
            "xiaozhi_edge_mqtt_connected", "broker connection", int(mqtt["connected"])
        )
        yield GaugeMetricFamily(
            "xiaozhi_edge_mqtt_queued", "messages waiting for the broker", mqtt["queued"]
        )
        yield GaugeMetricFamily(
            "xiaozhi_edge_mqtt_queued_bytes",
            "bytes waiting for the broker (queued and in flight, as bounded)",
            mqtt["queued_bytes"],
        )
        dropped = CounterMetricFamily(
            "xiaozhi_edge_mqtt_dropped", "messages dropped, by QoS", labels=["qos"]
        )
        dropped.add_metric(["0"], mqtt["dropped_qos0"])
        dropped.add_metric(["1"], mqtt["dropped_qos1"])
        yield dropped
        if "mqtt_udp" in stats:
            yield from _mqtt_udp_metrics(stats["mqtt_udp"])


def _mqtt_udp_metrics(stats: dict[str, Any]) -> Iterable[Any]:
    """The MQTT + UDP transport's figures (edge/mqtt_udp.py), when it is on."""
    yield GaugeMetricFamily(
        "xiaozhi_edge_mqtt_device_links", "open firmware MQTT connections", stats["links"]
    )
    yield GaugeMetricFamily(
        "xiaozhi_edge_udp_voice_sessions", "voice sessions with a UDP key", stats["voice_sessions"]
    )
    for name in ("datagrams_received", "datagrams_sent", "sequence_gaps", "hellos"):
        yield CounterMetricFamily(f"xiaozhi_edge_udp_{name}", name.replace("_", " "), stats[name])
    dropped = CounterMetricFamily(
        "xiaozhi_edge_udp_datagrams_dropped", "UDP datagrams dropped, by reason", labels=["reason"]
    )
    for reason, count in stats["datagrams_dropped"].items():
        dropped.add_metric([reason], count)
    yield dropped
    refused = CounterMetricFamily(
        "xiaozhi_edge_mqtt_device_refused", "firmware MQTT connects refused", labels=["code"]
    )
    for code, count in stats["links_refused"].items():
        refused.add_metric([code], count)
    yield refused


async def run_edge(
    settings: EdgeSettings,
    *,
    reuse_port: bool = False,
    stop: asyncio.Event | None = None,
    listening: Callable[[EdgeServer], None] | None = None,
) -> None:
    """Run one edge worker until ``stop`` is set (the CLI sets it on Ctrl-C) or cancelled.

    ``listening`` is called once the server accepts devices, with the server: its ``port`` is
    the bound one (``XIAOZHI_EDGE_PORT=0`` picks a free port).
    """
    server = EdgeServer(settings)
    await server.start(reuse_port=reuse_port)
    try:
        if listening is not None:
            listening(server)
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()
