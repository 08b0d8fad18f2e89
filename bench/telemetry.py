"""`xiaozhi bench telemetry`: device JSON messages through the edge into Mosquitto.

1,000 devices send seed 003 ``sensor`` messages whose ``value`` is the send time
(`time.time_ns`, one clock for every process on the machine). The edge republishes each on
``xiaozhi/sensors/{device_id}/{sensor_type}`` (:class:`~xiaozhi.payloads.SensorPayload`
keeps the value); ``mosquitto_sub`` receives them and stamps each on arrival. Two references:

* the bare bridge of design.md section 8 (:mod:`xiaozhi_bench.bare_server` with
  ``--mqtt-port``: bare `websockets`, orjson, the topic built, one broker write per
  event-loop pass), fed by the same devices the same way: what issue 14's targets compare
  the edge with;
* the ceiling: the same generator publishing the same payloads straight to Mosquitto, QoS 0
  and retained as the edge does, on one MQTT connection with no wait per message.

Nine runs of `seconds` each, received and timed by the same subscriber:

1. ceiling, as fast as the broker takes it;
2. and 3. bare bridge, then edge, as fast as each takes it: 1,000 devices in turn, one frame
   per write, never more than 20,000 messages ahead of what the server handed to its broker
   connection (``/stats``), so a backlog in socket buffers or in a queue cannot hide anything;
4. to 6. latency at a fixed 16,700 msg/s (1,000 devices x 16.7/s, one 60 ms frame's worth
   each): straight to the broker, through the bare bridge, through the edge;
7. to 9. the same at half the rate the edge reached in run 3 (its latency when not
   overloaded).

Rates count what the subscriber received with an arrival time inside the run's window (the
first 10 % is left out as warm-up); latency is arrival minus send time.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvloop

from xiaozhi.topics import TopicTree
from xiaozhi_bench import procs
from xiaozhi_bench.loadgen import (
    MqttPublisher,
    WsDevice,
    connect_devices,
    mqtt_publish_packet,
    percentile,
    ws_frame,
)
from xiaozhi_bench.runner import Figure, Report

__all__ = ["PACED_RATE", "run_telemetry"]

DEVICES = 1_000
QUICK_DEVICES = 20
PACED_RATE = 16_700  # msg/s: 1,000 devices x 16.7 (issue 6)
QUICK_PACED_RATE = 500
MAX_AHEAD = 20_000  # messages the generator may be ahead of what the edge published
QUICK_MAX_AHEAD = 500
SENSOR = "bench"
_TOPICS = TopicTree()  # the edge under test runs with the default base topic
_EDGE_LIMITS = {"max_messages_per_second": 1_000_000, "burst_messages": 1_000_000}
_BATCH = 200
_TEXT = 0x1


def sensor_message(now_ns: int) -> bytes:
    """What a device sends: a seed 003 sensor message carrying its send time."""
    return b'{"type":"sensor","data":{"sensor_type":"bench","value":%d,"unit":"ns"}}' % now_ns


def republished(device_id: str, now_ns: int) -> bytes:
    """What the edge publishes for it (SensorPayload), byte for byte but the timestamp."""
    return (
        b'{"sensor_type":"bench","value":%d,"device_id":"%s","unit":"ns",'
        b'"timestamp":"2026-01-01T00:00:00.000Z"}' % (now_ns, device_id.encode())
    )


def _value_ns(payload: bytes) -> int | None:
    start = payload.find(b'"value":')
    if start < 0:
        return None
    start += 8
    end = payload.find(b",", start)
    try:
        return int(payload[start:end])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Run:
    """One run as the subscriber saw it."""

    name: str
    sent: int
    received: int  # all that arrived for this run, drained
    window_rate: float  # received per second within the measured window
    latencies_ms: list[float]  # sorted, for messages that arrived in the window

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def _collect(
    subscriber: procs.Subscriber,
    name: str,
    sent: int,
    window: tuple[int, int],
    busy: Callable[[], Awaitable[bool]] | None = None,
) -> Run:
    """Drain the subscriber and measure the run.

    Draining ends when all `sent` arrived, or after 1 s without a message while `busy`
    (the edge still has messages to publish) is false, or after 30 s.
    """
    lines: list[tuple[int, bytes]] = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(lines) < sent:
        new = subscriber.take()
        if new:
            lines += new
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0 and (busy is None or not await busy()):
            break
        await asyncio.sleep(0.1)
    start_ns, end_ns = window
    latencies = []
    in_window = 0
    for arrived, payload in lines:
        if start_ns <= arrived <= end_ns:
            in_window += 1
            sent_ns = _value_ns(payload)
            if sent_ns is not None:
                latencies.append((arrived - sent_ns) / 1e6)
    latencies.sort()
    seconds = (end_ns - start_ns) / 1e9
    return Run(name, sent, len(lines), in_window / seconds, latencies)


def _window(started_ns: int, seconds: float) -> tuple[int, int]:
    return started_ns + int(seconds * 0.1e9), started_ns + int(seconds * 1e9)


async def _ceiling_flat_out(publisher: MqttPublisher, ids: list[str], seconds: float) -> int:
    topics = [_TOPICS.sensor(i, SENSOR).encode() for i in ids]
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    sent = 0
    count = len(ids)
    while loop.time() < end:
        batch = []
        for _ in range(_BATCH):
            index = sent % count
            payload = republished(ids[index], time.time_ns())
            batch.append(mqtt_publish_packet(topics[index], payload, retain=True))
            sent += 1
        publisher.write(b"".join(batch))
        await publisher.drain()
        await asyncio.sleep(0)
    return sent


async def _edge_published(server: procs.Child) -> int:
    return int((await server.stats())["mqtt"]["published"])


async def _bare_published(server: procs.Child) -> int:
    return int((await server.stats())["published"])


async def _flat_out(
    server: procs.Child,
    published_by: Callable[[procs.Child], Awaitable[int]],
    devices: list[WsDevice],
    seconds: float,
    max_ahead: int,
) -> int:
    """Devices in turn, as fast as `server` republishes (never `max_ahead` in front)."""
    base = await published_by(server)
    published = [0]

    async def follow() -> None:
        while True:
            published[0] = await published_by(server) - base
            await asyncio.sleep(0.05)

    follower = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    sent = 0
    count = len(devices)
    try:
        while loop.time() < end:
            if sent - published[0] > max_ahead:
                await asyncio.sleep(0.002)
                continue
            for _ in range(_BATCH):
                device = devices[sent % count]
                device.write(ws_frame(_TEXT, sensor_message(time.time_ns())))
                sent += 1
            await asyncio.sleep(0)
    finally:
        follower.cancel()
    return sent


async def _paced(send_one: Callable[[int], None], rate: float, seconds: float) -> int:
    """Call `send_one(index)` `rate` times a second for `seconds`, in 1 ms ticks."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while (elapsed := loop.time() - start) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            send_one(sent)
            sent += 1
        await asyncio.sleep(0.001)
    return sent


