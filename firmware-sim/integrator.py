"""An integrator's view of the topic tree: what Home Assistant or Node-RED would see and send.

Scenarios use it to publish commands (to a device, a group or everyone) and to expect what
devices publish; the fleet uses it as a probe that measures command round trips
(command published -> ``command_result`` event). It is an MQTT client like any other, driven by
the same :class:`~xiaozhi_sim.paho_loop.PahoAsyncio` as the devices.

Retained messages: a live subscriber gets them once, flagged ``retain``, when it subscribes.
:meth:`Integrator.fetch_retained` checks what the broker *holds* with a fresh subscription, which
is what "the status is retained" means.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from xiaozhi import jsonutil
from xiaozhi._validation import WireModel
from xiaozhi.config import redact_mqtt_url
from xiaozhi.errors import WireError
from xiaozhi.payloads import CommandPayload
from xiaozhi.timestamps import wire_timestamp
from xiaozhi.topics import TopicTree
from xiaozhi_sim.device import ChannelError
from xiaozhi_sim.notify import Notifier
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings

__all__ = ["CommandProbe", "Integrator", "Seen"]


@dataclass(frozen=True, slots=True)
class Seen:
    """One message the integrator received (``at``: event-loop clock)."""

    at: float
    topic: str
    payload: bytes
    retain: bool
    obj: dict[str, Any] | None = field(default=None)


class Integrator:
    """An MQTT client subscribed to ``subscriptions``.

    Args:
        settings: broker URL and base topic.
        paho: the process's paho driver.
        subscriptions: topic filters (default: the whole tree under the base topic).
        keep: messages kept (the newest).
    """

    def __init__(
        self,
        settings: SimSettings,
        paho: PahoAsyncio,
        *,
        subscriptions: Sequence[str] | None = None,
        keep: int = 20_000,
    ) -> None:
        self.settings = settings
        self.topics: TopicTree = settings.topics
        self.paho = paho
        self.subscriptions = list(subscriptions or [f"{settings.base_topic}/#"])
        self.messages: collections.deque[Seen] = collections.deque(maxlen=keep)
        self.listeners: list[Callable[[Seen], None]] = []
        self._notifier = Notifier()
        self._ready = False
        self._connected = False
        self.client = self._client(f"xiaozhi-sim-integrator-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    def _client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        self.paho.attach(client)
        return client

    def now(self) -> float:
        return self._notifier.loop.time()

    async def start(self, within: float = 10.0) -> None:
        """Connect and subscribe; return once the broker acknowledged the subscriptions.

        Raises:
            ChannelError: the broker is unreachable or did not answer in time.
        """
        host, port = self.settings.mqtt_address
        try:
            self.client.connect(host, port, self.settings.sim_keepalive_seconds)
        except OSError as err:
            raise ChannelError(
                f"broker {redact_mqtt_url(self.settings.mqtt_url)} unreachable: {err}"
            ) from err
        if not await self._notifier.wait_until(lambda: self._ready, within):
            raise ChannelError(
                f"broker {redact_mqtt_url(self.settings.mqtt_url)}: no SUBACK within {within:g} s"
            )

    async def stop(self) -> None:
        if self._connected:
            self.client.disconnect()
            await self._notifier.wait_until(lambda: not self._connected, 5.0)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        self._connected = True
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(self, *_: Any) -> None:
        self._ready = True
        self._notifier.notify()

    def _on_disconnect(self, *_: Any) -> None:
        self._connected = False
        self._notifier.notify()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            obj: dict[str, Any] | None = jsonutil.loads_object(msg.payload)
        except WireError:
            obj = None
        seen = Seen(self.now(), msg.topic, bytes(msg.payload), bool(msg.retain), obj)
        self.messages.append(seen)
        for listener in self.listeners:
            listener(seen)
        self._notifier.notify()

    # -- sending -------------------------------------------------------------------------

    def publish(self, topic: str, payload: WireModel | bytes) -> None:
        """Publish with the topic's QoS and retain flag from the tree."""
        options = self.topics.publish_options(topic)
        data = payload if isinstance(payload, bytes) else payload.to_wire()
        self.client.publish(topic, data, qos=int(options.qos), retain=options.retain)

    def command(
        self,
        command: str,
        parameters: dict[str, Any] | None = None,
        *,
        device_id: str | None = None,
        group: str | None = None,
        broadcast: bool = False,
    ) -> CommandPayload:
        """Publish a command to one device, a group or every device; return it.

        Raises:
            ValueError: not exactly one target.
        """
        if sum((device_id is not None, group is not None, broadcast)) != 1:
            raise ValueError("a command goes to exactly one of device_id, group, broadcast")
        if device_id is not None:
            topic = self.topics.command(device_id)
        elif group is not None:
            topic = self.topics.group_command(group)
        else:
            topic = self.topics.broadcast_command()
        payload = CommandPayload(
            command=command,
            parameters=parameters or {},
            message_id=f"cmd_{uuid.uuid4().hex[:12]}",
            timestamp=wire_timestamp(time.time()),
            device_id=device_id,
        )
        self.publish(topic, payload)
        return payload

    # -- expecting -----------------------------------------------------------------------

    def find(self, predicate: Callable[[Seen], bool], since: float) -> Seen | None:
        """The first message received at or after ``since`` that matches."""
        return next((m for m in self.messages if m.at >= since and predicate(m)), None)

    async def wait_for(
        self, predicate: Callable[[Seen], bool], *, since: float, within: float
    ) -> Seen | None:
        """Wait up to ``within`` seconds for a matching message received after ``since``."""
        found: list[Seen] = []

        def check() -> bool:
            hit = self.find(predicate, since)
            if hit is not None:
                found.append(hit)
            return hit is not None

        await self._notifier.wait_until(check, within)
        return found[0] if found else None

    async def fetch_retained(self, topic: str, within: float = 5.0) -> Seen | None:
        """What the broker holds retained on ``topic`` now, via a fresh subscription.

        Returns None when nothing retained arrived within ``within`` seconds.
        """
        got: list[Seen] = []
        notifier = Notifier()
        client = self._client(f"xiaozhi-sim-retained-{uuid.uuid4().hex[:8]}")

        def on_connect(c: mqtt.Client, *_: Any) -> None:
            c.subscribe(topic, 1)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            if msg.retain:
                try:
                    obj: dict[str, Any] | None = jsonutil.loads_object(msg.payload)
                except WireError:
                    obj = None
                got.append(Seen(self.now(), msg.topic, bytes(msg.payload), True, obj))
                notifier.notify()

        client.on_connect = on_connect
        client.on_message = on_message
        host, port = self.settings.mqtt_address
        try:
            client.connect(host, port, self.settings.sim_keepalive_seconds)
        except OSError as err:
            raise ChannelError(
                f"broker {redact_mqtt_url(self.settings.mqtt_url)} unreachable: {err}"
            ) from err
        try:
            await notifier.wait_until(lambda: bool(got), within)
        finally:
            client.disconnect()
        return got[-1] if got else None


