"""`xiaozhi bench overload`: the edge offered 3x what it can take (issue 14, point 4).

Issue 14 asks that at 3x the edge's capacity its memory stays bounded (at most twice its idle
RSS plus the configured MQTT queue), that whatever is lost is counted in ``/stats`` and
``/metrics``, and that devices are slowed by backpressure (their sockets stop being read)
rather than buffered without bound. One run:

1. The edge's capacity, measured as `xiaozhi bench telemetry` measures it (the same code:
   its ``_flat_out``, devices in turn as fast as the edge republishes), received by the same
   ``mosquitto_sub``; then the bare bridge's, the same way.
2. Overload: the same devices offered 3x that rate for `seconds` (1 ms ticks, devices in
   turn). A device whose socket no longer takes writes (TCP flow control: the edge stopped
   reading it, its buffers are full) skips its turn, as a firmware whose send blocks would:
   that is the device being slowed, and the generator counts it. Meanwhile the edge's RSS is
   read from ``/proc`` every 0.2 s and its ``/stats`` every 0.5 s. Then the generator stops,
   the edge drains what the sockets still hold, and the subscriber's count is compared with
   what was sent: every message sent is either delivered or counted by the edge (``/stats``
   and ``/metrics``, by reason).
3. The reference: the bare bridge (:mod:`xiaozhi_bench.bare_server`) under the same offered
   rate from the same number of devices, its RSS sampled the same way.

The bound is ``2 x idle RSS + the configured queue's worth``. The queue's worth is the lesser
of its two bounds (the edge's defaults): ``XIAOZHI_MAX_QUEUED_MQTT_MESSAGES`` (200,000) times
the memory one queued message of this case takes, measured here with `tracemalloc` on the
owner's own queue (:func:`queued_message_bytes`), and ``XIAOZHI_MAX_QUEUED_MQTT_BYTES``
(64 MiB). Idle RSS is read with every device connected, before any traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop

from xiaozhi.topics import TopicTree
from xiaozhi_bench import procs
from xiaozhi_bench.loadgen import WsDevice, connect_devices
from xiaozhi_bench.runner import Figure, Report
from xiaozhi_bench.telemetry import (
    Run,
    _bare_published,
    _collect,
    _edge_published,
    _flat_out,
    _paced,
    _window,
    sensor_message,
)
from xiaozhi_edge.settings import EdgeSettings
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = ["queued_message_bytes", "run_overload"]

DEVICES = 200
QUICK_DEVICES = 10
OVERLOAD = 3.0  # the multiple of the edge's capacity
CAPACITY_SECONDS = 5.0
QUICK_CAPACITY_SECONDS = 1.0
MAX_AHEAD = 20_000  # as the telemetry case: the flat-out generator never further ahead
_QUEUE = EdgeSettings.model_fields  # the edge runs with the default bounds
QUEUE_MESSAGES = int(_QUEUE["max_queued_mqtt_messages"].default)
QUEUE_BYTES = int(_QUEUE["max_queued_mqtt_bytes"].default)
DEVICE_WRITE_BUFFER = 16 * 1024  # a device's own buffer before it counts as held back
DEVICE_SEND_BUFFER = 16 * 1024  # SO_SNDBUF (Linux doubles it); an ESP32's lwIP has ~6 KiB
DRAIN_SECONDS = 60.0
_STATS_WITHIN = 30.0  # an overloaded edge answers /stats late; late is not wrong
_EDGE_LIMITS = {"max_messages_per_second": 1_000_000, "burst_messages": 1_000_000}
_TOPICS = TopicTree()
SENSOR = "bench"


def queued_message_bytes(count: int = 20_000) -> float:
    """Memory per message waiting in the MQTT owner's queue, as this case's edge queues them.

    The owner's own `publish_nowait` (never connected, so nothing leaves the queue) with a
    topic and payload shaped as the edge's: a fresh payload per message, a topic string per
    device. Measured with tracemalloc, so it counts what Python asked for (allocator slack
    is in the RSS figures, not here).
    """

    owner = MqttOwner("mqtt://127.0.0.1:1", client_id="measure", max_queued_messages=count)
    topics = [_TOPICS.sensor(f"02000000{i:04x}", SENSOR) for i in range(200)]
    tracemalloc.start()
    before = 0
    for index in range(count):
        if index == count // 2:  # the queue is deep: what each waiting message costs
            before = tracemalloc.get_traced_memory()[0]
        payload = orjson.dumps(
            {"sensor_type": SENSOR, "value": time.time_ns(), "device_id": "020000000000",
             "unit": "ns", "timestamp": "2026-12-07T21:00:00.000Z"}
        )  # fmt: skip
        owner.publish_nowait(OutMessage(topics[index % 200], payload, 0, True))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert owner.pending == count
    return (after - before) / (count - count // 2)


@dataclass(slots=True)
class Sampled:
    """What the sampler saw of one server while it was overloaded."""

    rss_kib: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)

    @property
    def peak_rss_kib(self) -> int:
        return max(self.rss_kib, default=0)


async def _sample(
    server: procs.Child, into: Sampled, stats: Callable[[], Awaitable[int]] | None
) -> None:
    """RSS every 0.2 s; the MQTT queue (from ``/stats``) every 0.5 s, when asked for."""
    tick = 0
    while True:
        into.rss_kib.append(server.rss_kib())
        if stats is not None and tick % 5 == 0:
            with contextlib.suppress(OSError, TimeoutError):
                into.queued.append(await stats())
        tick += 2
        await asyncio.sleep(0.2)


@dataclass(slots=True)
class Offered:
    """What the generator offered and sent during one overload phase."""

    offered: int = 0
    sent: int = 0
    held_back: int = 0  # turns skipped: the device's socket took no more
    devices_held: set[str] = field(default_factory=set)
    seconds: float = 0.0


async def _overload(devices: list[WsDevice], rate: float, seconds: float) -> Offered:
    """Offer `rate` msg/s from `devices` in turn; a device whose writes are paused (TCP
    flow control) skips its turn and is counted as held back."""
    result = Offered()
    count = len(devices)
    for device in devices:
        assert device.transport is not None
        device.transport.set_write_buffer_limits(high=DEVICE_WRITE_BUFFER)
        sock = device.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DEVICE_SEND_BUFFER)

    def one(index: int) -> None:
        device = devices[index % count]
        if device.paused:
            result.held_back += 1
            result.devices_held.add(device.device_id)
        else:
            device.send_text(sensor_message(time.time_ns()))
            result.sent += 1

    started = time.monotonic()
    result.offered = await _paced(one, rate, seconds)
    result.seconds = time.monotonic() - started
    return result


async def _until(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    """Poll `check` every 0.2 s; whether it came true within `within` seconds. A server too
    busy to answer (its /stats timed out) is not there yet."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, OSError):
            if await check():
                return True
        await asyncio.sleep(0.2)
    return False


