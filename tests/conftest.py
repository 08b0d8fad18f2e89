"""Fixtures shared by every test folder: one real Mosquitto per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xiaozhi_cli.broker import ManagedMosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedMosquitto]:
    """A real Mosquitto (mosquitto/dev.conf) on a free loopback port for the whole session."""
    with ManagedMosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker
