"""The command-results unit: the hub hears a device's ``command_result`` for a command it sent.

A spoken answer must follow what happened ("Turning on the office light." only once the
device said it did). When the hub acts on a xiaozhi device it sends a command with a fresh
``message_id`` and waits, bounded, for the device's ``command_result`` naming that id on
``xiaozhi/events/{device_id}`` (published by the edge for firmware devices, by MQTT devices
themselves: :mod:`xiaozhi.commands`).

The hub subscribes to a device's events only once it has commanded it (and keeps that
subscription: the devices a home acts on are few and stable). It never subscribes to
``xiaozhi/events/+``, which would also match ``events/voice_command`` outside the shared
group and make every replica execute every voice command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from xiaozhi.commands import CommandResult
from xiaozhi.errors import WireError
from xiaozhi.payloads import EventType
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route

__all__ = ["CommandResultsUnit"]

_MARKER = EventType.COMMAND_RESULT.value.encode()


class CommandResultsUnit:
    """Futures for the ``command_result`` of commands in flight, resolved from device events."""

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self._waiting: dict[str, asyncio.Future[CommandResult]] = {}
        self._watched: set[str] = set()
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self.routes: Mapping[TopicKind, Route] = {TopicKind.DEVICE_EVENTS: self._on_event}

    async def start(self) -> None:
        """Nothing to subscribe yet: devices are watched when first commanded."""

    async def stop(self) -> None:
        filters = [self._ctx.topics.device_events(d) for d in sorted(self._watched)]
        self._watched.clear()
        if filters:
            await self._ctx.owner.unsubscribe(filters)
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def watch(self, device_id: str) -> None:
        """Subscribe to ``device_id``'s events (once; the broker's SUBACK awaited), so its
        answer to a command sent after this returns cannot be missed.

        Callers for a device whose subscription is under way wait for that one: the owner
        remembers a filter before the broker confirms it, so a second caller would have
        returned at once (and commanded the device before the subscription held), and one
        SUBSCRIBE per command would have waited at the broker meanwhile."""
        if device_id in self._watched:
            return
        pending = self._subscribing.get(device_id)
        if pending is None:
            pending = asyncio.ensure_future(
                self._ctx.owner.subscribe([self._ctx.topics.device_events(device_id)])
            )
            self._subscribing[device_id] = pending
            pending.add_done_callback(lambda _: self._subscribing.pop(device_id, None))
        await asyncio.shield(pending)
        self._watched.add(device_id)

    def expect(self, message_id: str) -> asyncio.Future[CommandResult]:
        """A future for the result naming ``message_id``; :meth:`forget` it when done."""
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        return future

    def awaits(self, message_id: str) -> bool:
        """True while someone here waits for the result of ``message_id`` (the hub's own
        command: the voice unit reports its failure itself)."""
        return message_id in self._waiting

    def forget(self, message_id: str) -> None:
        self._waiting.pop(message_id, None)

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def _on_event(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        # Every event of a watched device arrives here (the hub's own included): only a
        # payload that can be an awaited result is parsed.
        if not self._waiting or _MARKER not in payload:
            return
        try:
            result = CommandResult.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            self._ctx.invalid("command_result", topic, err)
            return
        if result.event_type != EventType.COMMAND_RESULT.value or result.message_id is None:
            return
        if result.device_id != parsed.device_id:
            self._ctx.invalid("command_result", topic, "device_id differs from the topic's")
            return
        future = self._waiting.pop(result.message_id, None)
        if future is not None and not future.done():
            future.set_result(result)
