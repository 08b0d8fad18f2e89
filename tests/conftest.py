"""Fixtures shared by every test folder: one real Mosquitto per test session, the real edge
started in the test's event loop, and an integrator subscribed to the whole topic tree; and
the check that every test using a real broker carries the `integration` marker."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Recorder, record
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_edge.server import EdgeServer
from xiaozhi_edge.settings import load_edge_settings

StartEdge = Callable[..., Awaitable[EdgeServer]]


@pytest.fixture(scope="session", autouse=True)
def _one_speech_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every hub of the session (tasks and child processes, which inherit the environment)
    keeps its built recognisers in one cache, as the hubs of one installation would: each
    home is built once (about 30 s), not once per test. A test about the cache passes its
    own folder."""
    folder = tmp_path_factory.mktemp("speech-cache")
    before = os.environ.get("XIAOZHI_SPEECH_CACHE_DIR")
    os.environ["XIAOZHI_SPEECH_CACHE_DIR"] = str(folder)
    yield
    if before is None:
        del os.environ["XIAOZHI_SPEECH_CACHE_DIR"]
    else:
        os.environ["XIAOZHI_SPEECH_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedMosquitto]:
    """A real Mosquitto (mosquitto/dev.conf) on a free loopback port for the whole session.

    The one server in the tests that cannot bind port 0 itself: its port is written into its
    config file, so a free port is picked first, and picked again should another process take
    it before Mosquitto binds it (ManagedMosquitto retries on "Address already in use")."""
    with ManagedMosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
async def start_edge(mosquitto: ManagedMosquitto, tmp_path: Path) -> AsyncIterator[StartEdge]:
    """Start real edges in this event loop on free ports (open auth unless overridden);
    `start_edge(broker, **settings)` uses another broker. All are stopped afterwards."""
    servers: list[EdgeServer] = []

    async def _start(broker: ManagedMosquitto | None = None, **overrides: Any) -> EdgeServer:
        settings = load_edge_settings(
            **{
                "mqtt_url": (broker or mosquitto).url,
                "edge_host": "127.0.0.1",
                "edge_port": 0,
                "device_auth": "open",
                "edge_id": f"edge-test-{uuid.uuid4().hex[:8]}",
                "state_dir": tmp_path,
                **overrides,
            }
        )
        server = EdgeServer(settings)
        await server.start()
        servers.append(server)
        await asyncio.wait_for(server.owner.connected.wait(), 15)
        return server

    yield _start
    for server in servers:
        await server.stop()


@pytest.fixture
async def integrator(mosquitto: ManagedMosquitto) -> AsyncIterator[Recorder]:
    """Subscribed to the whole tree, as Home Assistant or Node-RED would be; publishes
    commands as they would."""
    async with record(mosquitto.url, "xiaozhi/#", name="integrator") as recorder:
        yield recorder


# -- the integration marker -------------------------------------------------------------------
# A test that needs a real broker says so (`-m "not integration"` runs the rest without
# Mosquitto). The hook fails the run when a test uses the broker fixture, even through another
# fixture, without the marker; the guard fails a test that starts a broker itself without it.


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if "mosquitto" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        listed = "\n  ".join(unmarked)
        raise pytest.UsageError(
            f"these tests use the broker fixture without @pytest.mark.integration:\n  {listed}"
        )


@pytest.fixture(autouse=True)
def _a_broker_needs_the_marker(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(self: ManagedMosquitto, timeout: float = 10.0) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a Mosquitto: mark it @pytest.mark.integration"
        )

    monkeypatch.setattr(ManagedMosquitto, "start", refuse)
