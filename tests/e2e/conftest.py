"""Fixtures of the end-to-end tests: `xiaozhi up` and `mosquitto_sub`, cleaned up whatever
happens (a failing test must not leave a broker or an `up` behind for the next one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.system import Subscriber, UpProcess, start_up, subscribe


@pytest.fixture
def run_up(tmp_path: Path) -> Iterator[Callable[..., UpProcess]]:
    """Start `xiaozhi up` (settings as keyword arguments, e.g. XIAOZHI_DEMO_DEVICES="false")
    with its own state dir; killed at teardown if the test did not stop it."""
    started: list[UpProcess] = []

    def _run(**settings: str) -> UpProcess:
        up = start_up(tmp_path / "state", **settings)
        started.append(up)
        return up

    yield _run
    for up in started:
        up.kill()


@pytest.fixture
def run_sub() -> Iterator[Callable[..., Subscriber]]:
    """Start `mosquitto_sub -v -p PORT -t FILTER...`; stopped at teardown."""
    started: list[Subscriber] = []

    def _run(port: int, *filters: str) -> Subscriber:
        sub = subscribe(port, *filters)
        started.append(sub)
        return sub

    yield _run
    for sub in started:
        sub.stop()
