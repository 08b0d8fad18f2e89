"""The hub's MQTT side: units around one :class:`~xiaozhi_runtime.mqtt.MqttOwner` (style.md §4).

:class:`HubService` owns the broker connection (will and birth on ``xiaozhi/bridge/state``),
connects it, then starts its units in the order of :attr:`HubService.units`; each unit
(:class:`~xiaozhi_hub.unit.Unit`) has a module of its own, whose constructor only wires
dependencies, ``start()`` subscribes, ``stop()`` undoes it.

==================  ================================================  ===========================
unit (module)       subscribes to                                     does
==================  ================================================  ===========================
BridgeStateUnit     ``bridge/state``,                                 re-asserts ``online`` when
(bridge_state)      ``bridge/hubs/+/state`` (for the stream)          another replica's will or
                                                                      clean stop said offline
RegistryFeedUnit    ``status/+``, ``sensors/+/+``,                    feeds the registry; an
(registry_feed)     ``events/device_connected|device_disconnected``,  edge's ``offline`` marks its
                    ``bridge/edges/+``                                devices disconnected
DiscoveryUnit       ``homeassistant/+/+/+/config`` (at start only),   clears stale configs, then
(discovery_unit)    ``homeassistant/status``                          publishes every device's;
                                                                      re-sends on HA ``online``
DeviceToolsUnit     ``events/+`` on a connection of its own, from     keeps each device's last
(device_tools)      the start; reads ``mcp_tools`` events only        MCP tools (its page's)
VoiceUnit           ``$share/hub/xiaozhi/events/voice_command``,      intent → actions →
(voice)             ``$share/hub/xiaozhi/events/voice_command/+``     executors → ``respond``
FanOutUnit          ``$share/hub/xiaozhi/commands/group/+``,          one command per member on
(fan_out)           ``$share/hub/xiaozhi/commands/broadcast``         its own command topic
BridgeRequestsUnit  ``bridge/request/#``                              answers on
(bridge_requests)                                                     ``bridge/response/<path>``
MonitorUnit         ``monitor/+/listeners/<hub id>``; while a         a device's live audio for
(monitor)           dashboard listens, ``monitor/{id}/audio``         ``/devices/{id}/listen``;
                                                                      its own connection's birth
                                                                      and will are this hub's
                                                                      ``bridge/hubs/<id>/state``
StreamUnit          ``events/+`` on a connection of its own, opened   offers what the hub hears
(stream)            by the first stream client; sees every message    to live-stream sessions
==================  ================================================  ===========================

What the units share is in :mod:`xiaozhi_hub.unit` (the context, retained publishing) and
:mod:`xiaozhi_hub.snapshots`; text becomes a plan in one
:class:`~xiaozhi_hub.pipeline.VoicePipeline` (used by the voice unit, ``intent/test`` and the
REST voice test); actions are carried out by :class:`~xiaozhi_hub.execution.ActionRunner`.

Scale-out: voice commands and group/broadcast commands are consumed through shared
subscriptions (``$share/<XIAOZHI_HUB_SHARE_GROUP>/…``), so N replicas handle each exactly once.
Bridge requests and the registry feed are *not* shared: every replica applies each edit so
their registries agree, and each answers it (an integrator with N replicas gets N identical
responses; ``transaction`` correlates them). Virtual entity state is per replica, in memory.

Retained snapshots (``bridge/devices|groups|info``, ``status/broadcast``,
``status/group/{id}``, discovery configs) go through :class:`~xiaozhi_hub.unit.RetainedPublisher`:
published only when their bytes change, and remembered by the owner, which re-publishes them
after a broker restart that lost them.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
import time
from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from xiaozhi import __version__
from xiaozhi.config import redact_mqtt_url
from xiaozhi.errors import InvalidTopic, StartupError
from xiaozhi.payloads import Availability, BridgeState, CommandPayload
from xiaozhi.topics import TopicKind
from xiaozhi_hub.actions import Plan
from xiaozhi_hub.activations import ACTIVATIONS_FILE_NAME, Activations, DeviceApproval
from xiaozhi_hub.bridge_api import BridgeApi
from xiaozhi_hub.bridge_requests import BridgeRequestsUnit
from xiaozhi_hub.bridge_state import BridgeStateUnit
from xiaozhi_hub.command_results import CommandResultsUnit
from xiaozhi_hub.device_tools import DeviceToolsUnit
from xiaozhi_hub.discovery_unit import DiscoveryUnit
from xiaozhi_hub.execution import ActionRunner
from xiaozhi_hub.fan_out import FanOutUnit
from xiaozhi_hub.home import DEMO_HOME_PATH, Home, HomeAssistantBinding, VirtualBinding, load_home
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.metrics import HubMetrics
from xiaozhi_hub.monitor import MonitorUnit
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.registry_edits import (
    REGISTRY_EDITS_FILE_NAME,
    load_registry_edits,
    save_registry_edits,
)
from xiaozhi_hub.registry_feed import RegistryFeedUnit
from xiaozhi_hub.settings import HubSettings
from xiaozhi_hub.snapshots import Snapshots
from xiaozhi_hub.speech_engines import speech_to_text, text_to_speech
from xiaozhi_hub.speech_unit import SpeechUnit
from xiaozhi_hub.spoken_answers import SpokenAnswers
from xiaozhi_hub.stream import StreamUnit
from xiaozhi_hub.undelivered import UndeliveredUnit
from xiaozhi_hub.unit import (
    MAX_PAYLOAD_BYTES,
    STOP_GRACE_SECONDS,
    HubContext,
    HubState,
    Route,
    Unit,
    new_id,
    now_wire,
)
from xiaozhi_hub.virtual_entities import VirtualEntitiesUnit
from xiaozhi_hub.voice import VoiceUnit
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage
from xiaozhi_speech import SpeechToText

__all__ = ["MAX_PAYLOAD_BYTES", "HubService", "HubStartError", "HubState"]

log = structlog.get_logger("xiaozhi.hub")

MQTT_CONNECT_TIMEOUT_SECONDS = 30.0


class _FromSettings(enum.Enum):
    FROM_SETTINGS = "from settings"


class HubStartError(StartupError):
    """The hub could not start (broker unreachable, a unit failed)."""


class HubService:
    """The hub's units around one MQTT connection.

    Args:
        settings: the hub's settings (broker, topics, share group, language...).
        home: the home model; default: load ``settings.config`` (or the demo home).
        engine: an already warmed intent engine for ``home`` (tests share one); default: one
            is loaded and warmed at start, on the voice pipeline's own thread.
        environ: where Home Assistant tokens are read (``token_env``); default ``os.environ``.
        http_transport: an httpx transport for Home Assistant calls (tests); default: network.
        stt: the speech recogniser (tests share a loaded one); None: this hub does not
            transcribe; default: the one ``settings.stt_engine`` names.

    Raises:
        HomeConfigError: the home file does not validate (from the constructor).
    """

    def __init__(
        self,
        settings: HubSettings,
        *,
        home: Home | None = None,
        engine: IntentEngine | None = None,
        environ: Mapping[str, str] | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        stt: SpeechToText | _FromSettings | None = _FromSettings.FROM_SETTINGS,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        if home is None:
            home = load_home(settings.config or DEMO_HOME_PATH)
            if settings.config is None and not settings.demo_bindings:
                home = home.sandboxed()
                log.info("demo_home_sandboxed", note="every demo entity is virtual")
        self.home = home
        self.registry = Registry(self.home)
        self._registry_edits = settings.state_dir / REGISTRY_EDITS_FILE_NAME
        load_registry_edits(self.registry, self._registry_edits)
        self.activations = Activations(
            settings.state_dir / ACTIVATIONS_FILE_NAME,
            ttl_seconds=settings.activation_ttl_seconds,
            max_pending=settings.max_pending_activations,
        )
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.states: dict[str, dict[str, Any]] = {
            e.entity_id: dict(e.binding.state)
            for e in self.home.entities
            if isinstance(e.binding, VirtualBinding)
        }
        self._http_transport = http_transport
        self._http: httpx.AsyncClient | None = None
        self.owner = MqttOwner(
            settings.mqtt_url,
            client_id=settings.hub_id,
            will=OutMessage(self.topics.bridge_state(), self._bridge_state(False), 1, True),
            birth=[OutMessage(self.topics.bridge_state(), self._bridge_state(True), 1, True)],
            on_message=self._on_message,
            drop_retained=self._stale_retained,
            tls_context=settings.mqtt_tls(),
        )
        self.metrics = HubMetrics(self.registry, lambda: self.owner.stats)
        self._ctx = HubContext(settings, self.owner, self.registry, self.metrics)
        self.pipeline = VoicePipeline(
            self.registry,
            language=settings.language,
            engine=engine,
            states=self.states,
            observe_latency=self.metrics.intent_latency.observe,
        )
        self.bridge_api = BridgeApi(self.registry, self.pipeline, activations=self.activations)
        self.snapshots = Snapshots(self._ctx)
        self.command_results = CommandResultsUnit(self._ctx)
        self.device_tools = DeviceToolsUnit(self._ctx)
        self.virtual_entities = VirtualEntitiesUnit(self._ctx, self.states)
        runner = ActionRunner(
            topics=self.topics,
            publish=self._ctx.publish,
            states=self.states,
            environ=self.environ,
            http=self._http_client,
            now=now_wire,
            answers=self.command_results,
            answer_timeout=settings.command_answer_timeout_seconds,
            device_online=self._device_online,
            on_state=self.virtual_entities.state_changed,
        )
        self.virtual_entities.execute = lambda action, binding: runner.execute(
            action, binding, message_id=new_id()
        )

        # The units, in start order (stopped in reverse): listed here and nowhere else.
        self.bridge_state = BridgeStateUnit(self._ctx)
        self.discovery = DiscoveryUnit(
            self._ctx, on_ha_online=self.bridge_state.online, states=self.states
        )
        self.registry_feed = RegistryFeedUnit(
            self._ctx,
            self.snapshots,
            self.discovery.device_changed,
            on_forget=self.device_tools.forget,
        )
        self.spoken = SpokenAnswers(text_to_speech(settings), language=settings.language)
        self.voice = VoiceUnit(self._ctx, pipeline=self.pipeline, runner=runner, spoken=self.spoken)
        # A recogniser built here is this service's to close; one passed in is the caller's.
        self._own_stt: SpeechToText | None = None
        if isinstance(stt, _FromSettings):
            stt = self._own_stt = speech_to_text(settings)
        self.speech = (
            SpeechUnit(self._ctx, stt=stt, pipeline=self.pipeline, answer=self.voice.answer)
            if stt is not None
            else None
        )
        self.fan_out = FanOutUnit(self._ctx)
        self.undelivered = UndeliveredUnit(self._ctx, self.command_results)
        self.bridge_requests = BridgeRequestsUnit(
            self._ctx,
            self.bridge_api,
            self.snapshots,
            self._device_edited,
            on_edit=lambda: save_registry_edits(self.registry, self._registry_edits),
            on_forget=self.device_tools.forget,
        )
        self.monitor = MonitorUnit(self._ctx, self._state_figures)
        self.stream = StreamUnit(self._ctx)
        self.activations.on_change = self.stream.activation_changed
        self.units: tuple[Unit, ...] = (
            self.bridge_state,
            self.registry_feed,
            self.discovery,  # after the registry: its probe also ends the registry's burst
            self.command_results,  # before voice: actions await devices' answers through it
            self.device_tools,
            self.voice,  # loads the intents (the pipeline's) before it subscribes
            *([self.speech] if self.speech is not None else []),  # its corpus is the intents'
            self.fan_out,
            self.undelivered,  # after the registry: it answers for devices known absent
            self.bridge_requests,
            self.virtual_entities,
            self.monitor,
            self.stream,  # last: it taps what the others route
        )
        self._routes: dict[TopicKind, Route] = {}
        for unit in self.units:
            overlap = self._routes.keys() & unit.routes.keys()
            assert not overlap, f"{type(unit).__name__} routes {overlap} again"
            self._routes.update(unit.routes)
        self._started_units: list[Unit] = []
        self.started_at: float | None = None

    @staticmethod
    def _bridge_state(online: bool) -> bytes:
        state = Availability.ONLINE if online else Availability.OFFLINE
        return BridgeState(state=state).to_wire()

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self._ctx.state

    @property
    def counters(self) -> collections.Counter[str]:
        return self._ctx.counters

    @property
    def edges(self) -> dict[str, Availability]:
        return self.registry_feed.edges

    @property
    def intents_loaded(self) -> bool:
        """True once the voice pipeline can plan (``/health``, ``/api/v1/stats``)."""
        return self.pipeline.ready

    def _device_edited(self, device_id: str) -> None:
        """A bridge request (or its REST equivalent) renamed, moved or removed a device: its
        Home Assistant discovery and the live stream follow."""
        self.discovery.device_changed(device_id)
        self.stream.device_edited(device_id)

    def _device_online(self, device_id: str) -> bool | None:
        """False when the registry knows the device is not connected; None if never heard."""
        record = self.registry.device(device_id)
        if record is None or record.status is None:
            return None
        return record.connected

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.ha_timeout_seconds, transport=self._http_transport
            )
        return self._http

    # -- lifetime --------------------------------------------------------------------------

    async def start(self, *, connect_timeout: float = MQTT_CONNECT_TIMEOUT_SECONDS) -> None:
        """Connect, then start every unit; returns once the hub is online.

        Raises:
            HubStartError: the broker did not answer within ``connect_timeout`` seconds, or
                a unit failed to start (everything started is stopped again).
        """
        self._ctx.state = HubState.STARTING
        self._check_tokens()
        if self.settings.device_approval is DeviceApproval.AUTO:
            log.warning(
                "device_approval_auto",
                hint="every device that runs setup gets a token without an operator's "
                "approval: for labs only (XIAOZHI_DEVICE_APPROVAL=manual in production)",
            )
        await self.owner.start()
        try:
            await asyncio.wait_for(self.owner.connected.wait(), connect_timeout)
        except TimeoutError as err:
            await self.owner.stop(flush_seconds=0)
            self._ctx.state = HubState.STOPPED
            raise HubStartError(
                f"broker {redact_mqtt_url(self.settings.mqtt_url)} did not answer within "
                f"{connect_timeout:g} s"
            ) from err
        try:
            for unit in self.units:
                await unit.start()
                self._started_units.append(unit)
        except Exception as err:
            await self.stop()
            raise HubStartError(f"{type(unit).__name__} failed to start: {err}") from err
        self.snapshots.flush(force=True)
        self._ctx.state = HubState.ONLINE
        self.started_at = time.time()
        log.info(
            "hub_online",
            hub_id=self.settings.hub_id,
            broker=redact_mqtt_url(self.settings.mqtt_url),
            devices=len(self.registry.devices()),
        )

    async def stop(self) -> None:
        """Stop the units, publish ``bridge/state`` offline, flush and disconnect."""
        if self._ctx.state is HubState.STOPPED:
            return
        self._ctx.state = HubState.STOPPING
        for unit in reversed(self._started_units):
            try:
                await unit.stop()
            except Exception:
                log.exception("unit_stop_failed", unit=type(unit).__name__)
        self._started_units.clear()
        # A clean disconnect does not fire the will: say offline ourselves, first.
        self.owner.publish_nowait(
            OutMessage(self.topics.bridge_state(), self._bridge_state(False), 1, True)
        )
        await self.owner.stop(flush_seconds=STOP_GRACE_SECONDS)
        self.pipeline.close()
        if self._own_stt is not None:
            await self._own_stt.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._ctx.state = HubState.STOPPED
        log.info("hub_stopped", hub_id=self.settings.hub_id)

    def _check_tokens(self) -> None:
        for entity in self.home.entities:
            binding = entity.binding
            if isinstance(binding, HomeAssistantBinding) and not self.environ.get(
                binding.token_env
            ):
                log.warning(
                    "home_assistant_token_missing",
                    entity_id=entity.entity_id,
                    token_env=binding.token_env,
                )

    # -- dispatch --------------------------------------------------------------------------

    def _stale_retained(self, topic: str) -> bool:
        """A retained status or sensor reading of a device the operator removed is old news.

        A retained voice command would be executed again by every hub that subscribes
        (Mosquitto 2.0 hands retained messages to shared subscriptions too), and a device may
        set the retain flag on its own topic: drop it, counted and logged."""
        try:
            parsed = self.topics.parse(topic)
        except InvalidTopic:
            return False
        kind = parsed.kind
        if kind in (TopicKind.STATUS, TopicKind.SENSOR) and parsed.device_id is not None:
            # What an operator removed stays removed across restarts: the broker still holds
            # its last retained status; only something it says now brings it back.
            return self.registry.is_removed(parsed.device_id)
        if kind not in (TopicKind.VOICE_COMMAND_EVENTS, TopicKind.DEVICE_VOICE_COMMAND):
            return False
        self.metrics.voice_commands.labels("invalid").inc()
        self._ctx.invalid("voice_command", topic, "retained: a voice command is said once")
        return True

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Route one message to its unit; runs on the event loop, so every handler is quick."""
        if topic == self.discovery.probe:
            self.discovery.on_probe(payload)
            return
        try:
            parsed = self.topics.parse(topic)
        except InvalidTopic as err:
            if topic.startswith(self.bridge_requests.prefix):
                self.bridge_requests.on_bad_path(topic, payload)
            else:
                self._ctx.invalid("topic", topic, err)
            return
        route = self._routes.get(parsed.kind)
        if route is not None:
            route(topic, parsed, payload)
        self.stream.tap(topic, parsed, payload)

    # -- for the HTTP layer ----------------------------------------------------------------

    async def plan_text(
        self, text: str, *, device_id: str | None = None, area: str | None = None
    ) -> Plan:
        """The voice test: recognize, resolve and plan ``text``; nothing is executed.

        Raises:
            IntentsNotLoaded: the intents are not loaded yet (check :attr:`intents_loaded`).
        """
        return await self.pipeline.plan_text(text, device_id=device_id, area=area)

    def publish_command(self, topic: str, command: CommandPayload) -> bool:
        """Publish a command (QoS 1, never retained); False when the queue dropped it."""
        return self._ctx.publish(topic, command.to_wire(), qos=1)

    async def command_device(self, device_id: str, command: CommandPayload) -> bool:
        """Publish ``command`` on ``device_id``'s command topic, subscribed to its events
        first (the broker's SUBACK awaited); False when the queue dropped it.

        The hub follows a command it reads until the device's ``command_result``
        (:class:`~xiaozhi_hub.undelivered.UndeliveredUnit`), and subscribes to a device's
        events only once it has commanded it. Subscribing after the command went out races
        the device: a reboot answers within a millisecond and disconnects, so its answer
        came before the SUBACK and the hub then reported the command "disconnected before it
        answered" too (two results for one command).
        """
        await self.command_results.watch(device_id)
        return self.publish_command(self.topics.command(device_id), command)

    def _state_figures(self) -> dict[str, Any]:
        """What this hub's retained ``bridge/hubs/{id}/state`` carries besides who it is, so
        every replica's Bridge page shows it (:mod:`xiaozhi_hub.monitor`)."""
        devices = self.registry.devices()
        return {
            "devices": {"known": len(devices), "connected": sum(d.connected for d in devices)},
            "stream_sessions": self.stream.sessions,
            "mqtt_connects": self.owner.stats.connects,
        }

    def stats(self) -> dict[str, Any]:
        """Counters for ``/api/v1/stats``."""
        devices = self.registry.devices()
        owner = self.owner.stats
        return {
            "hub_id": self.settings.hub_id,
            "state": self.state.value,
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "devices": {"known": len(devices), "connected": sum(d.connected for d in devices)},
            "groups": len(self.registry.groups()),
            "edges": {edge: state.value for edge, state in sorted(self.edges.items())},
            "counters": dict(sorted(self.counters.items())),
            "intents_loaded": self.intents_loaded,
            "stream": self.stream.stats(),
            "monitor": self.monitor.stats(),
            "mqtt": {
                "connected": owner.connected,
                "connects": owner.connects,
                "published": owner.published,
                "acknowledged": owner.acknowledged,
                "received": owner.received,
                "dropped_qos0": owner.dropped_qos0,
                "dropped_qos1": owner.dropped_qos1,
                "queued": owner.queued,
                "inflight": owner.inflight,
            },
        }
