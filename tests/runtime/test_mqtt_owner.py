"""The MQTT owner against a real Mosquitto: delivery, outages, retained state, bounds."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import Recorder, record
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_runtime.mqtt import MESSAGE_OVERHEAD_BYTES, PAHO_BACKLOG_BYTES, MqttOwner, OutMessage

pytestmark = pytest.mark.integration  # a real Mosquitto

_ids = itertools.count()


def _client_id(name: str) -> str:
    return f"test-{name}-{next(_ids)}"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[ManagedMosquitto]:
    """A broker this test may stop, kill and restart (not the shared session one)."""
    with ManagedMosquitto(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
async def owners() -> AsyncIterator[list[MqttOwner]]:
    started: list[MqttOwner] = []
    yield started
    for owner in started:
        await owner.stop(flush_seconds=1)


async def _start(owners: list[MqttOwner], owner: MqttOwner, *, wait: bool = True) -> MqttOwner:
    owners.append(owner)
    await owner.start(wait_connected=15 if wait else None)
    return owner


async def test_messages_of_both_qos_reach_a_subscriber_in_order(
    mosquitto: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    inbox = Recorder()
    sub = await _start(
        owners, MqttOwner(mosquitto.url, client_id=_client_id("sub"), on_message=inbox)
    )
    await sub.subscribe(["xiaozhi/test/order/#"])
    pub = await _start(owners, MqttOwner(mosquitto.url, client_id=_client_id("pub")))
    for i in range(1000):
        assert pub.publish_nowait(OutMessage("xiaozhi/test/order/q1", str(i).encode(), qos=1))
    for i in range(100):
        pub.publish_nowait(OutMessage("xiaozhi/test/order/q0", str(i).encode(), qos=0))
    await inbox.wait_for(lambda: len(inbox.payloads("xiaozhi/test/order/q1")) == 1000)
    assert inbox.payloads("xiaozhi/test/order/q1") == [str(i).encode() for i in range(1000)]
    await inbox.wait_for(lambda: len(inbox.payloads("xiaozhi/test/order/q0")) == 100)
    assert pub.stats.acknowledged == 1000
    assert pub.pending == 0


async def test_qos0_runs_and_qos1_between_them_arrive_whole_and_in_order(
    mosquitto: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    """QoS 0 goes to the socket in runs beside paho's own packets; nothing is cut, lost or
    reordered, even with payloads large enough for the kernel to take a run in several
    writes. (MQTT orders messages per QoS level only: the broker may pass a QoS 0 message
    ahead of a QoS 1 one that waits for its subscriber's inflight window.)"""
    inbox = Recorder()
    sub = await _start(
        owners, MqttOwner(mosquitto.url, client_id=_client_id("sub"), on_message=inbox)
    )
    await sub.subscribe(["xiaozhi/test/runs/#"])
    pub = await _start(owners, MqttOwner(mosquitto.url, client_id=_client_id("pub")))
    expected: dict[int, list[bytes]] = {0: [], 1: []}
    for i in range(3000):
        qos = 1 if i % 100 == 0 else 0
        payload = str(i).encode().ljust(150_000 if i % 500 == 7 else 40, b".")
        expected[qos].append(payload)
        assert pub.publish_nowait(OutMessage(f"xiaozhi/test/runs/q{qos}", payload, qos=qos))
    await inbox.wait_for(lambda: len(inbox.messages) == 3000, within=30)
    assert inbox.payloads("xiaozhi/test/runs/q0") == expected[0]
    assert inbox.payloads("xiaozhi/test/runs/q1") == expected[1]
    assert pub.stats.published == 3000


async def test_a_retained_qos0_message_reaches_a_later_subscriber_flagged(
    mosquitto: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    topic = "xiaozhi/sensors/runs0001/temperature"
    pub = await _start(owners, MqttOwner(mosquitto.url, client_id=_client_id("pub")))
    for value in (b"21.5", b"22.0"):
        pub.retain(OutMessage(topic, value, qos=0, retain=True))
    await asyncio.wait_for(pub.wait_flushed(), 15)
    async with record(mosquitto.url, topic) as late:
        await late.wait_for(lambda: late.payloads(topic))
        assert [(m.payload, m.retain) for m in late.messages] == [(b"22.0", True)]


async def test_a_broker_restart_mid_stream_loses_no_qos1_message(
    own_broker: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    inbox = Recorder()
    sub = MqttOwner(
        own_broker.url, client_id=_client_id("durable"), on_message=inbox, clean_session=False
    )
    await _start(owners, sub)
    await sub.subscribe(["xiaozhi/events/#"], qos=1)
    pub = await _start(owners, MqttOwner(own_broker.url, client_id=_client_id("edge")))
    total = 3000
    for i in range(total // 2):
        pub.publish_nowait(OutMessage("xiaozhi/events/dev1", str(i).encode(), qos=1))
    assert await asyncio.to_thread(own_broker.stop) == 0  # clean: the broker saves its sessions
    await asyncio.wait_for(pub.disconnected.wait(), 15)
    for i in range(total // 2, total):  # the broker is down: these wait in the queue
        pub.publish_nowait(OutMessage("xiaozhi/events/dev1", str(i).encode(), qos=1))
    assert pub.pending >= total // 2
    await asyncio.to_thread(own_broker.start)
    await inbox.wait_for(lambda: len(set(inbox.payloads("xiaozhi/events/dev1"))) == total, 30)
    assert {int(p) for p in inbox.payloads("xiaozhi/events/dev1")} == set(range(total))
    assert pub.stats.dropped_qos1 == 0
    assert pub.stats.connects == 2
    await asyncio.wait_for(pub.wait_flushed(), 15)
    assert pub.stats.queued_bytes == 0, "the byte count follows requeues and acks"


async def _reconnected(owner: MqttOwner) -> None:
    """Wait for the owner to notice the outage, then to connect again (and flush)."""
    await asyncio.wait_for(owner.disconnected.wait(), 15)
    await asyncio.wait_for(owner.connected.wait(), 30)
    await asyncio.wait_for(owner.wait_flushed(), 30)


async def test_retained_state_comes_back_after_a_broker_that_lost_it(
    own_broker: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    pub = await _start(owners, MqttOwner(own_broker.url, client_id=_client_id("edge")))
    pub.retain(OutMessage("xiaozhi/status/dev1", b'{"status":"connected"}', qos=1, retain=True))
    await asyncio.wait_for(pub.wait_flushed(), 15)
    await asyncio.to_thread(own_broker.kill)  # crash: and its memory is gone too
    (own_broker.state_dir / "mosquitto.db").unlink(missing_ok=True)
    await asyncio.to_thread(own_broker.start)
    await _reconnected(pub)

    inbox = Recorder()
    late = await _start(
        owners, MqttOwner(own_broker.url, client_id=_client_id("late"), on_message=inbox)
    )
    await late.subscribe(["xiaozhi/status/+"])
    await inbox.wait_for(lambda: inbox.payloads("xiaozhi/status/dev1"))
    assert inbox.payloads("xiaozhi/status/dev1") == [b'{"status":"connected"}']


async def test_subscriptions_are_made_again_after_a_reconnect(
    own_broker: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    inbox = Recorder()
    sub = await _start(
        owners, MqttOwner(own_broker.url, client_id=_client_id("sub"), on_message=inbox)
    )
    await sub.subscribe(["xiaozhi/commands/dev1"])
    await asyncio.to_thread(own_broker.kill)
    (own_broker.state_dir / "mosquitto.db").unlink(missing_ok=True)
    await asyncio.to_thread(own_broker.start)
    await asyncio.wait_for(sub.disconnected.wait(), 15)
    await asyncio.wait_for(sub.connected.wait(), 30)
    pub = await _start(owners, MqttOwner(own_broker.url, client_id=_client_id("hub")))
    pub.publish_nowait(OutMessage("xiaozhi/commands/dev1", b"{}", qos=1))
    await inbox.wait_for(lambda: inbox.payloads("xiaozhi/commands/dev1"))


async def test_a_full_queue_drops_and_counts_and_signals_backpressure(
    own_broker: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    assert own_broker.stop() == 0  # no broker: everything stays queued
    pub = MqttOwner(
        own_broker.url, client_id=_client_id("edge"), max_queued_messages=10, high_watermark=5
    )
    await _start(owners, pub, wait=False)
    results = [pub.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1)) for _ in range(4)]
    assert all(results)
    assert pub.room.is_set()
    pub.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1))
    assert not pub.room.is_set(), "producers that can wait must be told to pause"
    for _ in range(5):
        assert pub.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1))
    assert not pub.publish_nowait(OutMessage("xiaozhi/sensors/d/t", b"1", qos=0))
    assert not pub.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1))
    stats = pub.stats
    assert (stats.dropped_qos0, stats.dropped_qos1, stats.queued) == (1, 1, 10)
    size = len("xiaozhi/events/d") + 1 + MESSAGE_OVERHEAD_BYTES
    assert stats.queued_bytes == 10 * size

    # The same bound in bytes: three quarters of it pauses producers, past it drops.
    by_bytes = MqttOwner(own_broker.url, client_id=_client_id("bytes"), max_queued_bytes=3 * size)
    assert by_bytes.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1))
    assert by_bytes.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1))
    assert by_bytes.room.is_set()
    assert by_bytes.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1))
    assert not by_bytes.room.is_set()
    assert not by_bytes.publish_nowait(OutMessage("xiaozhi/events/d", b"x", qos=1))
    assert by_bytes.stats.dropped_qos1 == 1

    await asyncio.to_thread(own_broker.start)  # the backlog drains and producers resume
    await asyncio.wait_for(pub.room.wait(), 30)
    await asyncio.wait_for(pub.wait_flushed(), 30)
    assert pub.stats.acknowledged == 10
    assert pub.stats.queued_bytes == 0


async def test_a_failing_handler_does_not_take_the_connection_down(
    mosquitto: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    inbox = Recorder()

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        inbox(topic, payload)

    sub = await _start(
        owners, MqttOwner(mosquitto.url, client_id=_client_id("sub"), on_message=handler)
    )
    await sub.subscribe(["xiaozhi/test/handler"])
    pub = await _start(owners, MqttOwner(mosquitto.url, client_id=_client_id("pub")))
    pub.publish_nowait(OutMessage("xiaozhi/test/handler", b"boom", qos=1))
    pub.publish_nowait(OutMessage("xiaozhi/test/handler", b"after", qos=1))
    await inbox.wait_for(lambda: inbox.payloads("xiaozhi/test/handler") == [b"after"])
    assert sub.stats.connects == 1


_OWNER_PROCESS = """
import asyncio, sys
from xiaozhi_runtime.mqtt import PAHO_BACKLOG_BYTES, MqttOwner, OutMessage

async def main() -> None:
    topic = "xiaozhi/bridge/edges/" + sys.argv[2]
    owner = MqttOwner(
        sys.argv[1], client_id=sys.argv[2],
        will=OutMessage(topic, b'{"state":"offline"}', qos=1, retain=True),
        birth=[OutMessage(topic, b'{"state":"online"}', qos=1, retain=True)],
    )
    await owner.start(wait_connected=15)
    await owner.wait_flushed()
    print("online", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_will_fires_when_a_process_dies_and_birth_on_connect(
    mosquitto: ManagedMosquitto,
) -> None:
    edge_id = _client_id("e")
    topic = f"xiaozhi/bridge/edges/{edge_id}"
    async with record(mosquitto.url, topic, name="will") as inbox:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _OWNER_PROCESS, mosquitto.url, edge_id,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            while (line := await asyncio.wait_for(process.stdout.readline(), 15)) != b"online\n":
                assert line, "the owner process ended before it came online"
            await inbox.wait_for(lambda: inbox.payloads(topic)[-1:] == [b'{"state":"online"}'])
        finally:
            process.kill()  # SIGKILL: no DISCONNECT is sent, so the broker fires the will
            await process.wait()
        await inbox.wait_for(lambda: b'{"state":"offline"}' in inbox.payloads(topic), 20)


async def test_the_broker_connection_does_not_delay_small_packets(
    mosquitto: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    """Nagle's algorithm on the client side turned a QoS 1 round trip into ~88 ms."""
    import socket

    owner = await _start(owners, MqttOwner(mosquitto.url, client_id=_client_id("nodelay")))
    assert owner._client is not None
    sock = owner._client._client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_a_restarted_persistent_client_gets_nothing_queued_for_its_previous_life(
    own_broker: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    """An edge that restarts holds none of its devices: what the broker queued for the old
    process (commands for devices now elsewhere) is discarded, not delivered to it."""
    client_id = _client_id("edge")
    before = MqttOwner(own_broker.url, client_id=client_id, clean_session=False)
    await _start(owners, before)
    await before.subscribe(["xiaozhi/commands/old"])
    await before.stop(flush_seconds=1)  # the process is gone; its session stays at the broker
    hub = await _start(owners, MqttOwner(own_broker.url, client_id=_client_id("hub")))
    hub.publish_nowait(OutMessage("xiaozhi/commands/old", b"queued for the old edge", qos=1))
    await asyncio.wait_for(hub.wait_flushed(), 15)
    inbox = Recorder()
    after = MqttOwner(own_broker.url, client_id=client_id, on_message=inbox, clean_session=False)
    await _start(owners, after)
    await after.subscribe(["xiaozhi/commands/new"])
    hub.publish_nowait(OutMessage("xiaozhi/commands/new", b"for the new edge", qos=1))
    await inbox.wait_for(lambda: inbox.payloads("xiaozhi/commands/new"))
    assert inbox.payloads("xiaozhi/commands/old") == []  # queued ones come first, had they come


async def test_a_filter_given_up_during_an_outage_is_unsubscribed_at_the_reconnect(
    own_broker: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    """A device left while the broker was away: its persistent edge session must not keep
    receiving the device's commands."""
    inbox = Recorder()
    edge = MqttOwner(
        own_broker.url, client_id=_client_id("edge"), on_message=inbox, clean_session=False
    )
    await _start(owners, edge)
    await edge.subscribe(["xiaozhi/commands/left", "xiaozhi/commands/stays"])
    assert await asyncio.to_thread(own_broker.stop) == 0  # saved: the subscriptions too
    await asyncio.wait_for(edge.disconnected.wait(), 15)
    await edge.unsubscribe(["xiaozhi/commands/left"])
    await asyncio.to_thread(own_broker.start)
    await asyncio.wait_for(edge.connected.wait(), 30)
    hub = await _start(owners, MqttOwner(own_broker.url, client_id=_client_id("hub")))
    hub.publish_nowait(OutMessage("xiaozhi/commands/left", b"nobody here", qos=1))
    hub.publish_nowait(OutMessage("xiaozhi/commands/stays", b"still here", qos=1))
    await inbox.wait_for(lambda: inbox.payloads("xiaozhi/commands/stays"))
    assert inbox.payloads("xiaozhi/commands/left") == []


async def test_a_stalled_broker_fills_the_bounded_queue_not_paho(
    own_broker: ManagedMosquitto, owners: list[MqttOwner]
) -> None:
    """With the broker stopped, a producer that waits for ``room`` (as the edge's readers do)
    is held back once the owner's queue reaches its watermark: paho holds at most its bounded
    backlog. Before, the writer handed every message to paho, whose deque grew without bound
    (13 MB for 100,000 small readings; hundreds under a real flood)."""
    owner = await _start(
        owners, MqttOwner(own_broker.url, client_id=_client_id("stall"), max_queued_messages=2000)
    )
    assert own_broker.pid is not None
    payload = b'{"sensor_type": "temp", "value": 20.5, "device_id": "d1", "unit": "C"}'
    os.kill(own_broker.pid, signal.SIGSTOP)
    try:
        accepted = 0
        held_back = False
        while accepted < 100_000:
            if not owner.room.is_set():
                try:  # the writer drains into paho only while the socket keeps up
                    await asyncio.wait_for(owner.room.wait(), 1.0)
                except TimeoutError:
                    held_back = True
                    break
            assert owner.publish_nowait(OutMessage("t/stall/d1", payload, 0, False))
            accepted += 1
            if accepted % 500 == 0:
                await asyncio.sleep(0)  # let the writer run, as the edge's readers do
        stats = owner.stats
        assert held_back, f"all {accepted} messages were taken while the broker was stopped"
        assert stats.socket_backlog_bytes <= 2 * PAHO_BACKLOG_BYTES, stats
        assert stats.queued <= 2000
    finally:
        os.kill(own_broker.pid, signal.SIGCONT)
    await asyncio.wait_for(owner.wait_flushed(), 30)
    assert owner.stats.dropped_qos0 == 0  # held back, never dropped
