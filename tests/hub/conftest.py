"""Fixtures of the hub's pure core: the demo home and one warmed intent engine per session."""

from __future__ import annotations

import pytest

from xiaozhi_hub.home import Home, load_home
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.registry import Registry


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
