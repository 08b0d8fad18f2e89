"""Logging: every line a process writes is one JSON object in production, the libraries'
plain-text warnings included (aiomqtt, websockets and uvicorn log through the standard
library)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from xiaozhi_runtime.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_library_warnings_and_our_events_are_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(level="info", json=True)
    logging.getLogger("aiomqtt").warning("Connection lost; reconnecting to %s", "broker")
    logging.getLogger("websockets.server").info("not shown: below warning for libraries")
    structlog.get_logger("xiaozhi.edge").info("device_connected", device_id="aabbccddeeff")
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    records = [json.loads(line) for line in lines]  # every line parses
    assert records[0]["event"] == "Connection lost; reconnecting to broker"
    assert (records[0]["level"], records[0]["logger"]) == ("warning", "aiomqtt")
    assert "timestamp" in records[0]
    assert records[1]["event"] == "device_connected"
    assert len(records) == 2


def test_a_librarys_exception_is_one_json_line_with_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """aiomqtt reports a failing callback with ``logger.exception`` on its own logger: the
    line stays one JSON object and carries the traceback, not a traceback object's repr."""
    configure_logging(level="info", json=True)
    library = logging.getLogger("mqtt")  # aiomqtt.Client's logger unless given one
    try:
        raise ZeroDivisionError("in on_message")
    except ZeroDivisionError:
        library.exception("Caught exception in on_message")
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["level"], record["event"]) == ("error", "Caught exception in on_message")
    assert "Traceback (most recent call last)" in record["exception"]
    assert "ZeroDivisionError: in on_message" in record["exception"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="loud")