class CommandProbe:
    """Measures command round trips: publishes ``get_status`` to random devices at a rate and
    times each until its ``command_result`` comes back (fleet ``--probe-rate``).

    Args:
        integrator: subscribed to the devices' events topics.
        device_ids: which devices to probe.
        rate: commands per second.
        record: called with each round trip in seconds.
    """

    def __init__(
        self,
        integrator: Integrator,
        device_ids: Sequence[str],
        rate: float,
        record: Callable[[float], None],
        seed: int = 0,
    ) -> None:
        self.integrator = integrator
        self.device_ids = list(device_ids)
        self.rate = rate
        self.record = record
        self.sent = 0
        self.answered = 0
        self._pending: dict[str, float] = {}
        self._rng = random.Random(seed)
        integrator.listeners.append(self._on_message)

    def _on_message(self, seen: Seen) -> None:
        obj = seen.obj
        if not obj or obj.get("event_type") != "command_result":
            return
        started = self._pending.pop(str(obj.get("message_id")), None)
        if started is not None:
            self.answered += 1
            self.record(seen.at - started)

    async def run(self) -> None:
        """Probe until cancelled."""
        if not self.device_ids or self.rate <= 0:
            return
        interval = 1.0 / self.rate
        while True:
            device_id = self._rng.choice(self.device_ids)
            sent = self.integrator.command("get_status", device_id=device_id)
            assert sent.message_id is not None
            self._pending[sent.message_id] = self.integrator.now()
            self.sent += 1
            if len(self._pending) > 10_000:  # unanswered ones: keep memory bounded
                self._pending.pop(next(iter(self._pending)))
            await asyncio.sleep(interval)
