"""The dashboard in a real browser (issue 15, point 4): Playwright driving Debian's
``chromium`` (scripts/ensure-system-packages.sh installs it; no browser is ever downloaded)
on a real hub, edge, simulated device and Mosquitto. Every request to a host other than
127.0.0.1 is aborted, as on a LAN without internet, and the page must still work.

Screenshots of each page (``dashboard-*.png``) are written to ``artifacts/dashboard/`` at the
top of the checkout (git-ignored; what CI keeps), or to ``$XIAOZHI_DASHBOARD_SHOTS`` when
set, so that a person looks at them after every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    Dialog,
    Page,
    Route,
    WebSocketRoute,
    async_playwright,
    expect,
)

from tests.conftest import StartEdge
from tests.edge.helpers import tone_packets
from tests.hub.conftest import READ_KEY, WRITE_KEY
from tests.hub.test_activation import firmware_headers, new_mac, setup_call
from tests.hub.test_hub_mqtt import snapshot_shows
from tests.hub.test_simulated_devices import tools_kept
from tests.support import Recorder
from xiaozhi import __version__
from xiaozhi.audio_monitor import AudioPacket, encode_audio_packet
from xiaozhi.stream_frame import (
    Flag,
    MessageType,
    StreamMessage,
    StreamVersion,
    decode_message,
    encode_message,
)
from xiaozhi_hub.http import RunningHub, run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mic_and_speaker import tone
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

CHROMIUM = Path("/usr/bin/chromium")
V3 = StreamVersion.V3

pytestmark = [
    pytest.mark.integration,  # a real Mosquitto, hub, edge and simulator
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: run scripts/ensure-system-packages.sh (apt chromium)",
    ),
]


@pytest.fixture
def shots() -> Path:
    default = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
    folder = Path(os.environ.get("XIAOZHI_DASHBOARD_SHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: CI and this machine run tests as root, where Chromium's sandbox refuses.
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    async with open_page(browser) as opened:
        yield opened


@contextlib.asynccontextmanager
async def open_page(
    browser: Browser,
    *,
    init_script: str | None = None,
    ignore_https_errors: bool = False,
    width: int = 1200,
) -> AsyncIterator[Page]:
    """A fresh page whose requests to anything but 127.0.0.1 are aborted (and listed)."""
    context = await browser.new_context(
        viewport={"width": width, "height": 800}, ignore_https_errors=ignore_https_errors
    )
    if init_script is not None:
        await context.add_init_script(init_script)
    aborted: list[str] = []

    async def offline(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            aborted.append(route.request.url)
            await route.abort()

    await context.route("**/*", offline)
    errors: list[str] = []
    opened = await context.new_page()
    opened.on("pageerror", lambda err: errors.append(str(err)))
    yield opened
    await context.close()
    assert aborted == []  # the page never reached out of the LAN (no CDN)
    assert errors == []  # no uncaught script error


async def sign_in(page: Page, hub: RunningHub, shots: Path) -> None:
    await page.goto(hub.url + "/")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin")).to_contain_text("<state dir>/api_key")
    await page.screenshot(path=shots / "dashboard-signin.png")
    await page.fill("#key", WRITE_KEY)
    await page.click("#signin-form button")
    await expect(page.locator("#live")).to_contain_text("live V3")


async def test_sign_in_and_a_device_that_connects_appears_without_reload(
    running_hub: RunningHub,
    hub_settings: HubSettings,
    start_edge: StartEdge,
    sim_settings: SimSettings,
    engine: IntentEngine,
    watcher: Recorder,
    page: Page,
    shots: Path,
) -> None:
    await sign_in(page, running_hub, shots)
    fleet = page.locator("#devices")
    await expect(fleet.locator('tr[data-device="demo_kitchen"]')).to_contain_text("never seen")
    await page.evaluate("window.notReloaded = true")
    # the page's stream made the hub open its events/+ connection: the device's first events
    # (the MCP tools it announces on connecting) reach the page
    await asyncio.wait_for(running_hub.service.stream.events_subscribed.wait(), 10)

    edge = await start_edge(base_topic=hub_settings.base_topic)
    url = f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/"
    device = WsDevice(
        make_identity(name="browser-live"), sim_settings.model_copy(update={"sim_ws_url": url})
    )
    await device.start()
    try:
        await device.wake()
        connected_at = time.monotonic()
        row = fleet.locator(f'tr[data-device="{device.device_id}"]')
        await expect(row.locator("td.status")).to_have_text("connected", timeout=2000)
        shown_after = time.monotonic() - connected_at
        assert shown_after < 2.0
        print(f"device row connected {shown_after * 1000:.0f} ms after its channel opened")
        assert await page.evaluate("window.notReloaded") is True  # the stream, no reload
        await expect(row).to_contain_text("websocket")
        await page.screenshot(path=shots / "dashboard-fleet.png")
        await device.close_channel()  # a reconnection shows live too
        await expect(row.locator("td.status")).to_have_text("disconnected")
        await device.wake()
        await expect(row.locator("td.status")).to_have_text("connected")

        # search and filter
        await page.fill("#search", device.device_id)
        await expect(fleet.locator("tr")).to_have_count(1)
        await page.fill("#search", "kitchen speaker")  # every word, in any column
        await expect(fleet.locator("tr")).to_have_count(1)
        await expect(fleet.locator("tr")).to_contain_text("demo_kitchen")
        await page.fill("#search", "")
        await page.select_option("#status-filter", "connected")
        await expect(fleet.locator("tr")).to_have_count(1)
        await page.select_option("#status-filter", "")

        # the device page; a command sent from it reaches the device, whose edge reports it
        await row.locator("a").click()
        await expect(page.locator("#device-title")).to_contain_text(device.device_id)
        await expect(page.locator("#device-info")).to_contain_text("connected")
        await page.fill("#command-name", "set_volume")
        await page.fill("#command-parameters", '{"volume": 35}')
        await page.click("#command-form button")
        await expect(page.locator("#command-result")).to_contain_text("command published")
        result = page.locator('#device-events tr[data-type="command_result"]')
        await expect(result).to_contain_text("set_volume · ok")  # its gist, not raw JSON
        assert device.model.volume == 35  # the simulated device really applied it
        tools = page.locator("#device-tools")
        await expect(tools).to_contain_text("self.audio_speaker.set_volume")  # its MCP tools

        # listen live: the hub joins the edge's audio monitor over MQTT; while the device
        # talks, the page counts its packets and WebCodecs decodes them
        await page.click("#listen")
        await expect(page.locator("#listen-state")).to_have_text("listening")
        talking = asyncio.create_task(talk(device))
        try:
            await expect(page.locator("#listen-decoded")).not_to_have_text("0", timeout=5000)
            await expect(page.locator("#listen-problem")).to_have_text("")
            await expect(page.locator("#listen-how")).to_have_text(
                "decoded in this browser (WebCodecs)"  # on 127.0.0.1: a secure context
            )
            assert int(await page.locator("#listen-packets").inner_text()) > 0
            await page.screenshot(path=shots / "dashboard-listen.png")
        finally:
            talking.cancel()
        level = await page.locator("#listen-level").get_attribute("value")
        print(f"listened: {await page.locator('#listen-packets').inner_text()} packets")
        await page.click("#listen")
        await expect(page.locator("#listen-state")).to_have_text("stopped")
        assert level is not None

        # rename it and set its area from its page (PATCH /devices/{id})
        await page.fill("#edit-name", "Hall speaker")
        await page.select_option("#edit-area", "office")
        await page.click("#edit-form button:text('Save')")
        await expect(page.locator("#edit-result")).to_have_text("device updated")
        await expect(page.locator("#device-title")).to_have_text(
            f"Hall speaker ({device.device_id})"
        )
        await expect(page.locator("#device-info")).to_contain_text("Office")
        record = running_hub.service.registry.device(device.device_id)
        assert record is not None
        assert (record.name, record.area) == ("Hall speaker", "office")
        # an edit made elsewhere (a bridge request) reaches the open page over the stream
        request = {"id": device.device_id, "area": "kitchen"}
        await watcher.publish(running_hub.service.topics.bridge_request("device/area"), request)
        await expect(page.locator("#device-info")).to_contain_text("Kitchen")
        await expect(page.locator("#edit-area")).to_have_value("kitchen")
        await page.screenshot(path=shots / "dashboard-device.png", full_page=True)

        # the home model: the device is in the kitchen, live; the bridge: its edge is online
        await page.click('nav a[href="#/home"]')
        kitchen = page.locator('#home-areas .area[data-area="kitchen"]')
        await expect(kitchen.locator(f'li[data-device="{device.device_id}"]')).to_contain_text(
            "Hall speaker connected"
        )
        await expect(kitchen.locator('tr[data-entity="light.kitchen"]')).to_contain_text("mqtt")
        living = page.locator('#home-areas tr[data-entity="light.living_room"]')
        await expect(living.locator("td.state")).to_have_text("off")
        await page.screenshot(path=shots / "dashboard-home.png", full_page=True)
        await page.click('nav a[href="#/bridge"]')
        edge_row = page.locator(f'#bridge-edges tr[data-edge="{edge.settings.edge_id}"]')
        await expect(edge_row).to_contain_text("online")
        await expect(edge_row).to_contain_text("1 connected, 1 seen")
        await expect(page.locator("#bridge-shared")).to_have_text("online")
        hub_row = page.locator(f'#bridge-hub tr[data-hub="{hub_settings.hub_id}"]')
        await expect(hub_row).to_contain_text("online")
        # one row per hub replica, from each one's own retained state: this hub's, and
        # another replica's as it starts and as it stops
        replicas = page.locator("#bridge-hubs")
        mine = replicas.locator(f'tr[data-replica="{hub_settings.hub_id}"]')
        await expect(mine.locator("td").nth(0)).to_have_text(f"{hub_settings.hub_id} (this hub)")
        await expect(mine.locator("td").nth(1)).to_have_text("online")
        await expect(mine.locator("td.version")).to_have_text(__version__)
        # its figures as its state re-publishes them (every 30 s when changed; now here)
        assert running_hub.service.monitor.refresh_state()
        await expect(mine.locator("td.devices")).to_contain_text("1 of")
        second = hub_settings.model_copy(update={"hub_id": hub_settings.hub_id + "-b"})
        other = replicas.locator(f'tr[data-replica="{second.hub_id}"]')
        replica = HubService(second, home=engine.home, engine=engine)
        await replica.start()
        try:
            # another replica's figures too, from its own retained state
            await expect(other.locator("td").nth(1)).to_have_text("online")
            await expect(other.locator("td.version")).to_have_text(__version__)
            await expect(other.locator("td.devices")).to_contain_text("connected")
            await expect(other.locator("td.up")).to_contain_text(" s")
            await page.screenshot(path=shots / "dashboard-bridge.png", full_page=True)
        finally:
            await replica.stop()
        await expect(other.locator("td").nth(1)).to_have_text("offline")
        await expect(other.locator("td.version")).to_have_text(__version__)  # as it stopped
        await expect(other.locator("td.devices")).to_have_text("")
        await page.click('nav a[href="#/"]')
        await row.locator("a").click()

        page.on("dialog", accept)  # "Restart ...?", then "Forget ...?"
        await page.click("#restart")  # from its page: the reboot command
        await expect(page.locator("#command-result")).to_contain_text("reboot on")
        await expect(result.first).to_contain_text("reboot · ok")
    finally:
        await device.stop()
    await expect(page.locator("#device-info")).to_contain_text("disconnected")
    await page.click('nav a[href="#/"]')
    await expect(row.locator("td.status")).to_have_text("disconnected")
    assert await page.evaluate("window.notReloaded") is True

    # bulk removal: the simulated device goes, the home file's devices stay
    await page.click("#remove-stale")  # disconnected, but seen within 24 h: kept
    await expect(page.locator("#remove-result")).to_have_text("0 devices removed")
    await expect(row).to_have_count(1)
    await page.click("#remove-simulated")
    await expect(page.locator("#remove-result")).to_have_text("1 device removed")
    await expect(row).to_have_count(0)
    await expect(fleet.locator("tr")).to_have_count(3)


async def talk(device: WsDevice) -> None:
    """The device speaks a tone, in real time, until cancelled."""
    while True:
        await device.speak_pcm(tone(0.6))


INSECURE = """
Object.defineProperty(window, "isSecureContext", { value: false });
delete window.AudioDecoder;
"""
"""What a page at http://<LAN address>:8003 is: no secure context, so no WebCodecs."""


async def edge_talks(watcher: Recorder, hub: RunningHub, device_id: str) -> None:
    """The edge's part (topics.md §2.14): a device's real Opus frames on its monitor topic,
    in real time, until cancelled."""
    topic = hub.service.topics.monitor_audio(device_id)
    frames = [encode_audio_packet(AudioPacket(0, 60, 0, f)) for f in tone_packets(600)]
    while True:
        for frame in frames:
            await watcher.publish(topic, frame, qos=0)
            await asyncio.sleep(0.06)  # a talking device's pace, not a wait for anything


async def hears(page: Page, hub: RunningHub, watcher: Recorder, how: str) -> None:
    """On demo_kitchen's page, Listen plays what the device says, decoded ``how``."""
    await page.click('a[href="#/device/demo_kitchen"]')
    await page.click("#listen")
    await expect(page.locator("#listen-state")).to_have_text("listening")
    await expect(page.locator("#listen-how")).to_contain_text(how)
    talking = asyncio.create_task(edge_talks(watcher, hub, "demo_kitchen"))
    try:
        five = re.compile(r"^([5-9]|\d\d+)$")  # frames decoded and scheduled, one after another
        await expect(page.locator("#listen-decoded")).to_have_text(five, timeout=5000)
        await expect(page.locator("#listen-level")).not_to_have_attribute("value", "0")
    finally:
        talking.cancel()
    await expect(page.locator("#listen-problem")).to_have_text("")
    assert int(await page.locator("#listen-packets").inner_text()) > 0


