"""What `xiaozhi up` shows at the terminal: one readable line per thing a person cares about.

It is an MQTT subscriber like any integrator (it reads the topic tree, never a component's
insides): a device coming and going, and for every voice command one line from the hub's
`response` event, which carries what was heard, what was done and what was answered::

    voice     demo_kitchen  "turn on the kitchen light" -> turn_on light.kitchen
              -> "Turning on the kitchen light."      (one line on the terminal)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from xiaozhi.topics import TopicKind, TopicTree
from xiaozhi_runtime.mqtt import MqttOwner

__all__ = ["Console", "format_event"]

_MAX_TEXT = 80


def _quote(text: object) -> str:
    value = str(text)
    if len(value) > _MAX_TEXT:
        value = value[: _MAX_TEXT - 3] + "..."
    return f'"{value}"'


def format_event(kind: TopicKind, event: dict[str, Any]) -> str | None:
    """The console line for one event, or None for events the console does not show."""
    device = event.get("device_id", "?")
    if kind is TopicKind.DEVICE_CONNECTED:
        edge = f", {event['edge_id']}" if event.get("edge_id") else ""
        return f"device    {device} connected ({event.get('transport', '?')}{edge})"
    if kind is TopicKind.DEVICE_DISCONNECTED:
        return f"device    {device} disconnected"
    if kind is TopicKind.DEVICE_EVENTS and event.get("event_type") == "response":
        actions = event.get("actions") or []
        done = ", ".join(f"{a.get('action')} {a.get('entity_id')}" for a in actions) or "nothing"
        if event.get("error"):
            done = f"nothing ({event['error']})"
        heard, answered = _quote(event.get("stt", "")), _quote(event.get("text", ""))
        return f"voice     {device}  {heard} -> {done} -> {answered}"
    return None


class Console:
    """Prints a line per device connect/disconnect and per answered voice command."""

    def __init__(self, url: str, *, say: Callable[[str], None], topics: TopicTree) -> None:
        self._say = say
        self._topics = topics
        self.owner = MqttOwner(url, client_id="xiaozhi-up-console", on_message=self._on_message)

    async def start(self) -> None:
        await self.owner.start(wait_connected=15)
        await self.owner.subscribe([self._topics.all_events()])  # incl. device_(dis)connected

    async def stop(self) -> None:
        await self.owner.stop(flush_seconds=0)

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            kind = self._topics.parse(topic).kind
            event = json.loads(payload)
        except (ValueError, TypeError):
            return  # not ours to judge: the console only reads
        if isinstance(event, dict) and (line := format_event(kind, event)):
            self._say(line)
