"""A device on MQTT: seed 003's device client, with paho-mqtt, on the shared event loop.

What it does on the topic tree (design.md section 5, every topic from :class:`TopicTree`,
QoS and retain from :func:`xiaozhi.topics.publish_options`):

* registers a **last will**: retained ``{"status":"disconnected"}`` on its status topic, so
  the broker announces an abrupt death (power cut, crash, ``kill -9``);
* on connect: subscribes to its own command topic, the broadcast topic and the topic of each
  of its groups; publishes a retained ``connected`` status with telemetry and one retained
  reading per sensor; then repeats both every heartbeat;
* on a command: runs it (:class:`~xiaozhi_sim.executor.CommandExecutor`) and publishes the
  ``command_result`` on its events topic; publishes a fresh status when the command changed it;
* ``say``: publishes a ``voice_command`` event (seed 003 "Voice Command Processing") on its own
  ``xiaozhi/events/voice_command/{device_id}``;
* a clean stop publishes the retained ``disconnected`` status itself, then DISCONNECTs (after
  which the broker drops the will); a reboot too, and comes back as a fresh MQTT client (RAM
  does not survive a reboot: nothing of the old connection is resent after the new one's
  ``connected`` status);
* losing the broker: reconnect with capped exponential back-off and jitter (seed 003: 5 s,
  10 attempts), then ``FatalError``.

paho's callbacks are turned into calls on this object; they run on the event loop thread
because :class:`~xiaozhi_sim.paho_loop.PahoAsyncio` drives the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from xiaozhi import jsonutil
from xiaozhi._validation import WireModel
from xiaozhi.backoff import Backoff
from xiaozhi.errors import WireError
from xiaozhi.payloads import ConnectionEvent, DeviceTransport, VoiceCommandEvent
from xiaozhi.timestamps import wire_timestamp
from xiaozhi.topics import validate_id
from xiaozhi_sim.device import (
    REBOOT_SECONDS,
    ChannelError,
    Fault,
    FaultNotApplicable,
    FaultResult,
    SimulatedDevice,
)
from xiaozhi_sim.executor import CommandExecutor
from xiaozhi_sim.identity import DeviceIdentity
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.stats import SimStats

__all__ = ["MqttDevice"]

_OVERSIZE_BYTES = 3 * 1024 * 1024  # over mosquitto/dev.conf's max_packet_size (2 MiB)
_GOODBYE_SECONDS = 2.0
"""Longest a clean stop or reboot waits for the broker to acknowledge its goodbye."""


class MqttDevice(SimulatedDevice):
    """One MQTT device.

    Args:
        identity: who it is.
        settings: broker URL, base topic, heartbeat and reconnect settings.
        paho: the process's paho driver.
        stats: process-wide counters.
        groups: group ids whose command topics it subscribes to.
        heartbeat_interval: seconds between status/sensor publishes (the setting by default).
    """

    transport = DeviceTransport.MQTT

    def __init__(
        self,
        identity: DeviceIdentity,
        settings: SimSettings,
        *,
        paho: PahoAsyncio,
        stats: SimStats | None = None,
        groups: Sequence[str] = (),
        heartbeat_interval: float | None = None,
    ) -> None:
        super().__init__(identity, settings, stats=stats)
        self.topics = settings.topics
        self.groups = tuple(validate_id(g, what="group id") for g in groups)
        self.executor = CommandExecutor(self.model, self.mcp)
        self.heartbeat_interval = heartbeat_interval or settings.sim_heartbeat_interval_seconds
        self._rng = random.Random(f"{settings.sim_seed}|{identity.device_id}|mqtt")
        self.backoff = Backoff(
            base_seconds=settings.sim_reconnect_delay_seconds,
            max_seconds=settings.sim_reconnect_max_delay_seconds,
            attempts=settings.sim_reconnect_attempts,
            rng=self._rng,
        )
        self._paho = paho
        self._connected = False
        self._disconnected = asyncio.Event()
        self._stopping = False
        self._rebooting = False
        self._booted = False  # rebooted: the next connection is a fresh client's
        self._supervisor: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        will_topic = self.topics.status(self.device_id)
        options = self.topics.publish_options(will_topic)
        client.will_set(
            will_topic, self.model.last_will().to_wire(), qos=int(options.qos), retain=True
        )
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._paho.attach(client)
        return client

    @property
    def connected(self) -> bool:
        return self._connected

    def command_topics(self) -> list[str]:
        """Own commands, broadcast, and each group's (seed 003 "Command Topics")."""
        return [
            *self.topics.all_commands_for(self.device_id),
            *(self.topics.group_command(g) for g in self.groups),
        ]

    # -- lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        """Boot and start connecting (returns at once; see :meth:`wait_connected`)."""
        if self._supervisor is None or self._supervisor.done():
            self._stopping = False
            self._supervisor = self.spawn(self._supervise(), "mqtt-supervisor")

    async def _supervise(self) -> None:
        host, port = self.settings.mqtt_address
        keepalive = self.settings.sim_keepalive_seconds
        delay: float | None = 0.0
        while not self._stopping:
            if delay:
                await asyncio.sleep(delay)
                if self._stopping:
                    return
            if self._booted:
                # A reboot clears RAM: paho's messages still unacknowledged by the broker
                # (the offline status and the reboot's command_result, published just before
                # the DISCONNECT) would otherwise be resent after the new connection's
                # status: a stale retained "disconnected" while the device is live, and the
                # command_result twice. They reached the broker before the DISCONNECT.
                self._booted = False
                self.client = self._new_client()
            self.model.machine.go(DeviceState.CONNECTING, "broker connect")
            self._disconnected.clear()
            try:
                self.client.connect(host, port, keepalive)
            except OSError as err:
                self.stats.error("connect")
                self.log.warning(
                    "mqtt_connect_failed", error=str(err), attempt=self.backoff.attempt
                )
                delay = self._next_delay()
                if delay is None:
                    return
                continue
            await self._disconnected.wait()
            delay = self._next_delay()
            if delay is None:
                return

    def _next_delay(self) -> float | None:
        """Reboot: the boot time. Otherwise back-off; None after the last attempt (fatal)."""
        if self._rebooting:
            self._rebooting = False
            self._booted = True
            self.backoff.reset()
            return REBOOT_SECONDS
        if self._stopping:
            return None
        delay = self.backoff.next_delay()
        if delay is None:
            self.log.error("mqtt_gave_up", attempts=self.backoff.attempts)
            self.stats.error("gave_up")
            self.model.machine.go(DeviceState.FATAL_ERROR, "reconnect attempts exhausted")
        return delay

    async def stop(self) -> None:
        """Publish the retained ``disconnected`` status, DISCONNECT, and stop every task."""
        self._stopping = True
        if self._connected:
            await self._say_goodbye()
            await self.wait_until(lambda: not self._connected, 5.0)
        else:
            self.client.disconnect()  # also ends a connection still waiting for its CONNACK
        self._disconnected.set()
        await self._cancel_tasks()
        self.close_serial()

    async def reboot(self) -> None:
        """Go offline cleanly, reboot the model, come back after :data:`REBOOT_SECONDS`."""
        self.log.info("device_reboot")
        if self._connected:
            self._rebooting = True
            await self._say_goodbye()
        self.model.reboot(self.now())

    async def _say_goodbye(self) -> None:
        """A clean stop's or reboot's end: the retained ``disconnected`` status and
        ``device_disconnected``, acknowledged by the broker (at most
        :data:`_GOODBYE_SECONDS`), then DISCONNECT.

        Disconnecting at once lost them: the socket closed with the broker's PUBACKs for
        earlier messages unread in it, so the kernel reset the connection (RST rather than
        FIN) and the broker dropped what it had not read yet, the goodbye and the DISCONNECT
        included, and published the will instead.
        """
        sent = [
            self._publish(self.topics.status(self.device_id), self.model.last_will()),
            self._announce("device_disconnected"),
        ]
        await self.wait_until(lambda: all(i.is_published() for i in sent), _GOODBYE_SECONDS)
        self.client.disconnect()

    # -- paho callbacks ---------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            self.stats.error("connack")
            self.log.warning("mqtt_connect_refused", reason=str(reason))
            return
        self._connected = True
        self.stats.connected += 1
        self.stats.connects += 1
        self.backoff.reset()
        self.model.machine.go(DeviceState.IDLE, "broker connected")
        client.subscribe([(topic, 1) for topic in self.command_topics()])
        self.publish_status()
        self._announce("device_connected")
        self.publish_sensors()
        self._heartbeat = self.spawn(self._heartbeat_loop(), "heartbeat")
        self.log.info("mqtt_connected")
        self._notify()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if self._connected:
            self._connected = False
            self.stats.connected -= 1
            self.stats.disconnects += 1
            self.log.info("mqtt_disconnected", reason=str(reason))
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        self._disconnected.set()
        self._notify()

    def _on_publish(self, *_args: Any) -> None:
        self._notify()  # a QoS 1 message acknowledged: a goodbye may be waiting for it

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.stats.messages_in += 1
        try:
            payload = jsonutil.loads_object(msg.payload)
        except WireError:
            payload = {"raw": msg.payload[:200].decode("utf-8", "replace")}
        self._record("command", payload, msg.topic)
        execution = self.executor.execute(bytes(msg.payload), timestamp=wire_timestamp(time.time()))
        if execution is None:
            return  # a repeat of a command already run (group topic and fan-out, QoS 1)
        if not execution.ok:
            self.stats.error("command")
        self._publish(self.topics.device_events(self.device_id), execution.event)
        if execution.command is not None and execution.command.command == "respond":
            self._voice_answered()
        if execution.publish_status:
            self.publish_status()
        if execution.reboot:
            self.spawn(self.reboot(), "reboot")

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, topic: str, payload: WireModel | bytes) -> mqtt.MQTTMessageInfo:
        """Publish with the topic's QoS and retain flag from the tree (design.md section 5)."""
        options = self.topics.publish_options(topic)
        data = payload if isinstance(payload, bytes) else payload.to_wire()
        info = self.client.publish(topic, data, qos=int(options.qos), retain=options.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats.error("publish")
        self.stats.messages_out += 1
        return info

    def publish_status(self) -> None:
        """A fresh ``connected`` status with telemetry (retained)."""
        status = self.model.status_payload(
            self.now(), timestamp=wire_timestamp(time.time()), transport=DeviceTransport.MQTT
        )
        self._publish(self.topics.status(self.device_id), status)

    def _announce(
        self, event_type: Literal["device_connected", "device_disconnected"]
    ) -> mqtt.MQTTMessageInfo:
        """``xiaozhi/events/device_connected|disconnected``: an MQTT device has no edge to say
        it for it (docs/topics.md). A crash sends only the will, the retained status."""
        event = ConnectionEvent(
            event_type=event_type,
            device_id=self.device_id,
            transport=DeviceTransport.MQTT,
            timestamp=wire_timestamp(time.time()),
            simulated=True,
        )
        topic = (
            self.topics.device_connected()
            if event_type == "device_connected"
            else self.topics.device_disconnected()
        )
        return self._publish(topic, event)

    def publish_sensors(self) -> None:
        """One retained reading per sensor."""
        for reading in self.model.sensor_payloads(timestamp=wire_timestamp(time.time())):
            self._publish(self.topics.sensor(self.device_id, reading.sensor_type), reading)

    def state_changed_locally(self) -> None:
        super().state_changed_locally()
        if self._connected:
            self.publish_status()

    async def _heartbeat_loop(self) -> None:
        # The first beat is spread over one interval so a fleet does not beat in unison.
        await asyncio.sleep(self.heartbeat_interval * self._rng.uniform(0.5, 1.0))
        while self._connected:
            self.publish_status()
            self.publish_sensors()
            await asyncio.sleep(self.heartbeat_interval)

    # -- speech -----------------------------------------------------------------------------

    async def say(self, text: str) -> None:
        """Publish a ``voice_command`` event on this device's own voice command topic, as a
        firmware under the production ACL must (the hub takes the speaker from the topic and
        consumes it with a shared subscription).

        Raises:
            ChannelError: not connected to the broker.
        """
        if not self._connected:
            raise ChannelError(f"{self.device_id} is not connected to the broker")
        event = VoiceCommandEvent(
            device_id=self.device_id,
            command=text,
            confidence=0.95,
            language=self.identity.language_code,
            transport=DeviceTransport.MQTT,
            message_id=f"msg_{uuid.uuid4().hex[:12]}",
            timestamp=wire_timestamp(time.time()),
            processing_time_ms=120,
            audio_duration_ms=max(600, 300 * len(text.split())),
        )
        self._publish(self.topics.device_voice_command(self.device_id), event)
        if self.model.machine.can(DeviceState.LISTENING):
            self.model.machine.go(DeviceState.LISTENING, "voice command")
        self._said_at = self.now()

    @property
    def audio_path_missing(self) -> str | None:
        return (
            "MQTT devices have no audio path (a device never sends audio over MQTT); "
            "use a WebSocket device to speak"
        )

    async def speak_pcm(self, pcm: bytes) -> int:
        raise FaultNotApplicable(self.audio_path_missing)

    # -- faults -----------------------------------------------------------------------------

    def kill(self, *, reconnect: bool = True) -> None:
        """Drop the TCP connection without DISCONNECT, as a power cut: the broker publishes
        the will. With ``reconnect`` the device comes back after its back-off delay."""
        if not reconnect:
            self._stopping = True
        sock = self.client.socket()
        if isinstance(sock, socket.socket):  # paho's SocketLike: a real socket once connected
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def inject(self, fault: Fault, **options: Any) -> FaultResult:
        """``malformed``, ``oversize``, ``flood`` and ``abrupt_disconnect`` exist on MQTT.

        Options: ``count`` (flood, default 1000), ``size`` (oversize bytes, default 3 MiB),
        ``reconnect`` (abrupt_disconnect, default true).
        """
        voice = self.topics.device_voice_command(self.device_id)
        if fault in (Fault.TRUNCATED, Fault.BAD_TOKEN, Fault.WRONG_VERSION):
            raise FaultNotApplicable(f"fault {fault} does not exist on MQTT (WebSocket only)")
        if fault is Fault.ABRUPT_DISCONNECT:
            self.kill(reconnect=bool(options.get("reconnect", True)))
            result = FaultResult(fault, detail="TCP connection shut down without DISCONNECT")
        elif not self._connected:
            raise ChannelError(f"{self.device_id} is not connected to the broker")
        elif fault is Fault.MALFORMED:
            self._publish(voice, b'{"device_id": "' + self.device_id.encode() + b'", not json')
            result = FaultResult(fault, detail=f"non-JSON payload on {voice}")
        elif fault is Fault.OVERSIZE:
            # QoS 0: a QoS 1 copy would be re-sent after every reconnect, and refused again.
            size = int(options.get("size", _OVERSIZE_BYTES))
            self.client.publish(voice, b" " * size, qos=0)
            self.stats.messages_out += 1
            result = FaultResult(fault, detail=f"{size} B payload on {voice}")
        else:  # FLOOD
            count = int(options.get("count", 1000))
            for _ in range(count):
                reading = self.model.sensor_payloads(timestamp=wire_timestamp(time.time()))[-1]
                self._publish(self.topics.sensor(self.device_id, reading.sensor_type), reading)
            result = FaultResult(fault, sent=count, detail=f"{count} sensor readings at once")
        self._record("fault", result.as_message())
        return result