async def _run(seconds: float, quick: bool, workdir: Path, report: Report) -> None:
    procs.raise_nofile()
    count = QUICK_DEVICES if quick else DEVICES
    rate = QUICK_PACED_RATE if quick else PACED_RATE
    max_ahead = QUICK_MAX_AHEAD if quick else MAX_AHEAD
    async with (
        procs.broker(workdir) as mosquitto,
        procs.edge(workdir, mosquitto.url, **_EDGE_LIMITS) as edge,
        procs.bare_server(workdir, mosquitto.port) as bare,
    ):
        subscriber = procs.Subscriber(workdir, mosquitto.port, [_TOPICS.all_sensors()], "sensors")
        async with subscriber.running(_TOPICS.sensor("probe", SENSOR)):
            devices = await connect_devices(procs.HOST, edge.port, count)
            bare_devices = await connect_devices(procs.HOST, bare.port, count)
            ids = [d.device_id.replace(":", "") for d in devices]
            topics = [_TOPICS.sensor(i, SENSOR).encode() for i in ids]
            publisher = await MqttPublisher.connect(procs.HOST, mosquitto.port, "bench-ceiling")
            frames_base = (await edge.stats())["frames_received"]
            edge_sent = 0

            async def edge_busy() -> bool:
                stats = await edge.stats()
                mqtt = stats["mqtt"]
                behind = stats["frames_received"] - frames_base < edge_sent
                return bool(behind or mqtt["queued"])

            def direct(index: int) -> None:
                at = index % count
                payload = republished(ids[at], time.time_ns())
                publisher.write(mqtt_publish_packet(topics[at], payload, retain=True))

            def through_edge(index: int) -> None:
                devices[index % count].send_text(sensor_message(time.time_ns()))

            def through_bare(index: int) -> None:
                bare_devices[index % count].send_text(sensor_message(time.time_ns()))

            bare_base = await _bare_published(bare)
            bare_sent = 0

            async def bare_busy() -> bool:
                return await _bare_published(bare) - bare_base < bare_sent

            runs: dict[str, Run] = {}
            try:
                assert mosquitto.pid is not None
                cpu = procs.cpu_seconds(mosquitto.pid)
                started = time.time_ns()
                sent = await _ceiling_flat_out(publisher, ids, seconds)
                window = _window(started, seconds)
                runs["ceiling"] = await _collect(subscriber, "ceiling", sent, window)
                broker_cpu = (procs.cpu_seconds(mosquitto.pid) - cpu) / max(sent, 1)

                cpu = bare.cpu_seconds()
                started = time.time_ns()
                sent = await _flat_out(bare, _bare_published, bare_devices, seconds, max_ahead)
                bare_sent += sent
                window = _window(started, seconds)
                runs["bare"] = await _collect(subscriber, "bare", sent, window, bare_busy)
                bare_cpu = (bare.cpu_seconds() - cpu) / max(sent, 1)

                cpu = edge.cpu_seconds()
                started = time.time_ns()
                sent = await _flat_out(edge, _edge_published, devices, seconds, max_ahead)
                busy_share = (edge.cpu_seconds() - cpu) / ((time.time_ns() - started) / 1e9)
                edge_sent += sent
                window = _window(started, seconds)
                runs["edge"] = await _collect(subscriber, "edge", sent, window, edge_busy)
                edge_cpu = (edge.cpu_seconds() - cpu) / max(sent, 1)

                # at the rate, then at half what the edge managed flat out
                low = max(100.0, round(runs["edge"].window_rate / 2, -2))
                for label, paced_rate in (("paced", rate), ("paced low", low)):
                    started = time.time_ns()
                    sent = await _paced(direct, paced_rate, seconds)
                    window = _window(started, seconds)
                    name = f"ceiling {label}"
                    runs[name] = await _collect(subscriber, name, sent, window)

                    started = time.time_ns()
                    sent = await _paced(through_bare, paced_rate, seconds)
                    bare_sent += sent
                    window = _window(started, seconds)
                    name = f"bare {label}"
                    runs[name] = await _collect(subscriber, name, sent, window, bare_busy)

                    started = time.time_ns()
                    sent = await _paced(through_edge, paced_rate, seconds)
                    edge_sent += sent
                    window = _window(started, seconds)
                    name = f"edge {label}"
                    runs[name] = await _collect(subscriber, name, sent, window, edge_busy)
                stats = await edge.stats()
            finally:
                with contextlib.suppress(Exception):
                    await publisher.disconnect()
                for device in devices + bare_devices:
                    device.abort()
        edge.kill()  # measured; its graceful stop is not part of this case
    _figures(report, runs, rate, low)
    report.figures.insert(
        1,
        Figure(
            "CPU per message, flat out",
            edge_cpu * 1e6,
            "us",
            reference=bare_cpu * 1e6,
            reference_name="the bare bridge's",
            notes="edge process CPU time / messages it took, including draining its queue",
        ),
    )
    report.notes.append(f"Mosquitto's CPU per message, ceiling run: {broker_cpu * 1e6:.2f} us")
    report.notes.append(
        f"edge CPU while the generator ran flat out: {busy_share:.0%} of one core "
        f"(1 / CPU per message = {1 / edge_cpu if edge_cpu else 0:,.0f} msg/s per core)"
    )
    report.notes += [
        f"{count:,} devices on one edge process; edge rate limit raised to "
        f"{_EDGE_LIMITS['max_messages_per_second']:,}/s per device for the flat-out run",
        f"edge mqtt: {stats['mqtt']['published']:,} published, "
        f"{stats['mqtt']['dropped_qos0']:,} dropped (QoS 0 queue full), "
        f"rate limited {stats['counters']['rate_limited']:,}",
    ]
    for run in runs.values():
        report.notes.append(
            f"{run.name}: sent {run.sent:,}, received {run.received:,} "
            f"({run.sent - run.received:,} missing), {len(run.latencies_ms):,} timed in window"
        )


