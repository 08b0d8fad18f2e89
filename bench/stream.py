"""`xiaozhi bench stream`: the hub's live stream to 50 subscribers, and the dashboard's first
render with 10,000 devices (issue 15, point 5).

**Fan-out.** One hub (`xiaozhi hub`, the demo home) and 50 stream subscribers on its
``/api/v1/stream`` (V3, subscribed to ``xiaozhi/sensors/#``). A publisher floods Mosquitto
with sensor readings of 100 devices (QoS 0, in batches of 500 with a drain between); the hub
hears each once on its MQTT connection and pushes it to every subscriber. Each subscriber is a
bare asyncio protocol that counts binary WebSocket frames (nothing decoded: the client costs
next to nothing, so the hub is what is measured). Delivered rate = frames received by all 50
over the span from the first frame to the last; frames the hub dropped for a slow subscriber
(``/api/v1/stats``, a session's bounded queue) are reported beside it. The reference is the
same readings, published the same way, read by 50 bare MQTT subscribers (Mosquitto's own
``mosquitto_sub``) straight from the broker: what a client gets without the hub in between.

**First render.** 10,000 devices' retained statuses are published; once the hub knows them,
Debian's chromium (Playwright, headless) opens the dashboard signed in, and the figure is the
page's clock (``performance.now()``, from navigation) at the first animation frame where the
fleet table is shown: the REST read of the fleet, the count of all its devices and the rows on
screen (the table is virtualised: it holds a screenful, not 10,000 rows). Then the stream
replays the 10,000 retained statuses into the open page, and all 10,000 devices go
``disconnected`` on MQTT: the second figure is the time until the page counts 0 connected.
The longest main-thread task over the whole visit (``PerformanceObserver`` long tasks) says
whether the page froze. The references are a static HTML table of the same 10,000 rows and
columns, with the dashboard's stylesheet, rendered by the same browser and timed the same way,
and the same status cells of that table rewritten by one script (no network at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

from xiaozhi.stream_frame import MessageType, StreamMessage, StreamVersion, encode_message
from xiaozhi_bench import procs
from xiaozhi_bench.loadgen import BINARY, MqttPublisher, WsDevice, mqtt_publish_packet, ws_frame
from xiaozhi_bench.runner import Figure, Report

__all__ = ["run_stream"]

SUBSCRIBERS = 50
QUICK_SUBSCRIBERS = 5
READINGS = 10_000
QUICK_READINGS = 500
FLEET = 10_000
QUICK_FLEET = 300
SENSOR_DEVICES = 100
BATCH = 500
API_KEY = "bench-stream-key"
CHROMIUM = Path("/usr/bin/chromium")
TARGET_EVENTS = 1_000  # events/s to each of 50 subscribers
TARGET_RENDER_MS = 2_000
TARGET_LONG_TASK_MS = 200
_QUIET_SECONDS = 1.5  # no frame for this long: the flood is over


@dataclass(slots=True)
class FanOut:
    received: int = 0
    seconds: float = float("nan")
    dropped: int = 0

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else float("nan")


@dataclass(slots=True)
class Render:
    first_ms: float = float("nan")
    static_ms: float = float("nan")
    update_ms: float = float("nan")
    static_update_ms: float = float("nan")
    longest_task_ms: float = float("nan")
    long_tasks: int = 0
    longest: list[tuple[float, float]] = field(default_factory=list)  # (start, duration) ms


def _reading(device: int, value: int) -> tuple[bytes, bytes]:
    device_id = f"bench{device:03d}"
    topic = f"xiaozhi/sensors/{device_id}/temperature".encode()
    payload = orjson.dumps(
        {"sensor_type": "temperature", "value": value, "unit": "C", "device_id": device_id}
    )
    return topic, payload


async def _flood(port: int, readings: int) -> None:
    publisher = await MqttPublisher.connect(procs.HOST, port, f"bench-flood-{uuid.uuid4().hex[:6]}")
    try:
        for start in range(0, readings, BATCH):
            for n in range(start, min(start + BATCH, readings)):
                publisher.write(mqtt_publish_packet(*_reading(n % SENSOR_DEVICES, n)))
            await publisher.drain()
            await asyncio.sleep(0)
    finally:
        await publisher.disconnect()


async def _span(count: Any, expected: int, within: float) -> tuple[int, float]:
    """Sample ``count()`` until it reaches ``expected`` or stops growing; (final count, seconds
    from its first growth to its last)."""
    start = count()
    first = last = 0.0
    seen = start
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # a sampling clock, not a wait for an event
        now, value = time.monotonic(), count()
        if value != seen:
            first = first or now
            last, seen = now, value
        if seen - start >= expected or (first and now - last > _QUIET_SECONDS):
            break
    return seen - start, (last - first) if first else float("nan")


def _frame(message_type: MessageType, data: dict[str, Any]) -> bytes:
    message = StreamMessage(message_type, data, version=StreamVersion.V3, timestamp_us=1)
    return ws_frame(BINARY, encode_message(message))


async def _stream_subscriber(port: int) -> WsDevice:
    """A stream connection that negotiates V3, subscribes to the readings, then only counts."""
    client = await WsDevice.connect(procs.HOST, port, path="/api/v1/stream")
    client.write(_frame(MessageType.VERSION_CHECK, {"versions": [3], "api_key": API_KEY}))
    client.write(_frame(MessageType.SUBSCRIBE, {"topics": ["xiaozhi/sensors/#"]}))
    deadline = time.monotonic() + 10
    while client.binary_frames < 3:  # PROTOCOL_NEGOTIATION, VERSION_CHECK, SUBSCRIPTION_ACK
        if time.monotonic() > deadline or client.closed.done():
            raise procs.BenchProcessError("a stream subscriber was not acknowledged")
        await asyncio.sleep(0.01)
    return client


async def _hub_stats(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(
            f"http://{procs.HOST}:{port}/api/v1/stats", headers={"X-API-Key": API_KEY}
        )
    return dict(answer.json()["data"])


async def _fan_out(
    workdir: Path, mqtt_url: str, port: int, subscribers: int, readings: int
) -> FanOut:
    async with procs.hub(workdir, mqtt_url, stt_engine="none", api_keys=API_KEY) as hub:
        clients = [await _stream_subscriber(hub.port) for _ in range(subscribers)]
        try:
            base = sum(c.binary_frames for c in clients)
            flood = asyncio.create_task(_flood(port, readings))
            received, seconds = await _span(
                lambda: sum(c.binary_frames for c in clients) - base, subscribers * readings, 60
            )
            await flood
            stats = await _hub_stats(hub.port)
            dropped = sum(int(s["dropped"]) for s in stats["stream"]["sessions"])
        finally:
            for client in clients:
                client.abort()
        hub.kill()  # measured; its graceful stop is not part of this case
    return FanOut(received, seconds, dropped)


async def _mqtt_reference(workdir: Path, port: int, subscribers: int, readings: int) -> FanOut:
    async with contextlib.AsyncExitStack() as stack:
        subs = [
            await stack.enter_async_context(
                procs.Subscriber(workdir, port, ["xiaozhi/sensors/#"], f"sub{n}").running(
                    "xiaozhi/sensors/probe/temperature"
                )
            )
            for n in range(subscribers)
        ]

        def size() -> int:  # bytes written by all: cheap to sample, nothing parsed meanwhile
            return sum(sub.path.stat().st_size for sub in subs)

        flood = asyncio.create_task(_flood(port, readings))
        await _span(size, 1 << 62, 60)  # until the files stop growing
        await flood
        arrivals = [t for sub in subs for t, line in sub.take() if line.startswith(b'{"sensor')]
        received = len(arrivals)
        seconds = (max(arrivals) - min(arrivals)) / 1e9 if arrivals else float("nan")
    return FanOut(received, seconds)


async def _publish_fleet(port: int, fleet: int, status: str) -> None:
    """Every device's retained status, in batches with a drain between."""
    publisher = await MqttPublisher.connect(procs.HOST, port, f"bench-fleet-{uuid.uuid4().hex[:6]}")
    try:
        for start in range(0, fleet, BATCH):
            for n in range(start, min(start + BATCH, fleet)):
                publisher.write(mqtt_publish_packet(*_status(n, status), retain=True))
            await publisher.drain()
    finally:
        await publisher.disconnect()


def _status(device: int, status: str) -> tuple[bytes, bytes]:
    device_id = f"fleet{device:05d}"
    payload = orjson.dumps(
        {
            "status": status,
            "device_id": device_id,
            "transport": "websocket",
            "firmware_version": "1.8.2",
            "uptime": device,
        }
    )
    return f"xiaozhi/status/{device_id}".encode(), payload


STATIC_TABLE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/ui/style.css"></head><body><main>
<table class="list"><thead><tr><th>device</th><th>name</th><th>area</th><th>status</th>
<th>transport</th><th>firmware</th><th>last seen</th><th></th></tr></thead>
<tbody id="devices">{rows}</tbody></table></main></body></html>"""

_STATIC_UPDATE = """async () => {
  const started = performance.now();
  for (const td of document.querySelectorAll("#devices td.status")) {
    td.className = "status disconnected";
    td.textContent = "disconnected";
  }
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return performance.now() - started;
}"""

_LONG_TASKS = """window.__long = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__long.push([entry.startTime, entry.duration]);
}).observe({ type: "longtask", buffered: true });"""


def _static_table(devices: int) -> str:
    row = (
        '<tr><td><a href="#/device/{id}">{id}</a></td><td>{id}</td><td></td>'
        '<td class="status connected">connected</td><td>websocket</td><td>1.8.2</td>'
        '<td class="seen">1 s ago</td><td></td></tr>'
    )
    return STATIC_TABLE.format(
        rows="".join(row.format(id=escape(f"fleet{n:05d}")) for n in range(devices))
    )


async def _render(workdir: Path, mqtt_url: str, port: int, fleet: int) -> Render:
    from playwright.async_api import async_playwright

    result = Render()
    async with procs.hub(workdir, mqtt_url, stt_engine="none", api_keys=API_KEY) as hub:
        await _publish_fleet(port, fleet, "connected")
        deadline = time.monotonic() + 60
        while (await _hub_stats(hub.port))["devices"]["known"] < fleet:
            if time.monotonic() > deadline:
                raise procs.BenchProcessError("the hub did not learn the fleet within 60 s")
            await asyncio.sleep(0.2)
        total = (await _hub_stats(hub.port))["devices"]["known"]
        url = f"http://{procs.HOST}:{hub.port}"
        rows = f"document.querySelectorAll('#devices tr').length >= {total}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
            )
            try:
                page = await (await browser.new_context()).new_page()
                await page.route(
                    f"{url}/static-table",
                    lambda route: route.fulfill(
                        body=_static_table(total), content_type="text/html"
                    ),
                )
                await page.goto(f"{url}/static-table")
                await page.wait_for_function(rows, polling="raf", timeout=60_000)
                result.static_ms = float(await page.evaluate("performance.now()"))
                result.static_update_ms = float(await page.evaluate(_STATIC_UPDATE))

                page = await (await browser.new_context()).new_page()
                await page.add_init_script(
                    f"localStorage.setItem('xiaozhi_api_key', {orjson.dumps(API_KEY).decode()});"
                    + _LONG_TASKS
                )
                await page.goto(f"{url}/")
                count = "document.querySelector('#count').textContent"
                listed = (
                    f"{count}.startsWith('{total} of {total} ')"
                    " && document.querySelector('#devices tr[data-device]') !== null"
                )
                await page.wait_for_function(listed, polling="raf", timeout=60_000)
                result.first_ms = float(await page.evaluate("performance.now()"))
                # The stream replays every retained status into the open page now; then
                # every device goes disconnected, and the page shows each change.
                await page.wait_for_function(
                    "document.querySelector('#live').textContent.startsWith('live')",
                    timeout=30_000,
                )
                await asyncio.sleep(_QUIET_SECONDS)  # the replay: nothing to wait for on screen
                started = time.monotonic()
                await _publish_fleet(port, fleet, "disconnected")
                shown = "document.querySelector('#count').textContent.endsWith(' 0 connected')"
                await page.wait_for_function(shown, polling="raf", timeout=60_000)
                result.update_ms = (time.monotonic() - started) * 1000
                await asyncio.sleep(0.5)  # a long task is reported once it has ended
                tasks = [(float(a), float(d)) for a, d in await page.evaluate("window.__long")]
                result.long_tasks = len(tasks)
                result.longest_task_ms = max((d for _, d in tasks), default=0.0)
                result.longest = sorted(tasks, key=lambda t: -t[1])[:5]
            finally:
                await browser.close()
        hub.kill()
    return result


async def _run(
    quick: bool, workdir: Path, browser: bool
) -> tuple[FanOut, FanOut, Render | None, int, int]:
    procs.raise_nofile()
    subscribers = QUICK_SUBSCRIBERS if quick else SUBSCRIBERS
    readings = QUICK_READINGS if quick else READINGS
    async with procs.broker(workdir / "fan-out") as mosquitto:
        reference = await _mqtt_reference(workdir, mosquitto.port, subscribers, readings)
        ours = await _fan_out(workdir, mosquitto.url, mosquitto.port, subscribers, readings)
    render = None
    if browser:
        async with procs.broker(workdir / "render") as mosquitto:
            fleet = QUICK_FLEET if quick else FLEET
            render = await _render(workdir, mosquitto.url, mosquitto.port, fleet)
    return ours, reference, render, subscribers, readings


def run_stream(seconds: float, *, quick: bool = False) -> Report:
    """The fan-out and the first render (module docstring); ``seconds`` is unused (counts)."""
    from xiaozhi_runtime.logs import configure_logging

    configure_logging(level="warning")
    report = Report(case="stream")
    report.notes.append(f"load average at start: {procs.load_average()}")
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        ours, reference, render, subscribers, readings = uvloop.run(
            _run(quick, Path(tmp), CHROMIUM.exists())
        )
    report.figures += [
        Figure(
            f"events/s pushed to {subscribers} stream subscribers (all together)",
            ours.rate,
            "events/s",
            reference=reference.rate,
            reference_name=f"{subscribers} bare MQTT subscribers, same readings",
        ),
        Figure(
            "events/s to each stream subscriber",
            ours.rate / subscribers,
            "events/s",
            reference=reference.rate / subscribers,
            reference_name="each bare MQTT subscriber",
            target=f">= {TARGET_EVENTS:,} events/s each, {SUBSCRIBERS} subscribers",
        ),
    ]
    report.notes.append(
        f"fan-out: {readings:,} readings flooded; the stream delivered "
        f"{ours.received:,} of {subscribers * readings:,} frames in {ours.seconds:.2f} s, "
        f"the hub dropped {ours.dropped:,} for slow subscribers (a session's queue is bounded); "
        f"MQTT delivered {reference.received:,} in {reference.seconds:.2f} s"
    )
    if render is None:
        report.notes.append(f"first render not measured: no {CHROMIUM}")
        return report
    fleet = QUICK_FLEET if quick else FLEET
    report.figures += [
        Figure(
            f"dashboard first render, {fleet:,} devices",
            render.first_ms,
            "ms",
            reference=render.static_ms,
            reference_name=f"a static table of {fleet:,} rows, same browser",
            target=f"<= {TARGET_RENDER_MS:,} ms",
        ),
        Figure(
            f"{fleet:,} status changes shown live",
            render.update_ms,
            "ms",
            reference=render.static_update_ms,
            reference_name="the same cells rewritten in one script, static table",
            notes="published on MQTT -> hub -> stream -> page; the reference has no network",
        ),
        Figure(
            "longest main-thread task (page open, replay, changes)",
            render.longest_task_ms,
            "ms",
            reference=render.static_ms,
            reference_name="the static table's whole first render",
            target=f"<= {TARGET_LONG_TASK_MS} ms",
        ),
    ]
    report.notes.append(
        f"render: {render.long_tasks} long tasks (> 50 ms) from navigation until every "
        f"change was shown (the stream's replay of {fleet:,} retained statuses included); "
        "the longest, as start/duration in ms from navigation: "
        + ", ".join(f"{a:,.0f}/{d:,.0f}" for a, d in render.longest)
        + f" (first render at {render.first_ms:,.0f})"
    )
    return report