async def test_a_page_without_webcodecs_plays_the_pcm_the_hub_decodes(
    running_hub: RunningHub, watcher: Recorder, browser: Browser, shots: Path
) -> None:
    """The dashboard on a plain-http LAN address: the page asks for ``?format=pcm`` and
    schedules the hub's PCM frames with Web Audio."""
    async with open_page(browser, init_script=INSECURE) as page:
        await sign_in(page, running_hub, shots)
        assert await page.evaluate("window.isSecureContext || 'AudioDecoder' in window") is False
        await hears(page, running_hub, watcher, "decoded by the hub (16-bit PCM)")
        await expect(page.locator("#listen-how")).to_contain_text("needs https or localhost")
        await page.screenshot(path=shots / "dashboard-listen-pcm.png")
        await page.click("#listen")
        await expect(page.locator("#listen-state")).to_have_text("stopped")


async def test_over_the_hubs_own_https_the_page_decodes_with_webcodecs(
    hub_settings: HubSettings,
    engine: IntentEngine,
    watcher: Recorder,
    browser: Browser,
    shots: Path,
) -> None:
    """``XIAOZHI_HUB_TLS_SELF_SIGNED``: the page is a secure context (the browser told to
    accept the self-signed certificate, as a person does once), so WebCodecs decodes."""
    settings = hub_settings.model_copy(update={"hub_tls_self_signed": True})
    async with (
        run_hub(settings, home=engine.home, engine=engine) as hub,
        open_page(browser, ignore_https_errors=True) as page,
    ):
        assert hub.url.startswith("https://")
        await sign_in(page, hub, shots)  # the stream over wss://
        assert await page.evaluate("window.isSecureContext && 'AudioDecoder' in window") is True
        await hears(page, hub, watcher, "decoded in this browser (WebCodecs)")
        await page.screenshot(path=shots / "dashboard-listen-https.png")


