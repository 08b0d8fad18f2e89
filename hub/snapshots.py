"""The hub's retained summaries: ``bridge/devices|groups|info``, ``status/broadcast`` and
``status/group/{id}``, re-published (through :class:`~xiaozhi_hub.unit.RetainedPublisher`, so
only when their bytes change) whenever the registry says a change affects them.
"""

from __future__ import annotations

import asyncio

from xiaozhi import __version__, jsonutil
from xiaozhi.payloads import DeviceStatus
from xiaozhi_hub.unit import HubContext

__all__ = ["Snapshots"]


class Snapshots:
    """Retained ``bridge/devices|groups|info``, ``status/broadcast`` and ``status/group/{id}``.

    :meth:`mark` coalesces a burst of changes (the retained statuses read at start) into one
    publication on the next event-loop pass, and publications are at least
    ``snapshot_min_interval_seconds`` apart: a fleet of thousands reconnecting after an edge
    restart makes a few snapshots, not one per device (each one the whole list).
    """

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self._scheduled = False
        self._last_flush = -float("inf")
        self._group_topics: set[str] = set()

    def mark(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        wait = self._last_flush + self._ctx.settings.snapshot_min_interval_seconds - loop.time()
        if wait > 0:
            loop.call_later(wait, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self, *, force: bool = False) -> None:
        self._scheduled = False
        self._last_flush = asyncio.get_running_loop().time()
        ctx, topics, registry = self._ctx, self._ctx.topics, self._ctx.registry
        limit = ctx.settings.snapshot_max_devices
        retained = ctx.retained
        retained.publish(
            topics.bridge_devices(), jsonutil.dumps(registry.snapshot_devices(limit)), force=force
        )
        retained.publish(
            topics.bridge_groups(), jsonutil.dumps(registry.snapshot_groups()), force=force
        )
        info = registry.info(
            version=__version__, config=ctx.settings.public_config(), snapshot_limit=limit
        )
        retained.publish(topics.bridge_info(), jsonutil.dumps(info), force=force)
        devices = registry.devices()
        connected = {d.device_id for d in devices if d.connected}
        fleet = {
            "devices": len(devices),
            "connected": len(connected),
            "groups": len(registry.groups()),
        }
        retained.publish(topics.broadcast_status(), jsonutil.dumps(fleet), force=force)
        current: set[str] = set()
        for group in registry.groups():
            topic = topics.group_status(group.group_id)
            current.add(topic)
            summary = {
                "group_id": group.group_id,
                "name": group.name,
                "members": list(group.members),
                "connected": [m for m in group.members if m in connected],
                "status": (
                    DeviceStatus.CONNECTED.value
                    if any(m in connected for m in group.members)
                    else DeviceStatus.DISCONNECTED.value
                ),
            }
            retained.publish(topic, jsonutil.dumps(summary), force=force)
        for topic in self._group_topics - current:
            retained.clear(topic)
        self._group_topics = current
