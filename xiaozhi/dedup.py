"""The duplicate-message-id window: QoS 1 delivers at least once, handlers act once.

MQTT QoS 1 may deliver a message again (a broker restart, a reconnect before PUBACK); the
edge (commands), the hub (voice commands) and the simulator (commands) each remember the
most recent ``message_id``\\ s and skip a repeat. One bounded window, the oldest forgotten
first, so memory stays at ``capacity`` ids whatever a peer sends.
"""

from __future__ import annotations

import collections

__all__ = ["RecentIds"]


class RecentIds:
    """The last ``capacity`` message ids seen.

    Args:
        capacity: ids remembered; the oldest is forgotten when a new one would exceed it.
    """

    __slots__ = ("_capacity", "_ids")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def seen(self, message_id: str | None) -> bool:
        """True when ``message_id`` was seen recently (a duplicate: skip it).

        Otherwise it is remembered and False returned. ``None`` (no id) is never a duplicate.
        """
        if message_id is None:
            return False
        if message_id in self._ids:
            return True
        self._ids[message_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids
