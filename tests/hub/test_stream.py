"""The live stream served for real (issue 15, point 1): ``/api/v1/stream`` on a running hub,
fed from a real Mosquitto by a real edge and simulated device, read with
:class:`~xiaozhi_runtime.stream_client.StreamClient` (and raw frames where the wire is the point).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import StartEdge
from tests.hub.conftest import READ_KEY, WRITE_KEY
from tests.hub.test_hub_processes import _hub_process
from tests.support import LineReader, Recorder
from xiaozhi.errors import ErrorCode
from xiaozhi.stream_frame import (
    Flag,
    MessageType,
    StreamMessage,
    StreamVersion,
    decode_message,
    encode_message,
)
from xiaozhi_edge.logfeed import LOG_BURST
from xiaozhi_hub.http import RunningHub, run_hub
from xiaozhi_hub.http.stream import WS_MAX_SIZE
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.settings import HubSettings
from xiaozhi_runtime.stream_client import DATA_TYPES, StreamClient, StreamClosed, stream_url
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

V1, V3 = StreamVersion.V1, StreamVersion.V3

pytestmark = pytest.mark.integration  # a real Mosquitto, hub, edge and simulator


async def next_matching(
    stream: StreamClient, check: Callable[[StreamMessage], bool], within: float = 15.0
) -> StreamMessage:
    """The first message from ``stream`` that passes ``check`` (others are skipped)."""

    async def find() -> StreamMessage:
        async for msg in stream:
            if check(msg):
                return msg
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(find(), within)


def data_of(kind: str, device_id: str | None = None) -> Callable[[StreamMessage], bool]:
    def check(msg: StreamMessage) -> bool:
        if msg.type not in DATA_TYPES or msg.data.get("kind") != kind:
            return False
        return device_id is None or msg.data.get("device_id") == device_id

    return check


async def test_a_device_that_connects_shows_up_with_its_events_and_voice_steps(
    running_hub: RunningHub,
    hub_settings: HubSettings,
    start_edge: StartEdge,
    sim_settings: SimSettings,
    watcher: Recorder,
) -> None:
    t = running_hub.service.topics
    base = hub_settings.base_topic
    edge = await start_edge(base_topic=base)
    unit = running_hub.service.stream
    assert unit.events_owner is None  # nobody watches: the hub pays nothing
    async with StreamClient(running_hub.url, api_key=READ_KEY, topics=[f"{base}/#"]) as stream:
        # the first client opens the stream's own events/+ connection
        await asyncio.wait_for(unit.events_subscribed.wait(), 10)
        assert unit.events_owner is not None
        assert t.all_events() in unit.events_owner.subscriptions
        assert t.all_events() not in running_hub.service.owner.subscriptions  # never the hub's
        assert stream.version is StreamVersion.V3
        assert stream.hello["versions"] == [1, 2, 3]
        # The hub's own state is there from the start (retained), flagged BROADCAST.
        state = await next_matching(stream, data_of("bridge_state"))
        assert state.data["retained"] is True
        assert state.flags & Flag.BROADCAST
        assert state.flags & Flag.PRIORITY

        url = f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/"
        device = WsDevice(
            make_identity(name="stream-live"), sim_settings.model_copy(update={"sim_ws_url": url})
        )
        await device.start()
        try:
            await device.wake()
            device_id = device.identity.device_id
            # Both arrive together; the PRIORITY one may pass the other.
            first = await next_matching(
                stream,
                lambda m: data_of("status", device_id)(m) or data_of("device_connected")(m),
            )
            is_status = data_of("status", device_id)
            then = data_of("device_connected") if is_status(first) else is_status
            second = await next_matching(stream, then)
            status, connected = (first, second) if is_status(first) else (second, first)
            assert status.type is MessageType.ECG_DATA
            assert status.data["payload"]["status"] == "connected"
            assert connected.type is MessageType.ANOMALY_ALERT
            assert connected.flags & Flag.PRIORITY
            assert connected.data["payload"]["device_id"] == device_id

            # Its events come too, from the first one: the stream's events/+ connection
            # was there before the device (its MCP tools, announced on connecting, included).
            tools = await next_matching(
                stream,
                lambda m: (
                    data_of("device_events", device_id)(m) and m.data["event_type"] == "mcp_tools"
                ),
            )
            assert "self.audio_speaker.set_volume" in tools.data["payload"]["tools"]
            events = t.device_events(device_id)
            step = {"event_type": "response", "device_id": device_id, "text": "Done."}
            await watcher.publish(events, step)
            answer = await next_matching(
                stream,
                lambda m: (
                    data_of("device_events", device_id)(m) and m.data["event_type"] == "response"
                ),
            )
            assert answer.type is MessageType.PREDICTION_RESULT
            assert answer.data["event_type"] == "response"
            assert answer.data["payload"]["text"] == "Done."

            # A client that subscribes now starts with the fleet: the retained status.
            async with StreamClient(
                running_hub.url, api_key=READ_KEY, topics=[f"{base}/status/+"], versions=[1]
            ) as late:
                assert late.version is StreamVersion.V1
                known = await next_matching(late, data_of("status", device_id))
                assert known.data["retained"] is True
                assert known.timestamp_us is None  # V1: no timestamp
                assert known.flags == Flag(0)
        finally:
            await device.stop()
        gone = await next_matching(stream, data_of("device_disconnected"))
        assert gone.data["payload"]["device_id"] == device_id
        stats = running_hub.service.stats()["stream"]
        assert stats["offered"] > 0
        # Ours (V3); the late V1 client's session may still be closing on the hub's side.
        assert [s["version"] for s in stats["sessions"]].count(3) == 1


async def test_a_bad_crc_gets_an_error_frame_and_the_connection_survives(
    running_hub: RunningHub,
) -> None:
    async with StreamClient(running_hub.url, api_key=READ_KEY, topics=[]) as stream:
        frame = bytearray(
            encode_message(StreamMessage(MessageType.PING, {"n": 1}, StreamVersion.V3, Flag(0), 1))
        )
        frame[-1] ^= 0x01
        await stream.send_raw(bytes(frame))
        error = await next_matching(stream, lambda m: m.type is MessageType.ERROR)
        assert error.data["code"] == ErrorCode.CHECKSUM_MISMATCH == 0x101
        assert error.data["name"] == "CHECKSUM_MISMATCH"
        pong = await stream.ping({"n": 2})
        assert pong.data == {"n": 2}
        # Other refusals, each with the seed's code, none fatal.
        await stream.send(MessageType.ECG_DATA, {"x": 1})
        denied = await next_matching(stream, lambda m: m.type is MessageType.ERROR)
        assert denied.data["code"] == ErrorCode.PERMISSION_DENIED
        with pytest.raises(StreamClosed) as refused:
            await stream.subscribe(["a/#/b"])
        assert refused.value.code == ErrorCode.INVALID_DATA_FORMAT
        assert await stream.subscribe(["x/+"]) == ["x/+"]
        assert await stream.unsubscribe(["x/+"]) == []


async def test_a_message_over_the_frame_limit_is_refused_by_the_server(
    running_hub: RunningHub,
) -> None:
    """uvicorn's ws_max_size is the largest stream frame, not its default 16 MiB."""
    url = stream_url(running_hub.url)
    async with connect(
        url, additional_headers={"X-API-Key": READ_KEY}, max_size=None, compression=None
    ) as ws:
        assert decode_message(await ws.recv()).type is MessageType.PROTOCOL_NEGOTIATION
        await ws.send(bytes(WS_MAX_SIZE + 1))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
    assert ws.close_code == 1009  # RFC 6455: message too big


async def test_an_acked_version_check_is_acked_first_through_the_real_endpoint(
    running_hub: RunningHub,
) -> None:
    """The ack rule on the wire: a VERSION_CHECK sent with ACK_REQUIRED (and the key, as a
    browser sends it) gets HEARTBEAT {"ack": seq} in V1 framing, then the V3 answer."""
    async with connect(stream_url(running_hub.url)) as ws:
        hello = decode_message(await asyncio.wait_for(ws.recv(), 10))
        assert hello.data["auth"] == "required"
        check = {"versions": [3], "api_key": READ_KEY, "seq": 41}
        await ws.send(
            encode_message(
                StreamMessage(MessageType.VERSION_CHECK, check, V3, Flag.ACK_REQUIRED, 1)
            )
        )
        ack = decode_message(await asyncio.wait_for(ws.recv(), 10))
        answer = decode_message(await asyncio.wait_for(ws.recv(), 10))
    assert (ack.type, ack.data, ack.version) == (MessageType.HEARTBEAT, {"ack": 41}, 1)
    assert (answer.type, answer.data["version"]) == (MessageType.VERSION_CHECK, 3)


async def test_credentials_in_the_header_or_the_version_check(running_hub: RunningHub) -> None:
    url = running_hub.url
    with pytest.raises(StreamClosed) as bad:
        async with StreamClient(url, api_key="wrong"):
            pass
    assert bad.value.code == ErrorCode.AUTHENTICATION_FAILED
    with pytest.raises(StreamClosed) as none:
        async with StreamClient(url):
            pass
    assert none.value.code == ErrorCode.AUTHENTICATION_FAILED
    # A browser cannot set headers: the key goes in the VERSION_CHECK.
    async with StreamClient(url, api_key=WRITE_KEY, credentials_in_frame=True) as stream:
        assert stream.hello["auth"] == "required"
        assert stream.topics == ["#"]
    # A JWT from the REST API, as a header or in the frame.
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/api/v1/auth/token", headers={"X-API-Key": READ_KEY})
    token = answer.json()["data"]["access_token"]
    for in_frame in (False, True):
        async with StreamClient(url, token=token, credentials_in_frame=in_frame) as stream:
            assert (await stream.ping({"jwt": in_frame})).data == {"jwt": in_frame}
    with pytest.raises(StreamClosed) as forged:
        async with StreamClient(url, token=token + "x", credentials_in_frame=True):
            pass
    assert forged.value.code == ErrorCode.AUTHENTICATION_FAILED
    with pytest.raises(StreamClosed) as unsupported:
        async with StreamClient(url, api_key=READ_KEY, versions=[4]):
            pass
    assert unsupported.value.code == ErrorCode.INVALID_PROTOCOL_VERSION


