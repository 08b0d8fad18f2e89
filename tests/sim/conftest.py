"""Fixtures of the simulator tests: settings pointing at the session's real Mosquitto."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import structlog

from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_sim.settings import SimSettings


@pytest.fixture
def sim_settings(mosquitto: ManagedMosquitto) -> SimSettings:
    """The session broker, no setup endpoint, fast reconnects (explicit values beat the env)."""
    return SimSettings(
        mqtt_url=mosquitto.url,
        base_topic="xiaozhi",
        sim_ota_url="",
        sim_ws_url="ws://127.0.0.1:9/xiaozhi/v1/",
        sim_token="",
        sim_binary_version=1,
        sim_reconnect_delay_seconds=0.2,
        sim_reconnect_max_delay_seconds=1.0,
        sim_reconnect_attempts=10,
        sim_heartbeat_interval_seconds=30.0,
        sim_seed=0,
    )


@pytest.fixture
def device_name(request: pytest.FixtureRequest) -> str:
    """A name unique to the test, so devices of different tests never share a client id."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[-40:]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog globally; give every test the defaults back."""
    yield
    structlog.reset_defaults()