def _figures(report: Report, runs: dict[str, Run], rate: float, low: float) -> None:
    ceiling, bare, edge = runs["ceiling"], runs["bare"], runs["edge"]
    report.figures.append(
        Figure(
            "msg/s through the edge",
            edge.window_rate,
            "msg/s",
            reference=bare.window_rate,
            reference_name="bare bridge",
            target=">= 50,000 and >= 0.5 of the bare bridge",
        )
    )
    report.figures.append(
        Figure(
            "msg/s through the bare bridge",
            bare.window_rate,
            "msg/s",
            reference=ceiling.window_rate,
            reference_name="straight to Mosquitto",
        )
    )
    for label, paced_rate in (("paced", rate), ("paced low", low)):
        bare_paced, paced = runs[f"bare {label}"], runs[f"edge {label}"]
        direct = runs[f"ceiling {label}"]
        at = f"at {paced_rate:,.0f} msg/s"
        report.figures.append(
            Figure(
                f"delivered {at}",
                paced.window_rate,
                "msg/s",
                reference=bare_paced.window_rate,
                reference_name="bare bridge",
            )
        )
        for q in (50, 99, 100):
            report.figures.append(
                Figure(
                    f"{'max' if q == 100 else f'p{q}'} latency {at}",
                    paced.p(q),
                    "ms",
                    reference=bare_paced.p(q),
                    reference_name="bare bridge",
                    target="<= 2x the bare bridge" if q == 99 and label == "paced" else "",
                )
            )
        report.notes.append(
            f"straight to Mosquitto {at}: p50 {direct.p(50):.3f} ms, p99 {direct.p(99):.3f} ms, "
            f"max {direct.p(100):.3f} ms"
        )


def run_telemetry(seconds: float, *, quick: bool = False) -> Report:
    """Six runs of `seconds` each (see the module docstring)."""
    report = Report(case="telemetry")
    report.notes.append(f"load average at start: {procs.load_average()}")
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        uvloop.run(_run(seconds, quick, Path(tmp), report))
    report.notes.append(f"load average at end: {procs.load_average()}")
    return report
