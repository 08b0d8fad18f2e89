"""One audio-monitor listener with the event that wakes the coroutine writing to it.

The edge's ``/api/ws/audio`` (:mod:`xiaozhi_edge.monitor`) and the hub's
``/api/v1/devices/{id}/listen`` (:mod:`xiaozhi_hub.http.monitor`) keep one per connected
listener: the sans-I/O :class:`~xiaozhi.audio_monitor.ListenerStream` (numbering, time
stamps, the bounded queue that skips ahead) plus an :class:`asyncio.Event`, so the sender
sleeps until a packet is offered instead of polling.
"""

from __future__ import annotations

import asyncio
from typing import Final

from xiaozhi.audio_monitor import ListenerStream

__all__ = ["LISTENER_QUEUE_PACKETS", "MonitorListener"]

LISTENER_QUEUE_PACKETS: Final = 50
"""Packets (~3 s of 60 ms frames) waiting per listener before its oldest are skipped."""


class MonitorListener(ListenerStream):
    """One listener of ``device_id``'s audio: its stream and the event that wakes its sender.

    Args:
        device_id: The device it hears.
        started: Its start, in the event loop's clock (the packets' time stamps count from it).
    """

    def __init__(self, device_id: str, started: float) -> None:
        super().__init__(started, LISTENER_QUEUE_PACKETS)
        self.device_id = device_id
        self.ready = asyncio.Event()

    def offer(self, opus: bytes, duration_ms: int, now: float) -> bool:
        lagging = super().offer(opus, duration_ms, now)
        self.ready.set()
        return lagging
