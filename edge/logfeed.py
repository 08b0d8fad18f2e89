"""An edge's own warning and error log lines, published on ``bridge/edges/{edge_id}/log``.

The hub's live stream carries them as ``log`` frames (issue 15), so an operator watching the
dashboard sees an edge's trouble without a shell on its machine. Only ``warning`` and above:
info lines (every device connecting) would make the broker carry the edge's whole log.

A log storm must not flood the broker: a token bucket (:data:`LOG_LINES_PER_SECOND`, burst
:data:`LOG_BURST`) lets lines through, the rest are dropped and counted (``logs_dropped`` in
``/stats`` and ``/metrics``). Each payload is bounded to :data:`MAX_LOG_BYTES`: a field too
long is cut, so one huge exception text cannot make a huge message.

The listener (:func:`~xiaozhi_runtime.logs.add_log_listener`) may be called on any thread
that logs; the line is handed to the event loop's thread (``call_soon_threadsafe``), where the
MQTT owner's queue lives, as the hub's stream does with its own lines. Publishing never logs
(the owner counts its QoS 0 drops), so a line cannot feed itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from xiaozhi.topics import TopicKind, publish_options
from xiaozhi_edge.counters import EdgeCounters
from xiaozhi_edge.limits import TokenBucket
from xiaozhi_runtime.logs import add_log_listener
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = ["LOG_BURST", "LOG_LINES_PER_SECOND", "MAX_LOG_BYTES", "EdgeLogFeed"]

LOG_LINES_PER_SECOND = 20.0
"""Lines per second an edge publishes at most, sustained."""
LOG_BURST = 20.0
"""Lines published at once before the rate applies (a burst of one incident's lines)."""
MAX_LOG_BYTES = 4096
"""Largest payload: longer field values are cut to fit."""
_FIELD_CHARS = 512
_LEVELS = frozenset({"warning", "error", "critical", "exception"})


class EdgeLogFeed:
    """Publishes this process's warning and error lines for one edge (module docstring)."""

    def __init__(self, owner: MqttOwner, topic: str, edge_id: str, counters: EdgeCounters) -> None:
        self._owner = owner
        self._topic = topic
        self._edge_id = edge_id
        self._counters = counters
        self._qos, self._retain = publish_options(TopicKind.BRIDGE_EDGE_LOG)
        self._bucket = TokenBucket(LOG_LINES_PER_SECOND, LOG_BURST, time.monotonic())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._remove: Callable[[], None] | None = None

    def start(self) -> None:
        """Listen to the process's log from now on (on the running event loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # The edge's lines only (``xiaozhi.edge...``), and shared code's when no hub listens
        # in this process: under ``xiaozhi up`` the hub's stream has those (runtime/logs.py).
        self._remove = add_log_listener(self._on_log, component="xiaozhi.edge")

    def stop(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None

    def _on_log(self, event: dict[str, Any]) -> None:
        """A log event of this process, on whatever thread logged it."""
        if str(event.get("level", "")) not in _LEVELS or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._publish(event)
        else:
            self._loop.call_soon_threadsafe(self._publish, event)

    def _publish(self, event: dict[str, Any]) -> None:
        if not self._bucket.take(time.monotonic()):
            self._counters.logs_dropped += 1
            return
        record: dict[str, Any] = {
            "level": str(event.pop("level")),
            "event": str(event.pop("event", "")),
            "timestamp": str(event.pop("timestamp", "")),
            "edge_id": self._edge_id,
        }
        for key, value in event.items():
            record.setdefault(str(key), value)
        payload = _bounded(record)
        self._counters.logs_published += 1
        self._owner.publish_nowait(OutMessage(self._topic, payload, self._qos, self._retain))


def _bounded(record: dict[str, Any]) -> bytes:
    """The record as JSON (anything JSON cannot carry as its text), at most MAX_LOG_BYTES."""
    payload = json.dumps(record, default=str).encode()
    if len(payload) <= MAX_LOG_BYTES:
        return payload
    # Too big: every field as text cut short, then drop fields from the end until it fits.
    cut = {
        key: value if key in ("level", "event", "edge_id") else _short(value)
        for key, value in record.items()
    }
    cut["truncated"] = True
    payload = json.dumps(cut, default=str).encode()
    while len(payload) > MAX_LOG_BYTES:
        extra = [k for k in cut if k not in ("level", "event", "timestamp", "edge_id", "truncated")]
        if not extra:
            cut["event"] = cut["event"][:_FIELD_CHARS]
            return json.dumps(cut, default=str).encode()
        cut.pop(extra[-1])
        payload = json.dumps(cut, default=str).encode()
    return payload


def _short(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _FIELD_CHARS else text[:_FIELD_CHARS] + "…"