async def accept(dialog: Dialog) -> None:
    await dialog.accept()


async def test_a_phrase_tried_shows_its_intent_and_runs_nothing(
    running_hub: RunningHub, watcher: Recorder, page: Page, shots: Path
) -> None:
    await sign_in(page, running_hub, shots)
    before = dict(running_hub.service.counters)
    await page.click('nav a[href="#/try"]')
    await page.fill("#phrase", "turn on the kitchen light")
    await page.click("#try-form button")
    result = page.locator("#try-result")
    await expect(result).to_have_attribute("data-intent", "HassTurnOn")
    await expect(result).to_contain_text("no: a test runs nothing")
    await page.screenshot(path=shots / "dashboard-try.png")
    assert dict(running_hub.service.counters) == before  # no voice command, no action ran


async def test_the_api_docs_render_offline(
    running_hub: RunningHub, page: Page, shots: Path
) -> None:
    await page.goto(running_hub.url + "/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("xiaozhi hub")
    await expect(page.locator(".opblock-summary-path").first).to_be_visible()
    await page.screenshot(path=shots / "dashboard-docs.png")


async def test_the_page_codec_verifies_inflates_and_encodes_real_frames(
    running_hub: RunningHub, page: Page
) -> None:
    """stream.js against the Python codec: a compressed V3 frame decodes, one flipped bit is
    refused by the CRC32, and a frame the page encodes passes ``decode_message``."""
    await page.goto(running_hub.url + "/")
    data = {"seq": 7, "topic": "xiaozhi/status/a", "payload": {"blob": "x" * 5000, "n": [1, 2]}}
    message = StreamMessage(MessageType.ECG_DATA, data, version=V3, timestamp_us=1)
    frame = encode_message(message)
    assert frame[2] & Flag.COMPRESSED  # over 1 KB packed: zlib, inflated by the browser
    tampered = bytearray(frame)
    tampered[-1] ^= 0x01
    decoded = await page.evaluate(DECODE, [list(frame), list(tampered)])
    assert decoded["good"] == {"version": 3, "type": 1, "flags": 1, "data": data}
    assert decoded["bad"] == "CRC32 mismatch"
    sent = bytes(await page.evaluate(ENCODE, {"versions": [3, 2, 1], "api_key": "k"}))
    check = decode_message(sent)  # CRC32 and header checked by the hub's own codec
    assert check.type is MessageType.VERSION_CHECK
    assert check.data == {"versions": [3, 2, 1], "api_key": "k"}
    assert check.timestamp_us is not None


DECODE = """async ([good, bad]) => {
  const { decodeFrame } = await import("/ui/stream.js");
  const buffer = (bytes) => new Uint8Array(bytes).buffer;
  const result = { good: await decodeFrame(buffer(good)) };
  try {
    await decodeFrame(buffer(bad));
    result.bad = "decoded";
  } catch (e) {
    result.bad = e.message;
  }
  return result;
}"""

ENCODE = """async (data) => {
  const { encodeFrame, T } = await import("/ui/stream.js");
  return [...encodeFrame(3, T.VERSION_CHECK, data)];
}"""


async def test_a_wrong_key_is_refused_on_the_sign_in_page(
    running_hub: RunningHub, page: Page
) -> None:
    await page.goto(running_hub.url + "/")
    await page.fill("#key", "not-a-key")
    await page.click("#signin-form button")
    await expect(page.locator("#signin-error")).to_have_text("unknown API key")
    await expect(page.locator("#fleet")).to_be_hidden()
    assert await page.evaluate("localStorage.getItem('xiaozhi_api_key')") is None


async def test_a_device_page_charts_telemetry_and_sensors_as_they_come(
    running_hub: RunningHub, watcher: Recorder, page: Page, shots: Path
) -> None:
    await sign_in(page, running_hub, shots)
    await page.click('a[href="#/device/demo_kitchen"]')
    await expect(page.locator("#device-title")).to_have_text("Kitchen speaker (demo_kitchen)")
    t = running_hub.service.topics
    for rssi in (-50, -62, -55):
        status = {"status": "connected", "device_id": "demo_kitchen", "wifi_signal": rssi}
        await watcher.publish(t.status("demo_kitchen"), status)
    values = page.locator("#device-values")
    await expect(values.locator('tr[data-name="wifi_signal"]')).to_contain_text("-55")
    # a device that talks without a new status (real firmware sends one only on connecting)
    # is seen at its last reading's time, not at its last status's
    for value in (21.5, 22.0):
        stamp = datetime.now(UTC).isoformat()
        reading = {"sensor_type": "temperature", "value": value, "device_id": "demo_kitchen"}
        await watcher.publish(
            t.sensor("demo_kitchen", "temperature"), dict(reading, unit="°C", timestamp=stamp)
        )
    await expect(values.locator('tr[data-name="wifi_signal"] svg.spark')).to_have_attribute(
        "data-points", "3"
    )
    await expect(values.locator('tr[data-name="temperature"]')).to_contain_text("22 °C")
    await expect(values.locator('tr[data-name="temperature"] svg.spark')).to_have_attribute(
        "data-points", "2"
    )
    await expect(page.locator("#device-info")).to_contain_text(f"({stamp})")
    await page.screenshot(path=shots / "dashboard-device-telemetry.png", full_page=True)

    # a big fleet: the table holds a screenful of rows, and scrolling brings the others
    for n in range(300):
        device_id = f"many{n:03d}"
        await watcher.publish(t.status(device_id), {"status": "connected", "device_id": device_id})
    await page.click('nav a[href="#/"]')
    connected = "303 of 303 devices, 301 connected"  # and demo_kitchen, by its statuses above
    await expect(page.locator("#count")).to_have_text(connected)
    seen = page.locator('#devices tr[data-device="demo_kitchen"] td.seen')
    await expect(seen).to_have_attribute("title", stamp)
    shown = await page.locator("#devices tr[data-device]").count()
    assert 0 < shown < 120
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    await expect(page.locator('#devices tr[data-device="many299"]')).to_contain_text("connected")
    await expect(page.locator('#devices tr[data-device="demo_kitchen"]')).to_have_count(0)
    await page.screenshot(path=shots / "dashboard-fleet-scrolled.png")


async def test_an_utterance_shows_as_its_pipeline_with_the_time_of_each_step(
    running_hub: RunningHub, watcher: Recorder, page: Page, shots: Path
) -> None:
    await sign_in(page, running_hub, shots)
    await page.click('nav a[href="#/voice"]')
    service = running_hub.service
    await asyncio.wait_for(service.stream.events_subscribed.wait(), 10)  # its events/+
    heard = {
        "event_type": "voice_command",
        "device_id": "demo_kitchen",
        "command": "turn on the kitchen light",
        "confidence": 0.93,
        "language": "en",
        "message_id": "utterance-1",  # and no timestamp: the optional field is left out
        "audio_duration_ms": 1800,  # heard as speech: the audio -> text step
        "processing_time_ms": 174,
    }
    await watcher.publish(service.topics.voice_command_events(), heard)
    row = page.locator("#utterances tr")
    await expect(row.locator("td.answer")).to_have_text("Turning on the kitchen light.")
    await expect(row).to_have_count(1)
    await expect(row.locator("td.heard")).to_have_text("turn on the kitchen light")
    await expect(row.locator("td.intent")).to_have_text("HassTurnOn")
    await expect(row.locator("td.actions")).to_have_text("turn_on light.kitchen: ok")
    lines = (await row.locator("td.steps").inner_text()).splitlines()
    assert lines[:2] == ["audio 1800 ms spoken", "speech to text 174 ms"]
    assert re.fullmatch(r"intent \d+(\.\d+)? ms", lines[2]), lines  # the hub's own step
    steps = lines[3:]
    assert [s.split(" ")[0] for s in steps] == [
        "voice_command",
        "action",
        "action_result",
        "response",
    ]
    # Times are the hub's clock only: the unstamped step says so, the others count from
    # the first stamped one (the browser's clock mixed in gave negative times).
    assert steps[0] == "voice_command"  # sent with no time: none shown
    assert steps[1].endswith(" +0 ms")
    assert all(re.fullmatch(r"\w+ \+\d+ ms", s) for s in steps[1:]), steps
    await page.screenshot(path=shots / "dashboard-voice.png")
    # no play button: the hub keeps no audio of it (GET /utterances; test_hub_speech.py
    # has one it transcribed), where a click gave a 404 and a console error
    await expect(row.locator("td.audio")).to_have_text("not kept here")
    await expect(row.locator("td.audio button")).to_have_count(0)

    # the home page shows an entity's state as a voice command changes it
    await page.click('nav a[href="#/home"]')
    state = page.locator('#home-areas tr[data-entity="light.living_room"] td.state')
    await expect(state).to_have_text("off")
    again = dict(heard, command="turn on the living room light", message_id="utterance-2")
    await watcher.publish(service.topics.voice_command_events(), again)
    await expect(state).to_have_text("on")


async def test_a_device_waiting_for_approval_appears_live_and_is_approved_from_the_page(
    running_hub: RunningHub, page: Page, shots: Path
) -> None:
    """The approvals list follows the stream's activation frames: a device that asks appears
    within 2 s without reload, and an approval or a rejection made anywhere removes it."""
    await sign_in(page, running_hub, shots)
    await expect(page.locator("#pending-summary")).to_have_text("none")
    await expect(page.locator("#pending")).to_be_hidden()
    await page.evaluate("window.notReloaded = true")
    mac, client_id = new_mac(), str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=running_hub.url, timeout=10) as http:
        asked_at = time.monotonic()
        first = await setup_call(http, firmware_headers(mac, client_id))
        code = first["activation"]["code"]
        row = page.locator(f'#pending-list tr[data-code="{code}"]')
        await expect(row).to_contain_text(mac.replace(":", "").lower(), timeout=2000)
        shown_after = time.monotonic() - asked_at
        assert shown_after < 2.0
        print(f"pending device listed {shown_after * 1000:.0f} ms after its setup call")
        await expect(row).to_contain_text("bread-compact-wifi/1.8.2")
        await expect(page.locator("#pending-summary")).to_contain_text("1 device:")
        await page.screenshot(path=shots / "dashboard-approval.png")
        await row.locator("button.approve").click()
        await expect(page.locator("#pending-result")).to_contain_text("device approved")
        await expect(row).to_have_count(0)
        await expect(page.locator("#pending-summary")).to_have_text("none")
        second = await setup_call(http, firmware_headers(mac, client_id))

        other = await setup_call(http, firmware_headers(new_mac(), str(uuid.uuid4())))
        refused = page.locator(f'#pending-list tr[data-code="{other["activation"]["code"]}"]')
        await refused.locator("button.reject").click()
        await expect(page.locator("#pending-result")).to_contain_text("activation rejected")
        await expect(refused).to_have_count(0)

        # approved elsewhere (the REST API, as a script would): the row goes, live
        third = await setup_call(http, firmware_headers(new_mac(), str(uuid.uuid4())))
        elsewhere = page.locator(f'#pending-list tr[data-code="{third["activation"]["code"]}"]')
        await expect(elsewhere).to_have_count(1)
        approved = await http.post(
            "/api/v1/activations/approve",
            json={"code": third["activation"]["code"]},
            headers={"X-API-Key": WRITE_KEY},
        )
        assert approved.status_code == 200
        await expect(elsewhere).to_have_count(0)
    assert "activation" not in second  # approved: the device's next setup gets its token
    assert second["websocket"]["token"]
    assert await page.evaluate("window.notReloaded") is True


async def test_the_logs_page_shows_an_edges_warning_live_with_filters(
    running_hub: RunningHub,
    hub_settings: HubSettings,
    start_edge: StartEdge,
    watcher: Recorder,
    logging_to_listeners: None,
    page: Page,
    shots: Path,
) -> None:
    """The hub's and the edges' log lines on the Logs page, newest first, filtered by level,
    source and text, from the stream (the production logging chain: warnings and above)."""
    await sign_in(page, running_hub, shots)
    await asyncio.wait_for(running_hub.service.stream.events_subscribed.wait(), 10)
    await page.click('nav a[href="#/logs"]')
    edge = await start_edge(base_topic=hub_settings.base_topic, device_auth="open")
    source = f"edge {edge.settings.edge_id}"
    lines = page.locator("#log-lines tr")
    warned = page.locator(f'#log-lines tr[data-source="{source}"]', has_text="device_auth_open")
    await expect(warned).to_have_count(1)  # the edge's warning at its start, once
    await expect(warned.locator("td.level")).to_have_text("warning")
    await expect(warned.locator("td.details")).to_contain_text("use token in production")
    # the hub's own warning: a status that is not JSON, refused
    await watcher.publish(f"{hub_settings.base_topic}/status/noisy", b"not json")
    hub_line = page.locator(f'#log-lines tr[data-source="hub {hub_settings.hub_id}"]')
    await expect(hub_line.filter(has_text="mqtt_message_refused")).to_have_count(1)
    await expect(lines.first).to_contain_text("mqtt_message_refused")  # newest first
    await page.screenshot(path=shots / "dashboard-logs.png", full_page=True)

    await page.select_option("#log-source", source)
    await expect(lines.filter(has_text="mqtt_message_refused")).to_have_count(0)
    await expect(warned).to_have_count(1)
    await page.fill("#log-search", "auth_open production")  # every word, event or fields
    await expect(lines).to_have_count(1)
    await page.fill("#log-search", "no such words")
    await expect(lines).to_have_count(0)
    await page.fill("#log-search", "")
    await page.select_option("#log-source", "")
    await page.select_option("#log-level", "error")
    await expect(warned).to_have_count(0)
    await page.select_option("#log-level", "debug")
    await expect(warned).to_have_count(1)
    # bounded: 1,200 lines more (another edge's, as MQTT brings them) leave the last 1,000 in
    # the page, the newest on top. Sent 200 at a time, each lot shown before the next: fewer
    # than the stream's queue limit (256) wait at once, so the hub skips none of them ahead.
    flood = f"{hub_settings.base_topic}/bridge/edges/flood/log"
    for lot in range(6):
        for n in range(lot * 200, lot * 200 + 200):
            line = {"level": "warning", "event": "flood_line", "edge_id": "flood", "n": n}
            await watcher.publish(flood, line, qos=0)
        await expect(lines.first).to_contain_text(f"n={lot * 200 + 199}")
    count = await page.locator("#log-count").inner_text()
    assert count == "1000 of 1000 lines", count