async def _metrics(port: int) -> dict[str, float]:
    """The edge's ``/metrics`` (Prometheus text) as {sample with labels: value}."""
    reader, writer = await asyncio.open_connection(procs.HOST, port)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {procs.HOST}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), _STATS_WITHIN)
    finally:
        writer.close()
    body = raw.partition(b"\r\n\r\n")[2].decode()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _loss_by_reason(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """The edge's counted losses between two ``/stats``, by reason (non-zero ones)."""
    counters_b, counters_a = before["counters"], after["counters"]
    loss = {
        "mqtt dropped_qos0": after["mqtt"]["dropped_qos0"] - before["mqtt"]["dropped_qos0"],
        "mqtt dropped_qos1": after["mqtt"]["dropped_qos1"] - before["mqtt"]["dropped_qos1"],
        "rate_limited": counters_a["rate_limited"] - counters_b["rate_limited"],
    }
    for code, count in counters_a["errors"].items():
        loss[f"error {code}"] = count - counters_b["errors"].get(code, 0)
    return {reason: count for reason, count in loss.items() if count}


async def _capacity(
    subscriber: procs.Subscriber,
    server: procs.Child,
    published_by: Callable[[procs.Child], Awaitable[int]],
    devices: list[WsDevice],
    seconds: float,
    busy: Callable[[], Awaitable[bool]] | None,
) -> Run:
    """`server`'s rate flat out, as the telemetry case measures it."""
    started = time.time_ns()
    sent = await _flat_out(server, published_by, devices, seconds, MAX_AHEAD)
    return await _collect(subscriber, server.name, sent, _window(started, seconds), busy)


async def _run(seconds: float, quick: bool, workdir: Path, report: Report) -> None:
    procs.raise_nofile()
    count = QUICK_DEVICES if quick else DEVICES
    capacity_seconds = QUICK_CAPACITY_SECONDS if quick else CAPACITY_SECONDS
    async with (
        procs.broker(workdir) as mosquitto,
        procs.edge(workdir, mosquitto.url, **_EDGE_LIMITS) as edge,
        procs.bare_server(workdir, mosquitto.port) as bare,
    ):
        subscriber = procs.Subscriber(workdir, mosquitto.port, [_TOPICS.all_sensors()], "sensors")
        async with subscriber.running(_TOPICS.sensor("probe", SENSOR)):
            devices = await connect_devices(procs.HOST, edge.port, count)
            bare_devices = await connect_devices(procs.HOST, bare.port, count)
            try:
                await asyncio.sleep(1.0)  # let connecting settle before reading idle memory
                edge_idle, bare_idle = edge.rss_kib(), bare.rss_kib()
                stats0 = await edge.stats(_STATS_WITHIN)

                async def edge_busy() -> bool:
                    return bool((await edge.stats(_STATS_WITHIN))["mqtt"]["queued"])

                # 1. capacity, flat out (the telemetry case's code)
                run = await _capacity(
                    subscriber, edge, _edge_published, devices, capacity_seconds, edge_busy
                )
                capacity = run.window_rate
                rate = OVERLOAD * capacity
                bare_capacity = (
                    await _capacity(
                        subscriber, bare, _bare_published, bare_devices, capacity_seconds, None
                    )
                ).window_rate

                # 2. the edge at 3x its capacity
                before = await edge.stats(_STATS_WITHIN)
                metrics_before = await _metrics(edge.port)
                sampled = Sampled()

                async def queued() -> int:
                    return int((await edge.stats(_STATS_WITHIN))["mqtt"]["queued"])

                sampler = asyncio.create_task(_sample(edge, sampled, queued))
                started = time.time_ns()
                offered = await _overload(devices, rate, seconds)
                frames = before["frames_received"] + offered.sent

                progress = [0, time.monotonic()]

                async def edge_drained() -> bool:
                    """All sent read and published; also ends 5 s without progress."""
                    stats = await edge.stats(_STATS_WITHIN)
                    read = stats["frames_received"]
                    if read != progress[0]:
                        progress[:] = [read, time.monotonic()]
                    stuck = time.monotonic() - progress[1] > 5.0
                    return stuck or (read >= frames and not stats["mqtt"]["queued"])

                drained = await _until(edge_drained, DRAIN_SECONDS)
                sampler.cancel()
                unwritten = [d.transport.get_write_buffer_size() for d in devices if d.transport]
                after = await edge.stats(_STATS_WITHIN)
                metrics_after = await _metrics(edge.port)
                arrived = await _collect(
                    subscriber, "edge", offered.sent, _window(started, seconds), edge_busy
                )

                # 3. the bare bridge under the same offered rate
                bare_sampled = Sampled()
                bare_base = await _bare_published(bare)
                sampler = asyncio.create_task(_sample(bare, bare_sampled, None))
                started = time.time_ns()
                bare_offered = await _overload(bare_devices, rate, seconds)

                async def bare_drained() -> bool:
                    return await _bare_published(bare) - bare_base >= bare_offered.sent

                await _until(bare_drained, DRAIN_SECONDS)
                sampler.cancel()
                bare_arrived = await _collect(
                    subscriber, "bare", bare_offered.sent, _window(started, seconds)
                )
            finally:
                for device in devices + bare_devices:
                    device.abort()
        edge.kill()  # measured; its graceful stop is not part of this case
    loss = _loss_by_reason(before, after)
    metric_loss = {
        name: metrics_after.get(name, 0.0) - metrics_before.get(name, 0.0)
        for name in metrics_after
        if name.startswith(("xiaozhi_edge_mqtt_dropped", "xiaozhi_edge_rate_limited"))
    }
    _figures(
        report,
        capacity=(capacity, bare_capacity),
        rate=rate,
        edge=(edge_idle, sampled, offered, arrived),
        bare=(bare_idle, bare_sampled, bare_offered, bare_arrived),
    )
    counted = sum(loss.values())
    missing = offered.sent - arrived.received
    report.figures.append(
        Figure(
            "messages lost, counted by the edge",
            counted,
            "messages",
            reference=missing,
            reference_name="sent - received by the subscriber",
            target="equal (every loss counted)",
        )
    )
    report.notes += [
        f"{count:,} devices per server; rate limit raised to "
        f"{_EDGE_LIMITS['max_messages_per_second']:,}/s per device (capacity, not policy)",
        f"edge capacity flat out: {capacity:,.0f} msg/s ({run.sent:,} sent, "
        f"{run.received:,} received); offered {OVERLOAD:g}x = {rate:,.0f} msg/s for {seconds:g} s",
        f"edge: offered {offered.offered:,}, sent {offered.sent:,}, held back "
        f"{offered.held_back:,} turns on {len(offered.devices_held):,} of {count:,} devices; "
        f"received by the subscriber {arrived.received:,}; "
        f"edge drained within {DRAIN_SECONDS:g} s: {drained}",
        f"edge loss by reason (/stats): {loss or 'none'}; /metrics: "
        f"{ {k: int(v) for k, v in metric_loss.items() if v} or 'none' }",
        f"edge MQTT queue during overload (/stats, every 0.5 s): peak "
        f"{max(sampled.queued, default=0):,} of {stats0['mqtt'].get('queued', 0):,} at idle; "
        f"frames read {after['frames_received'] - before['frames_received']:,}",
        f"devices after the drain: {sum(unwritten):,} bytes still in their own write buffers, "
        f"on {sum(1 for u in unwritten if u):,} devices",
        f"edge after the drain: {after['connections']:,} connections of {count:,}, closes "
        f"{after['counters']['closes']}, reads paused for the MQTT queue "
        f"{after['counters']['reads_paused'] - before['counters']['reads_paused']:,} times, "
        f"queued_bytes {after['mqtt']['queued_bytes']:,}",
        f"bare bridge: offered {bare_offered.offered:,}, sent {bare_offered.sent:,}, held back "
        f"{bare_offered.held_back:,}; received {bare_arrived.received:,}",
    ]


def _figures(
    report: Report,
    *,
    capacity: tuple[float, float],
    rate: float,
    edge: tuple[int, Sampled, Offered, Run],
    bare: tuple[int, Sampled, Offered, Run],
) -> None:
    edge_idle, edge_sampled, edge_offered, edge_arrived = edge
    bare_idle, bare_sampled, bare_offered, bare_arrived = bare
    per_message = queued_message_bytes()
    queue_kib = min(QUEUE_MESSAGES * per_message, QUEUE_BYTES) / 1024
    bound = 2 * edge_idle + queue_kib
    report.notes.append(
        f"bound = 2 x idle RSS {edge_idle:,} KiB + the queue's worth {queue_kib:,.0f} KiB "
        f"= {bound:,.0f} KiB; the queue's worth is the lesser of its bounds: "
        f"{QUEUE_MESSAGES:,} messages x {per_message:,.0f} bytes (one queued sensor "
        f"message, tracemalloc) and {QUEUE_BYTES:,} bytes"
    )
    report.figures += [
        Figure(
            "edge capacity, flat out",
            capacity[0],
            "msg/s",
            reference=capacity[1],
            reference_name="bare bridge",
            notes="as the telemetry case measures it; 3x the edge's is offered to both",
        ),
        Figure(
            "peak RSS at 3x capacity",
            edge_sampled.peak_rss_kib,
            "KiB",
            reference=bare_sampled.peak_rss_kib,
            reference_name="bare bridge's peak",
            target=f"<= {bound:,.0f} (2x idle + queue)",
        ),
        Figure("idle RSS", edge_idle, "KiB", reference=bare_idle, reference_name="bare bridge"),
        Figure(
            "RSS growth at 3x capacity",
            edge_sampled.peak_rss_kib - edge_idle,
            "KiB",
            reference=bare_sampled.peak_rss_kib - bare_idle,
            reference_name="bare bridge's",
        ),
        Figure(
            "delivered/s at 3x capacity",
            edge_arrived.window_rate,
            "msg/s",
            reference=bare_arrived.window_rate,
            reference_name="bare bridge",
            notes="received by the subscriber while offered (first 10 % left out)",
        ),
        Figure(
            "devices' achieved send rate",
            edge_offered.sent / edge_offered.seconds,
            "msg/s",
            reference=rate,
            reference_name="offered",
            notes="below offered: devices were slowed by TCP backpressure",
        ),
        Figure(
            "bare bridge: devices' achieved send rate",
            bare_offered.sent / bare_offered.seconds,
            "msg/s",
            reference=rate,
            reference_name="offered",
        ),
    ]


def run_overload(seconds: float, *, quick: bool = False) -> Report:
    """Capacity, then `seconds` at 3x it on the edge and on the bare bridge (docstring)."""
    report = Report(case="overload")
    report.notes.append(f"load average at start: {procs.load_average()}")
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        uvloop.run(_run(seconds, quick, Path(tmp), report))
    report.notes.append(f"load average at end: {procs.load_average()}")
    return report
