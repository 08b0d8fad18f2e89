"""The MQTT topic tree of design.md §5, as functions: no other module writes a topic by hand.

Seed 003 ("MQTT Protocol" → "Topic Structure") gives the ``commands``, ``status``,
``sensors`` and ``events`` branches; the ``bridge`` branch and Home Assistant discovery follow
zigbee2mqtt (reference/home-automation.md, "Implications for our hub").

Ids (device, group, edge, sensor type, bridge path level) obey one grammar,
:data:`DEVICE_ID_PATTERN` of at most :data:`MAX_ID_LENGTH` characters, so they can never
hold ``/``, ``+`` or ``#`` and are valid Home Assistant node and object ids too. A MAC
becomes ``aabbccddeeff`` (:func:`normalize_device_id`).

Some device ids are **reserved** (:data:`RESERVED_DEVICE_IDS`) because they are fixed levels
beside ``{device_id}`` in the tree: ``group`` and ``broadcast`` (``commands/group/...``,
``commands/broadcast``, same under ``status``) and ``voice_command``, ``device_connected``,
``device_disconnected`` (``events/...``). A device with one of these ids would receive or
publish on a fan-out topic, so they are refused everywhere a device id is validated.

Errors here are :class:`~xiaozhi.errors.InvalidTopic`: a caller built a topic or id wrongly.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from xiaozhi.errors import InvalidTopic

__all__ = [
    "DEVICE_ID_PATTERN",
    "MAX_ID_LENGTH",
    "MAX_PATH_LENGTH",
    "RESERVED_DEVICE_IDS",
    "ParsedTopic",
    "PublishOptions",
    "QoS",
    "TopicKind",
    "TopicTree",
    "normalize_device_id",
    "publish_options",
    "validate_device_id",
    "validate_entity_id",
    "validate_id",
]

DEVICE_ID_PATTERN = r"[a-z0-9_-]+"
"""The id grammar of design.md §5 (a regex, without anchors)."""

MAX_ID_LENGTH = 64
"""Longest id in characters: a MAC is 12, a UUID 36; keeps topics and HA ids short."""

MAX_PATH_LENGTH = 256
"""Longest bridge request path (``device/rename``...) in characters."""

RESERVED_DEVICE_IDS = frozenset(
    {"group", "broadcast", "voice_command", "device_connected", "device_disconnected"}
)
"""Fixed topic levels beside ``{device_id}``; never valid as device ids (module docstring)."""

_ID_RE = re.compile(DEVICE_ID_PATTERN)
_COMPONENT_RE = re.compile(r"[a-z_]+")
_HA_ID_RE = re.compile(r"[a-zA-Z0-9_-]+")  # Home Assistant's node_id / object_id grammar
_MAC_RE = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}")
_ID_FORM = f"1-{MAX_ID_LENGTH} characters of a-z, 0-9, '_' or '-'"


class TopicKind(enum.StrEnum):
    """What a topic is: one member per row of design.md §5 (and per subscription filter)."""

    COMMAND = "command"  # commands/{device_id}
    GROUP_COMMAND = "group_command"  # commands/group/{group_id}
    BROADCAST_COMMAND = "broadcast_command"  # commands/broadcast
    STATUS = "status"  # status/{device_id}
    GROUP_STATUS = "group_status"  # status/group/{group_id}
    BROADCAST_STATUS = "broadcast_status"  # status/broadcast
    SENSOR = "sensor"  # sensors/{device_id}/{sensor_type}
    DEVICE_EVENTS = "device_events"  # events/{device_id}
    VOICE_COMMAND_EVENTS = "voice_command_events"  # events/voice_command (trusted publishers)
    DEVICE_VOICE_COMMAND = "device_voice_command"  # events/voice_command/{device_id} (MQTT devices)
    DEVICE_CONNECTED = "device_connected"  # events/device_connected
    DEVICE_DISCONNECTED = "device_disconnected"  # events/device_disconnected
    UTTERANCE = "utterance"  # utterances/{device_id}: one whole utterance's audio, for speech
    UTTERANCE_START = "utterance_start"  # utterances/{device_id}/start: one begins (streaming)
    UTTERANCE_CLAIM = "utterance_claim"  # utterances/{device_id}/claim: a worker takes it
    UTTERANCE_STREAM = "utterance_stream"  # utterances/{device_id}/stream/{worker_id}: its frames
    MONITOR_AUDIO = "monitor_audio"  # monitor/{device_id}/audio: uplink Opus, while wanted
    MONITOR_LISTENERS = "monitor_listeners"  # monitor/{device_id}/listeners/{edge_id}: who wants it
    BRIDGE_STATE = "bridge_state"  # bridge/state
    BRIDGE_EDGE = "bridge_edge"  # bridge/edges/{edge_id}
    BRIDGE_EDGE_LOG = "bridge_edge_log"  # bridge/edges/{edge_id}/log: its warnings, for the stream
    BRIDGE_HUB = "bridge_hub"  # bridge/hubs/{hub_id}/state: one hub replica's own availability
    BRIDGE_DEVICES = "bridge_devices"  # bridge/devices
    BRIDGE_GROUPS = "bridge_groups"  # bridge/groups
    BRIDGE_INFO = "bridge_info"  # bridge/info
    BRIDGE_REQUEST = "bridge_request"  # bridge/request/{path}
    BRIDGE_RESPONSE = "bridge_response"  # bridge/response/{path}
    ENTITY_STATE = "entity_state"  # entities/{entity_id}: a home entity the hub keeps itself
    ENTITY_SET = "entity_set"  # entities/{entity_id}/set: a command for it (Home Assistant...)
    HA_DISCOVERY = "ha_discovery"  # homeassistant/{component}/[{node_id}/]{object_id}/config
    HA_STATUS = "ha_status"  # homeassistant/status (Home Assistant's birth/will)


class QoS(enum.IntEnum):
    """MQTT delivery levels we use (QoS 2 is never needed: handlers are idempotent)."""

    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1


class PublishOptions(NamedTuple):
    """How to publish on a topic kind, from the columns of design.md §5."""

    qos: QoS
    retain: bool


_ONCE = QoS.AT_MOST_ONCE
_LEAST = QoS.AT_LEAST_ONCE

_PUBLISH_OPTIONS: dict[TopicKind, PublishOptions] = {
    # Commands are never retained: a retained command re-fires after a reboot (design.md §5).
    TopicKind.COMMAND: PublishOptions(_LEAST, retain=False),
    TopicKind.GROUP_COMMAND: PublishOptions(_LEAST, retain=False),
    TopicKind.BROADCAST_COMMAND: PublishOptions(_LEAST, retain=False),
    TopicKind.STATUS: PublishOptions(_LEAST, retain=True),
    TopicKind.GROUP_STATUS: PublishOptions(_LEAST, retain=True),
    TopicKind.BROADCAST_STATUS: PublishOptions(_LEAST, retain=True),
    TopicKind.SENSOR: PublishOptions(_ONCE, retain=True),
    TopicKind.DEVICE_EVENTS: PublishOptions(_LEAST, retain=False),
    TopicKind.VOICE_COMMAND_EVENTS: PublishOptions(_LEAST, retain=False),
    TopicKind.DEVICE_VOICE_COMMAND: PublishOptions(_LEAST, retain=False),
    TopicKind.DEVICE_CONNECTED: PublishOptions(_LEAST, retain=False),
    TopicKind.DEVICE_DISCONNECTED: PublishOptions(_LEAST, retain=False),
    TopicKind.UTTERANCE: PublishOptions(_LEAST, retain=False),
    TopicKind.UTTERANCE_START: PublishOptions(_LEAST, retain=False),
    TopicKind.UTTERANCE_CLAIM: PublishOptions(_LEAST, retain=False),
    # QoS 1: the worker needs every batch, in order (one publisher, one topic: MQTT keeps it).
    TopicKind.UTTERANCE_STREAM: PublishOptions(_LEAST, retain=False),
    # Live audio for a listener: a lost packet is a skipped frame, never worth a resend.
    TopicKind.MONITOR_AUDIO: PublishOptions(_ONCE, retain=False),
    # Retained, so the edge a device reaches later still learns that someone listens.
    TopicKind.MONITOR_LISTENERS: PublishOptions(_LEAST, retain=True),
    TopicKind.BRIDGE_STATE: PublishOptions(_LEAST, retain=True),
    TopicKind.BRIDGE_EDGE: PublishOptions(_LEAST, retain=True),
    TopicKind.BRIDGE_EDGE_LOG: PublishOptions(_ONCE, retain=False),
    TopicKind.BRIDGE_HUB: PublishOptions(_LEAST, retain=True),
    TopicKind.BRIDGE_DEVICES: PublishOptions(_LEAST, retain=True),
    TopicKind.BRIDGE_GROUPS: PublishOptions(_LEAST, retain=True),
    TopicKind.BRIDGE_INFO: PublishOptions(_LEAST, retain=True),
    TopicKind.BRIDGE_REQUEST: PublishOptions(_LEAST, retain=False),
    TopicKind.BRIDGE_RESPONSE: PublishOptions(_LEAST, retain=False),
    TopicKind.ENTITY_STATE: PublishOptions(_LEAST, retain=True),
    TopicKind.ENTITY_SET: PublishOptions(_LEAST, retain=False),
    TopicKind.HA_DISCOVERY: PublishOptions(_LEAST, retain=True),
    # Home Assistant publishes this one itself (birth "online" / will "offline"), not retained.
    TopicKind.HA_STATUS: PublishOptions(_ONCE, retain=False),
}


def publish_options(kind: TopicKind) -> PublishOptions:
    """QoS and retain flag for publishing on ``kind`` (design.md §5's columns)."""
    return _PUBLISH_OPTIONS[kind]


_ENTITY_ID_RE = re.compile(r"[a-z0-9_]{1,64}\.[a-z0-9_]{1,64}")


def validate_entity_id(value: str) -> str:
    """``value`` if it is a Home Assistant style entity id (``light.living_room``).

    Raises:
        InvalidTopic: anything else.
    """
    if not isinstance(value, str) or _ENTITY_ID_RE.fullmatch(value) is None:
        raise InvalidTopic(
            f"invalid entity id {value!r}: expected '<domain>.<object_id>' of a-z, 0-9 and '_'",
            value=str(value),
        )
    return value


def validate_id(value: str, *, what: str = "id") -> str:
    """Check ``value`` against the id grammar and return it unchanged.

    Args:
        value: a group id, edge id, sensor type, bridge path level...
        what: how the error message names it ("group id", "sensor type"...).

    Raises:
        InvalidTopic: ``value`` is not 1-64 characters of ``[a-z0-9_-]``.
    """
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or _ID_RE.fullmatch(value) is None:
        raise InvalidTopic(f"invalid {what} {value!r}: expected {_ID_FORM}", value=str(value))
    return value


def validate_device_id(value: str) -> str:
    """Check a device id (the grammar, not reserved) and return it unchanged.

    Raises:
        InvalidTopic: quoting the bad value and the expected form; call
            :func:`normalize_device_id` first for a MAC or mixed-case id.
    """
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not _ID_RE.fullmatch(value):
        raise InvalidTopic(
            f"invalid device id {value!r}: expected {_ID_FORM} "
            f"(normalize_device_id turns a MAC 'AA:BB:CC:DD:EE:FF' into 'aabbccddeeff')",
            value=str(value),
        )
    if value in RESERVED_DEVICE_IDS:
        reserved = ", ".join(sorted(RESERVED_DEVICE_IDS))
        raise InvalidTopic(
            f"device id {value!r} is reserved: it is a fixed topic level ({reserved})",
            value=value,
        )
    return value


def normalize_device_id(raw: str) -> str:
    """Turn what a device calls itself into a device id, or refuse it.

    ``"AA:BB:CC:DD:EE:FF"`` and ``"aa-bb-cc-dd-ee-ff"`` (the firmware's ``Device-Id`` header,
    reference §1.2) become ``"aabbccddeeff"``; other ids are lower-cased. Nothing else is
    changed: an id that still has ``/``, ``+``, ``#``, spaces... is refused, not rewritten, and
    so is any non-ASCII id (its lower case could be another device's id).

    Raises:
        InvalidTopic: the result does not fit the grammar, or is reserved.
    """
    if not isinstance(raw, str):
        raise InvalidTopic(f"invalid device id {raw!r}: expected a string", value=str(raw))
    if not raw.isascii():
        # Lower-casing is only safe on ASCII: the Kelvin sign (U+212A) lowers to "k", so
        # "\u212aitchen" would become another device's "kitchen".
        raise InvalidTopic(
            f"invalid device id {raw!r}: expected ASCII letters, digits, '_' or '-'", value=raw
        )
    value = raw.lower()
    mac = _MAC_RE.fullmatch(value)
    if mac is not None:
        value = value.replace(mac.group(1), "")
    return validate_device_id(value)


def _validate_level(value: str, what: str) -> str:
    """A free-form topic level (base topic, discovery prefix): non-empty, no wildcard."""
    if not value or any(c in value for c in "/+#\x00"):
        raise InvalidTopic(
            f"invalid {what} {value!r}: expected a non-empty topic level without '/', '+', '#'",
            value=value,
        )
    return value


def _validate_ha_id(value: str, what: str) -> str:
    """A Home Assistant node or object id: HA's own grammar, which also allows upper case."""
    if len(value) > MAX_PATH_LENGTH or _HA_ID_RE.fullmatch(value) is None:
        raise InvalidTopic(
            f"invalid {what} {value!r}: expected a-z, A-Z, 0-9, '_' or '-'", value=value
        )
    return value


def _validate_path(path: str) -> str:
    """A bridge request path: id-grammar levels joined by '/' (``group/members/add``)."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidTopic(
            f"invalid bridge path {path!r}: expected 1-{MAX_PATH_LENGTH} characters",
            value=str(path),
        )
    for level in path.split("/"):
        validate_id(level, what="bridge path level")
    return path


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """What :meth:`TopicTree.parse` found in a topic; fields not in that kind are ``None``."""

    kind: TopicKind
    device_id: str | None = None
    group_id: str | None = None
    sensor_type: str | None = None
    edge_id: str | None = None
    path: str | None = None  # bridge request/response path
    component: str | None = None  # HA discovery
    node_id: str | None = None  # HA discovery (optional level)
    object_id: str | None = None  # HA discovery
    entity_id: str | None = None  # a home entity (light.living_room)
    hub_id: str | None = None  # one hub replica (its own state)
    worker_id: str | None = None  # one speech worker (a claimed utterance's stream)


@dataclass(frozen=True, slots=True)
class TopicTree:
    """The topic tree under one base topic (a setting, default ``xiaozhi``).

    Args:
        base: the first level(s), e.g. ``xiaozhi`` or ``site1/xiaozhi``.
        discovery_prefix: Home Assistant's MQTT discovery prefix.

    Every builder validates the ids it is given and raises
    :class:`~xiaozhi.errors.InvalidTopic` for a bad one.
    """

    base: str = "xiaozhi"
    discovery_prefix: str = "homeassistant"

    def __post_init__(self) -> None:
        for level in self.base.split("/"):
            _validate_level(level, "base topic level")
        _validate_level(self.discovery_prefix, "discovery prefix")
        base_root = self.base.split("/", 1)[0]
        if base_root == self.discovery_prefix:
            raise InvalidTopic(
                f"base topic {self.base!r} must not start with the discovery prefix "
                f"{self.discovery_prefix!r}",
                value=self.base,
            )

    # -- commands (never retained) -------------------------------------------------------

    def command(self, device_id: str) -> str:
        """``xiaozhi/commands/{device_id}``."""
        return f"{self.base}/commands/{validate_device_id(device_id)}"

    def group_command(self, group_id: str) -> str:
        """``xiaozhi/commands/group/{group_id}``; the hub fans it out to the members."""
        return f"{self.base}/commands/group/{validate_id(group_id, what='group id')}"

    def broadcast_command(self) -> str:
        """``xiaozhi/commands/broadcast``."""
        return f"{self.base}/commands/broadcast"

    # -- status (retained) ---------------------------------------------------------------

    def status(self, device_id: str) -> str:
        """``xiaozhi/status/{device_id}``: the device's LWT topic too."""
        return f"{self.base}/status/{validate_device_id(device_id)}"

    def group_status(self, group_id: str) -> str:
        """``xiaozhi/status/group/{group_id}``."""
        return f"{self.base}/status/group/{validate_id(group_id, what='group id')}"

    def broadcast_status(self) -> str:
        """``xiaozhi/status/broadcast``: the fleet summary."""
        return f"{self.base}/status/broadcast"

    # -- sensors and events --------------------------------------------------------------

    def sensor(self, device_id: str, sensor_type: str) -> str:
        """``xiaozhi/sensors/{device_id}/{sensor_type}``."""
        device = validate_device_id(device_id)
        return f"{self.base}/sensors/{device}/{validate_id(sensor_type, what='sensor type')}"

    def device_events(self, device_id: str) -> str:
        """``xiaozhi/events/{device_id}``."""
        return f"{self.base}/events/{validate_device_id(device_id)}"

    def voice_command_events(self) -> str:
        """``xiaozhi/events/voice_command``: voice commands from publishers the broker trusts
        to name the speaking device in the payload (edges, which authenticated their
        WebSocket devices; the hub's speech unit)."""
        return f"{self.base}/events/voice_command"

    def device_voice_command(self, device_id: str) -> str:
        """``xiaozhi/events/voice_command/{device_id}``: an MQTT device's own voice commands.

        The speaking device is this topic level, which the broker's ACL binds to the device's
        credential (``pattern write xiaozhi/events/voice_command/%u``); a payload naming
        another device is refused by the hub. ``voice_command`` is a reserved device id, so
        this never collides with ``events/{device_id}``.
        """
        return f"{self.base}/events/voice_command/{validate_device_id(device_id)}"

    def device_connected(self) -> str:
        """``xiaozhi/events/device_connected``."""
        return f"{self.base}/events/device_connected"

    def device_disconnected(self) -> str:
        """``xiaozhi/events/device_disconnected``."""
        return f"{self.base}/events/device_disconnected"

    def utterance(self, device_id: str) -> str:
        """``xiaozhi/utterances/{device_id}``: one whole utterance, for the speech workers.

        Whole utterances travel as one message so a shared subscription (speech workers
        scaled out) never splits one device's audio (design.md §8, §10).
        """
        return f"{self.base}/utterances/{validate_device_id(device_id)}"

    def utterance_start(self, device_id: str) -> str:
        """``xiaozhi/utterances/{device_id}/start``: an utterance begins; the speech worker
        the shared group hands it to may claim it and receive its frames as they come."""
        return f"{self.utterance(device_id)}/start"

    def utterance_claim(self, device_id: str) -> str:
        """``xiaozhi/utterances/{device_id}/claim``: a speech worker to the device's edge
        (claimed, received, refused)."""
        return f"{self.utterance(device_id)}/claim"

    def utterance_stream(self, device_id: str, worker_id: str) -> str:
        """``xiaozhi/utterances/{device_id}/stream/{worker_id}``: a claimed utterance's
        frames, in batches, to the one worker that claimed it."""
        return f"{self.utterance(device_id)}/stream/{validate_id(worker_id, what='worker id')}"

    # -- audio monitor across edges (seed 004) --------------------------------------------

    def monitor_audio(self, device_id: str) -> str:
        """``xiaozhi/monitor/{device_id}/audio``: the device's uplink Opus, one seed 004 audio
        monitor packet per message, published by the edge holding the device only while
        some other edge has a listener for it (``monitor_listeners``)."""
        return f"{self.base}/monitor/{validate_device_id(device_id)}/audio"

    def monitor_listeners(self, device_id: str, edge_id: str) -> str:
        """``xiaozhi/monitor/{device_id}/listeners/{edge_id}``: retained while ``edge_id``
        has an audio monitor listener for the device; an empty payload clears it."""
        edge = validate_id(edge_id, what="edge id")
        return f"{self.base}/monitor/{validate_device_id(device_id)}/listeners/{edge}"

    def all_monitor_listeners(self) -> str:
        """``xiaozhi/monitor/+/listeners/+``: every edge watches who wants which device."""
        return f"{self.base}/monitor/+/listeners/+"

    # -- bridge (zigbee2mqtt style) ------------------------------------------------------

    def entity_state(self, entity_id: str) -> str:
        """``entities/{entity_id}``: the state of a home entity the hub itself keeps (a
        ``virtual`` binding), retained, so Home Assistant shows what a voice command did."""
        return f"{self.base}/entities/{validate_entity_id(entity_id)}"

    def entity_set(self, entity_id: str) -> str:
        """``entities/{entity_id}/set``: a command for that entity, in Home Assistant's MQTT
        forms (``ON``/``OFF``, ``LOCK``/``UNLOCK``, a JSON light command)."""
        return f"{self.entity_state(entity_id)}/set"

    def all_entity_sets(self) -> str:
        """The hub's subscription for every entity command."""
        return f"{self.base}/entities/+/set"

    def bridge_state(self) -> str:
        """``xiaozhi/bridge/state``: retained ``online``, the hub's LWT ``offline``."""
        return f"{self.base}/bridge/state"

    def bridge_edge(self, edge_id: str) -> str:
        """``xiaozhi/bridge/edges/{edge_id}``: one edge's availability (its LWT)."""
        return f"{self.base}/bridge/edges/{validate_id(edge_id, what='edge id')}"

    def bridge_edge_log(self, edge_id: str) -> str:
        """``xiaozhi/bridge/edges/{edge_id}/log``: one edge's warning and error log lines.

        QoS 0, never retained: a live view for the hub's stream, not a log archive (the
        edge's own log file or stderr keeps every line).
        """
        return f"{self.bridge_edge(edge_id)}/log"

    def bridge_devices(self) -> str:
        """``xiaozhi/bridge/devices``."""
        return f"{self.base}/bridge/devices"

    def bridge_groups(self) -> str:
        """``xiaozhi/bridge/groups``."""
        return f"{self.base}/bridge/groups"

    def bridge_info(self) -> str:
        """``xiaozhi/bridge/info``."""
        return f"{self.base}/bridge/info"

    def bridge_request(self, path: str) -> str:
        """``xiaozhi/bridge/request/{path}``, e.g. path ``device/rename``."""
        return f"{self.base}/bridge/request/{_validate_path(path)}"

    def bridge_response(self, path: str) -> str:
        """``xiaozhi/bridge/response/{path}``: where the answer to the same path goes."""
        return f"{self.base}/bridge/response/{_validate_path(path)}"

    # -- subscription filters ------------------------------------------------------------

    def all_status(self) -> str:
        """``xiaozhi/status/+``: every device status (and ``status/broadcast``, not groups)."""
        return f"{self.base}/status/+"

    def all_sensors(self) -> str:
        """``xiaozhi/sensors/+/+``: every sensor of every device."""
        return f"{self.base}/sensors/+/+"

    def device_sensors(self, device_id: str) -> str:
        """``xiaozhi/sensors/{device_id}/+``."""
        return f"{self.base}/sensors/{validate_device_id(device_id)}/+"

    def all_events(self) -> str:
        """``xiaozhi/events/+``: per-device events and the fleet-wide ones."""
        return f"{self.base}/events/+"

    def all_utterances(self) -> str:
        """``xiaozhi/utterances/+``: every device's utterances (speech workers share it)."""
        return f"{self.base}/utterances/+"

    def all_utterance_starts(self) -> str:
        """``xiaozhi/utterances/+/start``: every device's utterance starts (workers share it)."""
        return f"{self.base}/utterances/+/start"

    def worker_streams(self, worker_id: str) -> str:
        """``xiaozhi/utterances/+/stream/{worker_id}``: the frames of what ``worker_id``
        claimed."""
        return f"{self.base}/utterances/+/stream/{validate_id(worker_id, what='worker id')}"

    def all_edges(self) -> str:
        """``xiaozhi/bridge/edges/+``: the hub watches edges' LWTs here."""
        return f"{self.base}/bridge/edges/+"

    def all_edge_logs(self) -> str:
        """``xiaozhi/bridge/edges/+/log``: every edge's log lines (the hub's live stream)."""
        return f"{self.base}/bridge/edges/+/log"

    def hub_state(self, hub_id: str) -> str:
        """``xiaozhi/bridge/hubs/{hub_id}/state``: one hub replica's availability, retained.

        ``bridge/state`` is shared by every replica (one replica's will would speak for all),
        so what must end with one replica (its audio-monitor wants) is tied to this one: the
        hub's monitor connection publishes ``online`` here and has ``offline`` as its will.
        """
        return f"{self.base}/bridge/hubs/{validate_id(hub_id, what='hub id')}/state"

    def all_hub_states(self) -> str:
        """``xiaozhi/bridge/hubs/+/state``: edges drop the monitor wants of a hub gone offline."""
        return f"{self.base}/bridge/hubs/+/state"

    def all_commands_for(self, device_id: str) -> list[str]:
        """The filters an MQTT device subscribes to: its own commands and the broadcast.

        This is what seed 003's MQTT client subscribes to; group commands reach a device
        through the hub's fan-out onto its own topic (design.md §5).
        """
        return [self.command(device_id), self.broadcast_command()]

    def all_group_commands(self) -> str:
        """``xiaozhi/commands/group/+``: every group's commands (the hub fans them out)."""
        return f"{self.base}/commands/group/+"

    @staticmethod
    def shared(group: str, topic_filter: str) -> str:
        """``$share/{group}/{topic_filter}``: one subscriber of the group gets each message.

        Share only whole units (a voice command, a group command): a shared group is
        round-robin per message, so a device's ordered stream must never be split across
        one (design.md §8).
        """
        return f"$share/{validate_id(group, what='share group')}/{topic_filter}"

    def all_device_voice_commands(self) -> str:
        """``xiaozhi/events/voice_command/+``: every MQTT device's own voice commands."""
        return f"{self.base}/events/voice_command/+"

    def shared_voice_commands(self, group: str) -> str:
        """``$share/{group}/xiaozhi/events/voice_command``: each hub replica gets a share.

        Safe to share because each voice command is one whole message (:meth:`shared`).
        """
        return self.shared(group, self.voice_command_events())

    def hub_probe(self, hub_id: str) -> str:
        """``xiaozhi/bridge/hubs/{hub_id}/probe``: a topic private to one hub replica.

        The hub publishes a nonce here after subscribing to retained topics; the broker
        delivers in order on one connection, so the nonce coming back means every retained
        message of the earlier subscriptions has arrived (a readiness event, not a timer).
        Not part of the public tree: nobody else publishes or subscribes here.
        """
        return f"{self.base}/bridge/hubs/{validate_id(hub_id, what='hub id')}/probe"

    def bridge_requests(self) -> str:
        """``xiaozhi/bridge/request/#``."""
        return f"{self.base}/bridge/request/#"

    # -- Home Assistant ------------------------------------------------------------------

    def all_discovery_configs(self) -> str:
        """``homeassistant/+/+/+/config``: every discovery config with a node id level."""
        return f"{self.discovery_prefix}/+/+/+/config"

    def discovery_config(
        self,
        component: str,
        node_id: str | None,
        object_id: str,
        prefix: str | None = None,
    ) -> str:
        """``homeassistant/{component}/[{node_id}/]{object_id}/config`` (HA MQTT discovery).

        Args:
            component: ``sensor``, ``event``, ``button``, ``number``, ``device``...
            node_id: optional grouping level (HA allows it to be left out).
            object_id: the entity or device id.
            prefix: the discovery prefix; defaults to :attr:`discovery_prefix`.
        """
        root = (
            self.discovery_prefix if prefix is None else _validate_level(prefix, "discovery prefix")
        )
        if _COMPONENT_RE.fullmatch(component) is None:
            raise InvalidTopic(
                f"invalid HA component {component!r}: expected a-z and '_'", value=component
            )
        obj = _validate_ha_id(object_id, "object id")
        if node_id is None:
            return f"{root}/{component}/{obj}/config"
        return f"{root}/{component}/{_validate_ha_id(node_id, 'node id')}/{obj}/config"

    def ha_status(self, prefix: str | None = None) -> str:
        """``homeassistant/status``: HA's birth message, on which discovery is re-sent."""
        root = (
            self.discovery_prefix if prefix is None else _validate_level(prefix, "discovery prefix")
        )
        return f"{root}/status"

    # -- parsing -------------------------------------------------------------------------

    def publish_options(self, topic: str) -> PublishOptions:
        """QoS and retain for a concrete topic; refuses wildcards and foreign topics."""
        return publish_options(self.parse(topic).kind)

    def parse(self, topic: str) -> ParsedTopic:
        """Say what ``topic`` is and pull out its ids.

        Raises:
            InvalidTopic: ``topic`` is not a concrete topic of this tree (wildcards, unknown
                branches, ids outside the grammar, reserved device ids).
        """
        if not isinstance(topic, str) or "+" in topic or "#" in topic:
            raise InvalidTopic(
                f"{topic!r} is not a concrete topic (no wildcards allowed)", value=str(topic)
            )
        base = self.base + "/"
        try:
            if topic.startswith(base):
                parsed = self._parse_tree(topic[len(base) :].split("/"))
            elif topic.startswith(self.discovery_prefix + "/"):
                parsed = self._parse_ha(topic[len(self.discovery_prefix) + 1 :].split("/"))
            else:
                parsed = None
        except InvalidTopic as err:
            # Name the whole topic; the message still quotes the offending level.
            raise InvalidTopic(f"topic {topic!r}: {err}", value=topic) from err
        if parsed is None:
            raise InvalidTopic(
                f"{topic!r} is not in the topic tree under {self.base!r} "
                f"or {self.discovery_prefix!r}",
                value=topic,
            )
        return parsed

    @staticmethod
    def _parse_tree(levels: list[str]) -> ParsedTopic | None:
        match levels:
            case ["commands", "broadcast"]:
                return ParsedTopic(TopicKind.BROADCAST_COMMAND)
            case ["commands", "group", group]:
                return ParsedTopic(
                    TopicKind.GROUP_COMMAND, group_id=validate_id(group, what="group id")
                )
            case ["commands", device]:
                return ParsedTopic(TopicKind.COMMAND, device_id=validate_device_id(device))
            case ["status", "broadcast"]:
                return ParsedTopic(TopicKind.BROADCAST_STATUS)
            case ["status", "group", group]:
                return ParsedTopic(
                    TopicKind.GROUP_STATUS, group_id=validate_id(group, what="group id")
                )
            case ["status", device]:
                return ParsedTopic(TopicKind.STATUS, device_id=validate_device_id(device))
            case ["sensors", device, sensor_type]:
                return ParsedTopic(
                    TopicKind.SENSOR,
                    device_id=validate_device_id(device),
                    sensor_type=validate_id(sensor_type, what="sensor type"),
                )
            case ["events", "voice_command"]:
                return ParsedTopic(TopicKind.VOICE_COMMAND_EVENTS)
            case ["events", "voice_command", device]:
                return ParsedTopic(
                    TopicKind.DEVICE_VOICE_COMMAND, device_id=validate_device_id(device)
                )
            case ["events", "device_connected"]:
                return ParsedTopic(TopicKind.DEVICE_CONNECTED)
            case ["events", "device_disconnected"]:
                return ParsedTopic(TopicKind.DEVICE_DISCONNECTED)
            case ["events", device]:
                return ParsedTopic(TopicKind.DEVICE_EVENTS, device_id=validate_device_id(device))
            case ["utterances", device]:
                return ParsedTopic(TopicKind.UTTERANCE, device_id=validate_device_id(device))
            case ["utterances", device, "start"]:
                return ParsedTopic(TopicKind.UTTERANCE_START, device_id=validate_device_id(device))
            case ["utterances", device, "claim"]:
                return ParsedTopic(TopicKind.UTTERANCE_CLAIM, device_id=validate_device_id(device))
            case ["utterances", device, "stream", worker]:
                return ParsedTopic(
                    TopicKind.UTTERANCE_STREAM,
                    device_id=validate_device_id(device),
                    worker_id=validate_id(worker, what="worker id"),
                )
            case ["monitor", device, "audio"]:
                return ParsedTopic(TopicKind.MONITOR_AUDIO, device_id=validate_device_id(device))
            case ["monitor", device, "listeners", edge]:
                return ParsedTopic(
                    TopicKind.MONITOR_LISTENERS,
                    device_id=validate_device_id(device),
                    edge_id=validate_id(edge, what="edge id"),
                )
            case ["entities", entity]:
                return ParsedTopic(TopicKind.ENTITY_STATE, entity_id=validate_entity_id(entity))
            case ["entities", entity, "set"]:
                return ParsedTopic(TopicKind.ENTITY_SET, entity_id=validate_entity_id(entity))
            case ["bridge", "state"]:
                return ParsedTopic(TopicKind.BRIDGE_STATE)
            case ["bridge", "edges", edge]:
                return ParsedTopic(TopicKind.BRIDGE_EDGE, edge_id=validate_id(edge, what="edge id"))
            case ["bridge", "edges", edge, "log"]:
                return ParsedTopic(
                    TopicKind.BRIDGE_EDGE_LOG, edge_id=validate_id(edge, what="edge id")
                )
            case ["bridge", "hubs", hub, "state"]:
                return ParsedTopic(TopicKind.BRIDGE_HUB, hub_id=validate_id(hub, what="hub id"))
            case ["bridge", "devices"]:
                return ParsedTopic(TopicKind.BRIDGE_DEVICES)
            case ["bridge", "groups"]:
                return ParsedTopic(TopicKind.BRIDGE_GROUPS)
            case ["bridge", "info"]:
                return ParsedTopic(TopicKind.BRIDGE_INFO)
            case ["bridge", "request" | "response" as direction, *rest] if rest:
                kind = (
                    TopicKind.BRIDGE_REQUEST
                    if direction == "request"
                    else TopicKind.BRIDGE_RESPONSE
                )
                return ParsedTopic(kind, path=_validate_path("/".join(rest)))
        return None

    @staticmethod
    def _parse_ha(levels: list[str]) -> ParsedTopic | None:
        match levels:
            case ["status"]:
                return ParsedTopic(TopicKind.HA_STATUS)
            case [component, object_id, "config"] if _COMPONENT_RE.fullmatch(component):
                return ParsedTopic(
                    TopicKind.HA_DISCOVERY,
                    component=component,
                    object_id=_validate_ha_id(object_id, "object id"),
                )
            case [component, node_id, object_id, "config"] if _COMPONENT_RE.fullmatch(component):
                return ParsedTopic(
                    TopicKind.HA_DISCOVERY,
                    component=component,
                    node_id=_validate_ha_id(node_id, "node id"),
                    object_id=_validate_ha_id(object_id, "object id"),
                )
        return None