async def test_signed_in_once_a_read_only_key_watches_but_cannot_command(
    running_hub: RunningHub, page: Page
) -> None:
    await page.goto(running_hub.url + "/#/device/demo_office")
    await page.fill("#key", READ_KEY)
    await page.click("#signin-form button")
    await expect(page.locator("#live")).to_contain_text("live V3")
    await page.reload()  # the key was kept: no second sign-in
    await expect(page.locator("#live")).to_contain_text("live V3")
    await expect(page.locator("#device-title")).to_have_text("Office speaker (demo_office)")
    await page.click("#command-form button")
    await expect(page.locator("#command-result")).to_contain_text("FORBIDDEN: this credential")
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('xiaozhi_api_key')") is None


async def test_on_a_phone_a_device_connected_before_the_page_shows_its_tools_and_no_audio(
    running_hub: RunningHub,
    hub_settings: HubSettings,
    start_edge: StartEdge,
    sim_settings: SimSettings,
    watcher: Recorder,
    browser: Browser,
    shots: Path,
) -> None:
    """A 390 px wide page (a phone): nothing is wider than the screen. A device that announced
    its MCP tools before the page opened has them listed (the hub kept them); listening to a
    device that sends no audio says so after a few seconds; no console error anywhere."""
    t = running_hub.service.topics
    edge = await start_edge(base_topic=hub_settings.base_topic)
    url = f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/"
    device = WsDevice(
        make_identity(name="phone-view"), sim_settings.model_copy(update={"sim_ws_url": url})
    )
    await device.start()
    try:
        await device.wake()
        await watcher.expect(
            t.device_events(device.device_id), lambda e: e["event_type"] == "mcp_tools"
        )
        await tools_kept(running_hub.service, device.device_id)
        async with open_page(browser, width=390) as page:
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            await sign_in(page, running_hub, shots)
            row = page.locator(f'#devices tr[data-device="{device.device_id}"]')
            await expect(row.locator("td.status")).to_have_text("connected")
            await page.screenshot(path=shots / "dashboard-phone-fleet.png")
            assert await page.evaluate(WIDTH) <= 390

            await row.locator("a").click()
            tools = page.locator("#device-tools")
            await expect(tools).to_contain_text("self.audio_speaker.set_volume")
            mcp = page.locator('#device-events tr[data-type="mcp_tools"]')
            await expect(mcp.locator("td.gist")).to_have_text(re.compile(r"^\d+ tools$"))
            await page.click("#listen")
            await expect(page.locator("#listen-state")).to_have_text("listening")
            await expect(page.locator("#listen-notice")).to_contain_text(
                "No audio from this device yet", timeout=8000
            )
            assert await page.locator("#listen-packets").inner_text() == "0"
            await page.screenshot(path=shots / "dashboard-phone-device.png", full_page=True)
            assert await page.evaluate(WIDTH) <= 390
            await page.click("#listen")
            await expect(page.locator("#listen-notice")).to_have_text("")

            await page.click('nav a[href="#/voice"]')
            heard = {"event_type": "voice_command", "device_id": device.device_id}
            heard |= {"command": "turn on the kitchen light", "message_id": "phone-1"}
            await watcher.publish(t.voice_command_events(), heard)
            await expect(page.locator("#utterances td.heard")).to_have_text(heard["command"])
            await expect(page.locator("#utterances td.audio")).to_have_text("text: no audio")
            await page.screenshot(path=shots / "dashboard-phone-voice.png", full_page=True)
            assert await page.evaluate(WIDTH) <= 390
            assert console == []
    finally:
        await device.stop()


