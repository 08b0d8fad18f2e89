"""An independent MQTT observer for tests (aiomqtt, not the code under test).

Tests wait for the message they expect, with a timeout; never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from xiaozhi import jsonutil
from xiaozhi.errors import WireError
from xiaozhi_cli.broker import ManagedMosquitto


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool

    @property
    def obj(self) -> dict[str, Any]:
        try:
            return jsonutil.loads_object(self.payload)
        except WireError:
            return {}


class Observer:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[Msg] = []
        self._changed = asyncio.Event()

    async def _pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.messages.append(Msg(str(message.topic), payload, bool(message.retain)))
            self._changed.set()

    async def wait_for(self, predicate: Callable[[Msg], bool], within: float = 5.0) -> Msg:
        """The first message (already received or coming) that matches."""
        try:
            async with asyncio.timeout(within):
                while True:
                    for message in self.messages:
                        if predicate(message):
                            return message
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = [(m.topic, m.payload[:120]) for m in self.messages[-10:]]
            raise AssertionError(f"no matching message within {within} s; last: {seen}") from None

    async def publish(self, topic: str, payload: Any) -> None:
        await self.client.publish(topic, jsonutil.dumps(payload), qos=1)


@contextlib.asynccontextmanager
async def observe(broker: ManagedMosquitto, *topics: str) -> AsyncIterator[Observer]:
    """Subscribe to ``topics`` (retained messages arrive flagged) and collect what comes."""
    identifier = f"test-observer-{uuid.uuid4().hex[:8]}"
    async with aiomqtt.Client(broker.host, broker.port, identifier=identifier) as client:
        observer = Observer(client)
        pump = asyncio.get_running_loop().create_task(observer._pump())
        for topic in topics:
            await client.subscribe(topic, qos=1)
        try:
            yield observer
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump
