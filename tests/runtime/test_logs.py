"""Logging: every line a process writes is one JSON object in production, the libraries'
plain-text warnings included (aiomqtt, websockets and uvicorn log through the standard
library)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from xiaozhi_runtime.logs import LogListener, add_log_listener, configure_logging


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


@pytest.mark.parametrize("to_file", [False, True])
def test_each_line_goes_to_one_component_in_a_shared_process(
    to_file: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``xiaozhi up``: a hub and an edge listen in one process. Each line goes to the
    component its logger is named for; shared code's to the one taking the rest; a listener
    of no component sees all; and a lone component keeps the shared lines."""
    if to_file:
        configure_logging(level="info", file=tmp_path / "x.log")
    else:
        configure_logging(level="info", json=True)
    structlog.configure(cache_logger_on_first_use=False)
    heard: dict[str, list[str]] = {"hub": [], "edge": [], "all": []}

    def listen(who: str) -> LogListener:
        return lambda event: heard[who].append(event["event"])

    stop_edge = add_log_listener(listen("edge"), component="xiaozhi.edge")
    stop_all = add_log_listener(listen("all"))
    stop_hub = add_log_listener(listen("hub"), component="xiaozhi.hub", rest=True)
    for name in ("xiaozhi.hub", "xiaozhi.hub.stream", "xiaozhi.edge", "xiaozhi.edge.mqtt_udp"):
        structlog.get_logger(name).warning(name)
    structlog.get_logger("xiaozhi.mqtt").warning("shared")
    structlog.get_logger("xiaozhi.hubbub").info("not the hub's")  # a prefix is a whole level
    assert heard["hub"] == ["xiaozhi.hub", "xiaozhi.hub.stream", "shared", "not the hub's"]
    assert heard["edge"] == ["xiaozhi.edge", "xiaozhi.edge.mqtt_udp"]
    assert len(heard["all"]) == 6
    stop_hub()
    structlog.get_logger("xiaozhi.mqtt").warning("shared, no hub")
    assert heard["edge"][-1] == "shared, no hub"  # a lone edge keeps its MQTT warnings
    stop_edge()
    stop_all()
    stop_all()  # removing twice is harmless
    structlog.get_logger("xiaozhi.edge").warning("nobody listens")
    assert len(heard["all"]) == 7
    capsys.readouterr()