WIDTH = "document.documentElement.scrollWidth"


async def test_frames_the_hub_skipped_are_read_again_from_rest(
    running_hub: RunningHub, watcher: Recorder, page: Page, shots: Path
) -> None:
    """A page that read too slowly is skipped ahead by the hub, which says so in a HEARTBEAT
    (``dropped``): the page reads the fleet again, so a device whose status frame was skipped
    is not left shown as connected. The skip is played here by a WebSocket route between page
    and hub that withholds the status frames, then hands the page the hub's notice."""
    withhold = False

    async def between(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if not withhold:
                ws.send(message)

        server.on_message(to_page)
        ws.on_message(server.send)
        between.page = ws  # type: ignore[attr-defined]

    await page.route_web_socket(re.compile(r".*/api/v1/stream$"), between)
    await sign_in(page, running_hub, shots)
    t = running_hub.service.topics
    await watcher.publish(
        t.status("demo_kitchen"), {"status": "connected", "device_id": "demo_kitchen"}
    )
    row = page.locator('#devices tr[data-device="demo_kitchen"]')
    await expect(row.locator("td.status")).to_have_text("connected")

    withhold = True
    await watcher.publish(
        t.status("demo_kitchen"), {"status": "disconnected", "device_id": "demo_kitchen"}
    )
    await snapshot_shows(
        watcher,
        running_hub.service,
        lambda d: d.get("demo_kitchen", {}).get("status") == "disconnected",
    )
    await expect(row.locator("td.status")).to_have_text("connected")  # the frame was skipped
    withhold = False
    notice = StreamMessage(
        MessageType.HEARTBEAT, {"dropped": 1, "queued": 0}, version=V3, timestamp_us=1
    )
    between.page.send(encode_message(notice))  # type: ignore[attr-defined]
    await expect(row.locator("td.status")).to_have_text("disconnected")
