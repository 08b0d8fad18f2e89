"""Fixtures of the hub: the demo home, one warmed intent engine per session, and for the
integration tests a hub on the session's real Mosquitto with a watching MQTT client."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from tests.support import Recorder, record
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_hub.home import Home, load_home
from xiaozhi_hub.http import RunningHub, run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_runtime.logs import configure_logging
from xiaozhi_sim.settings import SimSettings


@pytest.fixture(scope="session")
def home() -> Home:
    return load_home()


@pytest.fixture(scope="session")
def engine(home: Home) -> IntentEngine:
    """Loading is cheap but the first recognitions parse templates: share one engine."""
    engine = IntentEngine(home)
    engine.warm_up()
    return engine


@pytest.fixture
def registry(home: Home) -> Registry:
    """A fresh registry per test: tests edit it."""
    return Registry(home)


# -- integration: a real Mosquitto, a hub, and the test's own MQTT client --------------------

WRITE_KEY = "test-write-key"
READ_KEY = "test-read-key"
SECRET = "test-secret"


@pytest.fixture
def hub_settings(mosquitto: ManagedMosquitto, tmp_path: Path) -> HubSettings:
    """Settings on the session broker, under a base topic and discovery prefix of their own
    (the broker is shared with every other test, retained messages included)."""
    tag = uuid.uuid4().hex[:8]
    return HubSettings(
        mqtt_url=mosquitto.url,
        hub_host="127.0.0.1",
        hub_port=0,
        base_topic=f"t{tag}/xiaozhi",
        discovery_prefix=f"ha{tag}",
        hub_id=f"hub-{tag}",
        hub_share_group=f"g{tag}",
        api_keys=f"{WRITE_KEY},{READ_KEY}:read",
        secret=SECRET,
        state_dir=tmp_path,
        edge_port=8000,
        edge_public_url=None,
        config=None,
        # Speech is tested where it is the subject (tests/hub/test_hub_speech.py, e2e):
        # elsewhere answers are text and no recogniser process starts.
        stt_engine="none",
        tts_engine="none",
        # Snapshots at once: tests wait for them; the spacing has a test of its own.
        snapshot_min_interval_seconds=0.0,
    )


@pytest.fixture
async def watcher(
    mosquitto: ManagedMosquitto, hub_settings: HubSettings
) -> AsyncIterator[Recorder]:
    """Sees the hub's whole tree, its discovery prefix and zigbee2mqtt."""
    filters = [
        f"{hub_settings.base_topic}/#",
        f"{hub_settings.discovery_prefix}/#",
        "zigbee2mqtt/#",
    ]
    async with record(mosquitto.url, *filters, name="watcher") as watch:
        yield watch


@pytest.fixture
async def hub(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> AsyncIterator[HubService]:
    """The hub's MQTT side (no HTTP), started with the shared warmed engine."""
    service = HubService(hub_settings, home=engine.home, engine=engine)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def running_hub(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> AsyncIterator[RunningHub]:
    """The whole hub: MQTT units and HTTP on a free port."""
    async with run_hub(hub_settings, home=engine.home, engine=engine) as running:
        yield running


@pytest.fixture
def sim_settings(hub_settings: HubSettings) -> SimSettings:
    """Simulated devices on the hub's broker and base topic, set up from settings (no OTA)."""
    return SimSettings(
        mqtt_url=hub_settings.mqtt_url,
        base_topic=hub_settings.base_topic,
        sim_ota_url="",
        sim_token="",
        sim_binary_version=1,
        sim_seed=0,
    )


@pytest.fixture
def logging_to_listeners() -> Iterator[None]:
    """The production logging chain (log listeners included), as ``xiaozhi edge`` configures
    it, for one test: nothing cached past it, the defaults restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(level="warning", json=True)
    structlog.configure(cache_logger_on_first_use=False)  # no logger keeps this chain after
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
