"""A test's own MQTT client: publishes like an edge or integrator, records everything it sees.

Waiting is always for an expected message with a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson

from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = ["Watcher"]

T = TypeVar("T")
_ids = itertools.count()


class Watcher:
    """Subscribes to ``filters``; :meth:`expect` waits for a matching JSON message."""

    def __init__(self, url: str, name: str = "watcher") -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()
        self.owner = MqttOwner(url, client_id=f"test-{name}-{next(_ids)}", on_message=self._on)

    def _on(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self._changed.set()

    async def start(self, filters: Iterable[str]) -> Watcher:
        await self.owner.start(wait_connected=15)
        await self.owner.subscribe(list(filters))
        return self

    async def stop(self) -> None:
        await self.owner.stop(flush_seconds=2)

    def publish(self, topic: str, payload: Any, *, retain: bool = False, qos: int = 1) -> None:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        assert self.owner.publish_nowait(OutMessage(topic, raw, qos=qos, retain=retain))

    def mark(self) -> int:
        """The position to wait from: only messages after it count."""
        return len(self.messages)

    async def wait_for(self, find: Callable[[], T | None], within: float = 10.0) -> T:
        async def _wait() -> T:
            while True:
                found = find()
                if found is not None and found is not False and found != []:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(_wait(), within)

    def json(self, topic: str, *, after: int = 0) -> list[dict[str, Any]]:
        """Every non-empty payload seen on ``topic`` (after ``after``), parsed."""
        return [orjson.loads(p) for t, p in self.messages[after:] if t == topic and p]

    def raw(self, topic: str, *, after: int = 0) -> list[bytes]:
        return [p for t, p in self.messages[after:] if t == topic]

    async def expect(
        self,
        topic: str,
        where: Callable[[dict[str, Any]], bool] = lambda _: True,
        *,
        after: int = 0,
        within: float = 10.0,
    ) -> dict[str, Any]:
        """The first JSON message on ``topic`` (after ``after``) for which ``where`` holds."""

        def find() -> dict[str, Any] | None:
            for message in self.json(topic, after=after):
                if where(message):
                    return message
            return None

        try:
            return await self.wait_for(find, within)
        except TimeoutError:
            seen = [t for t, _ in self.messages[after:]][-20:]
            raise AssertionError(
                f"nothing matching on {topic} within {within} s; saw {seen}"
            ) from None