@pytest.fixture
async def guarded_hub(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> AsyncIterator[RunningHub]:
    update = {"sign_in_seconds": 1.5, "stream_max_signing_in": 2}
    async with run_hub(hub_settings.model_copy(update=update), home=engine.home) as running:
        yield running


async def test_sockets_that_never_sign_in_are_capped_then_closed_at_the_deadline(
    guarded_hub: RunningHub,
) -> None:
    """Opened, the first frame read, nothing sent: such sockets were held open for free."""
    hub = guarded_hub
    url = stream_url(hub.url)
    async with contextlib.AsyncExitStack() as stack:
        idle = [await stack.enter_async_context(connect(url)) for _ in range(2)]
        for ws in idle:
            assert decode_message(await ws.recv()).data["auth"] == "required"
        assert hub.service.stream.signing_in == 2
        # One more without credentials is refused at once, and says why.
        async with connect(url) as busy:
            refusal = decode_message(await asyncio.wait_for(busy.recv(), 10))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(busy.recv(), 10)
        assert refusal.data["code"] == ErrorCode.RATE_LIMIT_EXCEEDED
        assert busy.close_code == 1013
        # Credentials on the upgrade request are not counted: it gets in.
        async with StreamClient(hub.url, api_key=READ_KEY, topics=[]) as stream:
            assert (await stream.ping({"n": 1})).data == {"n": 1}
        # The idle ones are closed at the deadline: ERROR 0x202, then 1008.
        for ws in idle:
            error = decode_message(await asyncio.wait_for(ws.recv(), 10))
            assert error.data["code"] == ErrorCode.AUTHENTICATION_FAILED
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1008
    async with httpx.AsyncClient(base_url=hub.url, headers={"X-API-Key": READ_KEY}) as http:
        stats = (await http.get("/api/v1/stats")).json()["data"]["stream"]
        metrics = (await http.get("/metrics")).text
    assert stats["signing_in"] == 0
    assert stats["refused"] == {"busy": 1, "timeout": 2}
    assert 'xiaozhi_hub_stream_refused_total{reason="timeout"} 2.0' in metrics
    assert "xiaozhi_hub_stream_signing_in 0.0" in metrics


async def test_listen_sockets_that_never_sign_in_share_the_bound(guarded_hub: RunningHub) -> None:
    """The audio listen endpoint was bounded by its deadline only: unsigned sockets there
    count against the same bound as the stream's, and are let go at its deadline too."""
    hub = guarded_hub
    listen = hub.url.replace("http", "ws", 1) + "/api/v1/devices/somebody/listen"
    async with contextlib.AsyncExitStack() as stack:
        idle = await stack.enter_async_context(connect(stream_url(hub.url)))
        assert decode_message(await idle.recv()).data["auth"] == "required"
        waiting = await stack.enter_async_context(connect(listen))
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=hub.url, headers={"X-API-Key": READ_KEY})
        )
        stats = (await http.get("/api/v1/stats")).json()["data"]["stream"]
        assert stats["signing_in"] == 2  # the stream's socket and the listener's
        async with connect(listen) as busy:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(busy.recv(), 10)
        assert busy.close_code == 1013
        # the waiting listener is closed at the deadline, and its place given back
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(waiting.recv(), 10)
        assert waiting.close_code == 1008
    assert hub.service.stream.signing_in == 0
    assert hub.service.stream.refused["busy"] == 1


async def test_acknowledged_delivery(running_hub: RunningHub, watcher: Recorder) -> None:
    t = running_hub.service.topics
    async with StreamClient(
        running_hub.url, api_key=READ_KEY, topics=[f"{t.base}/status/+"], ack=True
    ) as stream:
        assert stream.agreed["ack"] is True
        await watcher.publish(t.status("acked-one"), {"status": "connected"})
        msg = await next_matching(stream, data_of("status", "acked-one"))
        assert msg.flags & Flag.ACK_REQUIRED
        (session,) = running_hub.service.stream.stats()["sessions"]
        # The client acked it (a HEARTBEAT {"ack": seq}); the hub holds nothing unacked.
        await watcher.wait_for(
            lambda: running_hub.service.stream.stats()["sessions"][0]["unacked"] == 0
        )
        assert session["version"] == 3


@pytest.fixture
async def impatient_hub(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> AsyncIterator[RunningHub]:
    settings = hub_settings.model_copy(update={"stream_ack_timeout_seconds": 0.2})
    async with run_hub(settings, home=engine.home, engine=engine) as running:
        yield running


async def test_a_client_that_never_acks_gets_resends_then_is_closed(
    impatient_hub: RunningHub, watcher: Recorder
) -> None:
    """Raw frames: StreamClient would ack."""
    t = impatient_hub.service.topics

    def frame(kind: MessageType, data: object, version: StreamVersion) -> bytes:
        ts = 1 if version is StreamVersion.V3 else None
        return encode_message(StreamMessage(kind, data, version, Flag(0), ts))

    url = stream_url(impatient_hub.url)
    async with connect(url, additional_headers={"X-API-Key": READ_KEY}) as ws:
        assert decode_message(await ws.recv()).type is MessageType.PROTOCOL_NEGOTIATION
        await ws.send(frame(MessageType.VERSION_CHECK, {"versions": [3], "ack": True}, V1))
        assert decode_message(await ws.recv()).data["ack"] is True
        await ws.send(frame(MessageType.SUBSCRIBE, {"topics": [f"{t.base}/status/+"]}, V3))
        assert decode_message(await ws.recv()).type is MessageType.SUBSCRIPTION_ACK
        await watcher.publish(t.status("never-acked"), {"status": "connected"})
        received: list[StreamMessage] = []

        async def until_closed() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    received.append(decode_message(await ws.recv()))

        await asyncio.wait_for(until_closed(), 15)
    sends = [m for m in received if m.type is MessageType.ECG_DATA]
    assert [m.data["topic"] for m in sends] == [t.status("never-acked")] * 3
    assert len({m.data["seq"] for m in sends}) == 1  # sent, then twice again, same seq
    assert all(m.flags & Flag.ACK_REQUIRED for m in sends)
    error = received[-1]
    assert error.type is MessageType.ERROR
    assert error.data["code"] == ErrorCode.RATE_LIMIT_EXCEEDED
    assert ws.close_code == 1008


@pytest.fixture
async def small_queue_hub(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> AsyncIterator[RunningHub]:
    settings = hub_settings.model_copy(update={"stream_queue_limit": 8})
    async with run_hub(settings, home=engine.home, engine=engine) as running:
        yield running


async def test_a_slow_client_is_skipped_ahead_not_buffered(
    small_queue_hub: RunningHub, watcher: Recorder
) -> None:
    hub = small_queue_hub
    t = hub.service.topics
    async with StreamClient(hub.url, api_key=READ_KEY, topics=[f"{t.base}/sensors/#"]) as stream:
        # The client reads nothing while readings pour in: incompressible ones, more than the
        # socket buffers on the way hold, so the hub's per-client queue has to give.
        blob = base64.b64encode(os.urandom(45_000)).decode()  # 60 KB: under the hub's 64 KB
        sent = 0

        def dropped() -> int:
            sessions = hub.service.stream.stats()["sessions"]
            return sessions[0]["dropped"] if sessions else 0

        while dropped() == 0:
            assert sent < 2000, "nothing dropped after 2000 readings of 60 KB"
            for n in range(100):
                reading = {"device_id": "slow-dev", "sensor_type": "blob", "value": blob}
                await watcher.publish(t.sensor("slow-dev", "blob"), {**reading, "n": sent + n})
            sent += 100
            await watcher.wait_for(
                lambda target=sent: hub.service.stream.offered >= target or dropped() > 0,
                within=30,
            )
        (session,) = hub.service.stream.stats()["sessions"]
        assert session["queued"] <= 8
        metrics = hub.service.metrics.exposition().decode()
        assert "xiaozhi_hub_stream_sessions 1.0" in metrics
        assert f"xiaozhi_hub_stream_dropped_total {float(session['dropped'])}" in metrics
        # The client is told: a HEARTBEAT with the drop count, and a gap in the sequence.
        seqs: list[int] = []

        def drop_notice(msg: StreamMessage) -> bool:
            if msg.type in DATA_TYPES:
                seqs.append(msg.data["seq"])
                return False
            return msg.type is MessageType.HEARTBEAT and msg.data.get("dropped", 0) > 0

        notice = await next_matching(stream, drop_notice, within=60)
        assert stream.dropped == notice.data["dropped"] > 0
        after = await next_matching(stream, lambda m: m.type in DATA_TYPES, within=60)
        assert after.data["seq"] > seqs[-1] + 1  # skipped ahead
        assert after.flags & Flag.COMPRESSED  # 60 KB of reading: zlib above 1 KB


async def test_a_client_that_sends_but_never_reads_is_cut_off_and_its_socket_aborted(
    small_queue_hub: RunningHub, watcher: Recorder
) -> None:
    """A raw client (small receive buffer) subscribes, then reads nothing: readings fill the
    socket's buffers on the way, so the hub's writer waits for room, then the client's PINGs
    pile up unanswered and the session cuts it off (0x204). Its buffer never drains: the hub
    aborts the socket within seconds rather than at uvicorn's keepalive (~40 s)."""
    hub = small_queue_hub
    t = hub.service.topics
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.port))
    headers = {"X-API-Key": READ_KEY}
    url = stream_url(hub.url)
    async with connect(url, sock=sock, additional_headers=headers, ping_interval=None) as ws:
        assert decode_message(await ws.recv()).type is MessageType.PROTOCOL_NEGOTIATION
        check = StreamMessage(MessageType.VERSION_CHECK, {"versions": [1]}, V1)
        await ws.send(encode_message(check))
        assert decode_message(await ws.recv()).type is MessageType.VERSION_CHECK
        subscribe = {"topics": [f"{t.base}/sensors/#"]}
        await ws.send(encode_message(StreamMessage(MessageType.SUBSCRIBE, subscribe, V1)))
        assert decode_message(await ws.recv()).type is MessageType.SUBSCRIPTION_ACK
        # 5 MB of incompressible readings: more than the kernel's buffers on the way hold
        blob = base64.b64encode(os.urandom(45_000)).decode()
        for n in range(80):
            reading = {"device_id": "deaf-dev", "sensor_type": "blob", "value": blob, "n": n}
            await watcher.publish(t.sensor("deaf-dev", "blob"), reading, qos=0)
        ping = encode_message(StreamMessage(MessageType.PING, blob.encode(), V1))

        async def flood() -> None:
            while True:  # the hub stops reading once it cut the client off: then sends wait
                await ws.send(ping)

        with pytest.raises(ConnectionClosed):  # the hub's reset ends the waiting send
            await asyncio.wait_for(flood(), 10)
        assert hub.service.stream.sessions == 0


async def test_a_fleet_larger_than_the_queue_is_replayed_whole(
    small_queue_hub: RunningHub, watcher: Recorder
) -> None:
    """The retained statuses a subscription starts with skip the drop-oldest queue (8 here)."""
    hub = small_queue_hub
    t = hub.service.topics
    fleet = [t.status(f"fleet-{n}") for n in range(40)]
    for n, topic in enumerate(fleet):
        status = {"device_id": f"fleet-{n}", "status": "connected"}
        await watcher.publish(topic, status, retain=True)
    await watcher.wait_for(lambda: hub.service.stream.stats()["retained"] >= len(fleet), 15)
    async with StreamClient(hub.url, api_key=READ_KEY, topics=[f"{t.base}/status/+"]) as stream:
        seen: set[str] = set()

        def replayed(msg: StreamMessage) -> bool:
            if msg.type in DATA_TYPES and msg.data.get("retained"):
                seen.add(msg.data["topic"])
            return seen >= set(fleet)

        await next_matching(stream, replayed)
        assert stream.dropped == 0
        (session,) = hub.service.stream.stats()["sessions"]
        assert session["dropped"] == session["replaying"] == 0


async def test_a_hub_that_stops_ends_its_streams(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    async with run_hub(hub_settings, home=engine.home, engine=engine) as running:
        stream = StreamClient(running.url, api_key=READ_KEY, topics=["#"])
        await stream.connect()
        assert running.service.stream.sessions == 1
    # The hub stopped with a client connected: the client sees the end, nothing hangs.

    async def read_to_the_end() -> None:
        async for _ in stream:
            pass

    with pytest.raises(StreamClosed, match="1012"):  # service restart
        await asyncio.wait_for(read_to_the_end(), 15)
    assert running.service.stream.sessions == 0


async def test_a_hub_process_streams_its_own_log(
    hub_settings: HubSettings, watcher: Recorder, tmp_path: Path
) -> None:
    process = _hub_process(hub_settings, tmp_path)
    reader = LineReader(process)
    try:
        await asyncio.to_thread(reader.wait_for, "hub_online", 60)
        url = (await asyncio.to_thread(reader.wait_for, "hub       http://127.0.0.1:")).split()[1]
        hub_id = hub_settings.hub_id + "-process"
        log = f"{hub_settings.base_topic}/bridge/hubs/{hub_id}/log"
        async with StreamClient(url, api_key="process-key", topics=[log]) as stream:
            # Something the hub logs: a status that is not JSON, refused with a warning.
            await watcher.publish(f"{hub_settings.base_topic}/status/noisy", b"not json")
            line = await next_matching(
                stream,
                lambda m: (
                    m.data.get("kind") == "log"
                    and m.data["payload"]["event"] == "mqtt_message_refused"
                ),
            )
        assert line.type is MessageType.ANOMALY_ALERT
        assert line.data["topic"] == log
        assert line.data["payload"]["level"] == "warning"
        assert line.data["payload"]["topic"].endswith("/status/noisy")
    finally:
        process.terminate()
        process.wait(30)


async def test_an_edges_warnings_reach_the_stream_and_a_storm_is_dropped_and_counted(
    running_hub: RunningHub,
    hub_settings: HubSettings,
    start_edge: StartEdge,
    logging_to_listeners: None,
) -> None:
    base = hub_settings.base_topic
    unit = running_hub.service.stream
    logs = f"{base}/bridge/edges/+/log"
    async with StreamClient(running_hub.url, api_key=READ_KEY, topics=[logs]) as stream:
        await asyncio.wait_for(unit.events_subscribed.wait(), 10)
        # Open device auth: a warning the edge logs at start, on a setting its user chose.
        edge = await start_edge(base_topic=base, device_auth="open")
        edge_id = edge.settings.edge_id

        def edge_line(event: str) -> Callable[[StreamMessage], bool]:
            return lambda m: (
                m.data.get("kind") == "log"
                and m.data.get("edge_id") == edge_id
                and m.data["payload"]["event"] == event
            )

        line = await next_matching(stream, edge_line("device_auth_open"))
        assert line.type is MessageType.ANOMALY_ALERT
        assert line.data["topic"] == f"{base}/bridge/edges/{edge_id}/log"
        payload = line.data["payload"]
        assert (payload["level"], payload["edge_id"]) == ("warning", edge_id)
        assert "use token in production" in payload["hint"]
        assert payload["timestamp"].endswith("Z")

        # A storm: 200 warnings at once. About a burst's worth is published, the rest are
        # dropped and counted.
        before = edge.stats()["counters"]
        storm = structlog.get_logger("xiaozhi.edge")
        for i in range(200):
            storm.warning("storm_line", n=i, blob="x" * 10_000)  # each cut to a bounded size
        after = edge.stats()["counters"]
        published = after["logs_published"] - before["logs_published"]
        dropped = after["logs_dropped"] - before["logs_dropped"]
        assert published + dropped == 200
        assert LOG_BURST - 1 <= published < 100 < dropped
        # Every line let through arrives (the bucket refills while the storm is written,
        # so which ones is not fixed), each cut to a bounded size.
        arrived = [await next_matching(stream, edge_line("storm_line")) for _ in range(published)]
        assert all(m.data["payload"]["truncated"] is True for m in arrived)
        assert all(len(m.data["payload"]["blob"]) < 1000 for m in arrived)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{edge.port}/metrics")).text
        assert f"xiaozhi_edge_logs_dropped_total {float(after['logs_dropped'])}" in metrics


async def test_in_one_process_each_line_reaches_the_stream_once(
    running_hub: RunningHub,
    hub_settings: HubSettings,
    start_edge: StartEdge,
    logging_to_listeners: None,
) -> None:
    """``xiaozhi up``: hub and edge in one process, one log. A hub line comes on the hub's log
    topic only, an edge line on the edge's only, shared code's (``xiaozhi.mqtt``) on the
    hub's, never twice. Hub lines are offered as they are logged, edge lines go through MQTT:
    once the edge's last line has arrived, any copy of the earlier lines would have too."""
    base = hub_settings.base_topic
    unit = running_hub.service.stream
    async with StreamClient(
        running_hub.url, api_key=READ_KEY, topics=[f"{base}/bridge/+/+/log"]
    ) as stream:
        await asyncio.wait_for(unit.events_subscribed.wait(), 10)
        edge = await start_edge(base_topic=base)
        edge_id = edge.settings.edge_id
        mark = os.urandom(4).hex()
        structlog.get_logger("xiaozhi.hub").warning("hub_line", mark=mark)
        structlog.get_logger("xiaozhi.mqtt").warning("shared_line", mark=mark)
        structlog.get_logger("xiaozhi.edge").warning("edge_line", mark=mark)
        structlog.get_logger("xiaozhi.edge").warning("edge_last", mark=mark)
        seen: list[tuple[str, str]] = []
        async for msg in stream:
            payload = msg.data.get("payload")
            if msg.data.get("kind") != "log" or payload.get("mark") != mark:
                continue
            source = "edge" if msg.data.get("edge_id") == edge_id else "hub"
            seen.append((source, payload["event"]))
            if payload["event"] == "edge_last" and source == "edge":
                break
    assert sorted(seen) == [
        ("edge", "edge_last"),
        ("edge", "edge_line"),
        ("hub", "hub_line"),
        ("hub", "shared_line"),
    ]
