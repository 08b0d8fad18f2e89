"""Home Assistant MQTT discovery payloads, as pure functions (reference/home-automation.md §2).

:func:`device_configs` turns one registry device into ``(topic, payload)`` pairs to publish
retained (QoS 1); :func:`clear_payloads` gives the empty retained payloads that delete stale
ones. The hub re-publishes them when Home Assistant's birth message (``homeassistant/status``
= ``online``) arrives, and at start reads the retained ``homeassistant/+/+/+/config`` for a
few seconds and clears those of ours (:func:`is_own_topic`) that :func:`device_configs` no
longer produces (:func:`stale_topics`).

**Per-entity topics**, ``homeassistant/<component>/xiaozhi_<device_id>/<object_id>/config``,
rather than one device-based payload (``homeassistant/device/.../config``): device-based
discovery only exists since Home Assistant 2024.11, while per-entity discovery works on every
release including 2024.3 (the newest that runs on Python 3.11) and is not deprecated; it also
lets one entity be added (a new sensor type) or cleared without touching the others.

Per device: a connectivity ``binary_sensor`` (from ``xiaozhi/status/{id}``), the five
telemetry sensors, one sensor per sensor type seen, the speaker volume as a ``number``
(commands are :class:`~xiaozhi.payloads.CommandPayload` JSON built by ``command_template``), a
``button`` to reboot, and the voice ``event`` entity on ``xiaozhi/events/{id}``. Every entity
has ``origin``, ``device`` (``identifiers: ["xiaozhi_<id>"]``, ``suggested_area``) and the
two-layer availability of zigbee2mqtt (hub ``bridge/state`` and the device's status, mode
``all``). ``unique_id`` is ``xiaozhi_<id>_<object_id>`` and never changes on rename: only
``device.name`` does.

The home's own entities (``virtual`` bindings: nothing else holds their state) are discovered
too (:func:`entity_configs`, node ``xiaozhi-entities``), each as a device in its area, with
their state on ``xiaozhi/entities/{entity_id}`` and commands on its ``/set``. Entities bound to
a zigbee2mqtt bulb, to Home Assistant itself or to a xiaozhi device are not: they already
appear in Home Assistant through their owner, and a second copy would be a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xiaozhi import __version__ as _version
from xiaozhi import jsonutil
from xiaozhi.commands import DeviceCommand
from xiaozhi.payloads import EventType
from xiaozhi.topics import TopicKind, TopicTree
from xiaozhi_hub.home import Entity
from xiaozhi_hub.registry import DeviceRecord

__all__ = [
    "DEFAULT_SENSOR_EXPIRE_AFTER_S",
    "DEVICE_EVENT_TYPES",
    "ENTITIES_NODE",
    "ORIGIN_NAME",
    "TELEMETRY_SENSORS",
    "clear_payloads",
    "device_configs",
    "encode",
    "entity_configs",
    "ha_unit",
    "is_own_topic",
    "node_id",
    "stale_topics",
]

ORIGIN_NAME = "xiaozhi-hub"
MANUFACTURER = "xiaozhi"
DEFAULT_MODEL = "ESP32-S3 voice"
NODE_PREFIX = "xiaozhi_"

DEFAULT_SENSOR_EXPIRE_AFTER_S = 900
"""A retained sensor reading older than this (seconds) shows as unavailable in HA."""

DEVICE_EVENT_TYPES = (
    EventType.VOICE_COMMAND.value,
    EventType.RESPONSE.value,
    EventType.ACTION.value,
    EventType.ACTION_RESULT.value,
    EventType.COMMAND_RESULT.value,
    EventType.ERROR.value,
    EventType.UTTERANCE.value,
    EventType.WAKE_WORD.value,
    EventType.ABORT.value,
    EventType.MCP_TOOLS.value,
)
"""Every ``event_type`` published on ``xiaozhi/events/{device_id}``: HA drops (with a warning)
an event whose type is not listed, so publish no other type on that topic."""

TELEMETRY_SENSORS: dict[str, dict[str, Any]] = {
    "uptime": {
        "name": "Uptime",
        "unit_of_measurement": "s",
        "device_class": "duration",
        "state_class": "total_increasing",
    },
    "wifi_signal": {
        "name": "Wi-Fi signal",
        "unit_of_measurement": "dBm",
        "device_class": "signal_strength",
        "state_class": "measurement",
    },
    "free_heap": {
        "name": "Free heap",
        "unit_of_measurement": "B",
        "device_class": "data_size",
        "state_class": "measurement",
    },
    "memory_usage": {
        "name": "Memory usage",
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "icon": "mdi:memory",
    },
    "cpu_usage": {
        "name": "CPU usage",
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "icon": "mdi:cpu-64-bit",
    },
}
"""Sensors read from the status payload (seed 003 "Status Message" fields)."""

_SENSOR_CLASSES: dict[str, tuple[str | None, str | None]] = {
    # sensor_type -> (device_class, default unit)
    "temperature": ("temperature", "°C"),
    "humidity": ("humidity", "%"),
    "pressure": ("pressure", "hPa"),
    "illuminance": ("illuminance", "lx"),
    "audio_level": ("sound_pressure", "dB"),
    "battery": ("battery", "%"),
    "co2": ("carbon_dioxide", "ppm"),
    "voltage": ("voltage", "V"),
}

_UNIT_SPELLINGS: dict[str, str] = {
    # how devices write a unit (lower-cased) -> Home Assistant's spelling of it
    "c": "°C",
    "°c": "°C",
    "degc": "°C",
    "celsius": "°C",
    "f": "°F",
    "°f": "°F",
    "degf": "°F",
    "fahrenheit": "°F",
    "k": "K",
    "kelvin": "K",
    "%": "%",
    "percent": "%",
    "pct": "%",
    "%rh": "%",
    "rh": "%",
    "db": "dB",
    "dba": "dBA",
    "dbm": "dBm",
    "pa": "Pa",
    "hpa": "hPa",
    "kpa": "kPa",
    "mbar": "mbar",
    "bar": "bar",
    "psi": "psi",
    "mmhg": "mmHg",
    "inhg": "inHg",
    "lx": "lx",
    "lux": "lx",
    "ppm": "ppm",
    "v": "V",
    "volt": "V",
    "volts": "V",
    "mv": "mV",
    "s": "s",
    "sec": "s",
    "seconds": "s",
    "ms": "ms",
    "min": "min",
    "h": "h",
    "b": "B",
    "bytes": "B",
    "kb": "kB",
    "kib": "KiB",
    "mb": "MB",
    "mib": "MiB",
}
"""Home Assistant compares units exactly: ``celsius`` on a temperature sensor is refused with a
warning, ``°C`` is not."""

_DEVICE_CLASS_UNITS: dict[str, frozenset[str]] = {
    # the units HA's sensor platform accepts per device class (``DEVICE_CLASS_UNITS``)
    "temperature": frozenset({"°C", "°F", "K"}),
    "humidity": frozenset({"%"}),
    "pressure": frozenset({"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"}),
    "illuminance": frozenset({"lx"}),
    "sound_pressure": frozenset({"dB", "dBA"}),
    "battery": frozenset({"%"}),
    "carbon_dioxide": frozenset({"ppm"}),
    "voltage": frozenset({"V", "mV", "µV", "kV", "MV"}),
}
"""A reading in a unit its class does not allow is discovered without the class: HA then shows
it as a plain number with its unit instead of logging an error and dropping the entity."""


def ha_unit(unit: str | None) -> str | None:
    """A device's unit in Home Assistant's spelling (``celsius`` → ``°C``); unknown units are
    kept as they are, and None or blank stays None."""
    if unit is None or not unit.strip():
        return None
    return _UNIT_SPELLINGS.get(unit.strip().lower(), unit.strip())


_FIXED_OBJECTS = frozenset({"status", "volume", "voice", "restart", *TELEMETRY_SENSORS})


def node_id(device_id: str) -> str:
    """The discovery node id of a device: ``xiaozhi_<device_id>``."""
    return f"{NODE_PREFIX}{device_id}"


def _sensor_object_id(sensor_type: str) -> str:
    # A sensor type may not reuse a fixed entity's object id (its unique_id would clash).
    return f"sensor_{sensor_type}" if sensor_type in _FIXED_OBJECTS else sensor_type


def _device_block(device: DeviceRecord, area_name: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "identifiers": [node_id(device.device_id)],
        "name": device.name,
        "manufacturer": MANUFACTURER,
        "model": device.model or DEFAULT_MODEL,
    }
    if device.firmware_version:
        block["sw_version"] = device.firmware_version
    if area_name:
        block["suggested_area"] = area_name
    return block


def device_configs(
    device: DeviceRecord,
    *,
    topics: TopicTree,
    area_name: str | None = None,
    origin_version: str = _version,
    sensor_expire_after_s: int = DEFAULT_SENSOR_EXPIRE_AFTER_S,
) -> list[tuple[str, dict[str, Any]]]:
    """Every discovery config of one device, as ``(topic, payload)`` to publish retained.

    Args:
        device: the registry's record (name, model, firmware, sensor types seen).
        topics: the topic tree (base topic and discovery prefix).
        area_name: the area's display name for ``suggested_area`` (``Home.area_name``).
        origin_version: the hub's version, for ``origin.sw_version``.
        sensor_expire_after_s: ``expire_after`` of sensor readings (they are retained).
    """
    dev_id = device.device_id
    node = node_id(dev_id)
    status_topic = topics.status(dev_id)
    bridge = {"topic": topics.bridge_state(), "value_template": "{{ value_json.state }}"}
    device_layer = {
        "topic": status_topic,
        "value_template": "{{ 'online' if value_json.status == 'connected' else 'offline' }}",
    }
    common = {
        "device": _device_block(device, area_name),
        "origin": {"name": ORIGIN_NAME, "sw_version": origin_version},
        "availability": [bridge, device_layer],
        "availability_mode": "all",
    }

    def entity(component: str, object_id: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        payload = {"unique_id": f"{node}_{object_id}", **fields, **common}
        return topics.discovery_config(component, node, object_id), payload

    configs = [
        # Only the hub layer: a disconnected device shows "off", not "unavailable".
        entity(
            "binary_sensor",
            "status",
            name="Connectivity",
            state_topic=status_topic,
            value_template="{{ value_json.status }}",
            payload_on="connected",
            payload_off="disconnected",
            device_class="connectivity",
            entity_category="diagnostic",
        ),
    ]
    configs[0][1]["availability"] = [bridge]
    for key, spec in TELEMETRY_SENSORS.items():
        if key not in device.telemetry:
            continue  # never reported (WebSocket devices send no uptime or heap): no entity
        configs.append(
            entity(
                "sensor",
                key,
                state_topic=status_topic,
                value_template=f"{{{{ value_json.get('{key}') }}}}",
                entity_category="diagnostic",
                **spec,
            )
        )
    for sensor_type, reading in sorted(device.sensors.items()):
        device_class, unit = _SENSOR_CLASSES.get(sensor_type, (None, None))
        fields: dict[str, Any] = {
            "name": sensor_type.replace("_", " ").capitalize(),
            "state_topic": topics.sensor(dev_id, sensor_type),
            "value_template": "{{ value_json.value }}",
            "expire_after": sensor_expire_after_s,
        }
        unit = ha_unit(reading.unit) or unit
        if device_class and unit not in _DEVICE_CLASS_UNITS.get(device_class, ()):
            device_class = None
        numeric = isinstance(reading.value, int | float) and not isinstance(reading.value, bool)
        if device_class:
            fields["device_class"] = device_class
        if unit:
            fields["unit_of_measurement"] = unit
        if numeric:
            fields["state_class"] = "measurement"
        configs.append(entity("sensor", _sensor_object_id(sensor_type), **fields))
    configs.append(
        entity(
            "number",
            "volume",
            name="Volume",
            command_topic=topics.command(dev_id),
            command_template=_volume_template(dev_id),
            min=0,
            max=100,
            step=1,
            mode="slider",
            unit_of_measurement="%",
            optimistic=True,  # the status payload carries no volume to read back
            qos=1,
            retain=False,  # commands are never retained (design.md §5)
            icon="mdi:volume-high",
        )
    )
    configs.append(
        entity(
            "button",
            "restart",
            name="Restart",
            command_topic=topics.command(dev_id),
            payload_press=jsonutil.dumps_text(
                {"command": DeviceCommand.REBOOT.value, "parameters": {}, "device_id": dev_id}
            ),
            device_class="restart",
            entity_category="config",
            qos=1,
            retain=False,
        )
    )
    configs.append(
        entity(
            "event",
            "voice",
            name="Voice",
            state_topic=topics.device_events(dev_id),
            event_types=list(DEVICE_EVENT_TYPES),
            icon="mdi:microphone-message",
        )
    )
    return configs


def _volume_template(device_id: str) -> str:
    """A ``command_template`` rendering a :class:`~xiaozhi.payloads.CommandPayload` JSON."""
    marker = "__VALUE__"
    text = jsonutil.dumps_text(
        {
            "command": DeviceCommand.SET_VOLUME.value,
            "parameters": {"volume": marker},
            "device_id": device_id,
        }
    )
    return text.replace(f'"{marker}"', "{{ value | int }}")


def encode(payload: dict[str, Any]) -> bytes:
    """A discovery payload as the bytes to publish."""
    return jsonutil.dumps(payload)


def clear_payloads(stale: Iterable[str]) -> list[tuple[str, bytes]]:
    """Empty retained payloads that delete the configs on ``stale`` topics (HA discovery)."""
    return [(topic, b"") for topic in sorted(set(stale))]


ENTITIES_NODE = "xiaozhi-entities"
"""The node id of the hub's own entities' configs: a device's node is ``xiaozhi_`` + its id,
so no device can take this one (``-`` after ``xiaozhi``)."""


def entity_configs(
    entity: Entity,
    state: Mapping[str, Any],
    *,
    topics: TopicTree,
    area_name: str | None = None,
    origin_version: str = _version,
) -> list[tuple[str, dict[str, Any]]]:
    """The discovery config of a home entity the hub keeps itself (a ``virtual`` binding),
    so Home Assistant shows it and can command it: none for a domain HA's MQTT integration
    cannot drive from our state object.

    Its state topic carries the entity's state object (``{"state": "on", "brightness":
    128}``); commands go to ``…/set`` in the same words (:mod:`xiaozhi_hub.virtual_entities`).
    Each is a device of its own, so it lands in its area.
    """
    domain, object_name = entity.entity_id.split(".", 1)
    state_topic = topics.entity_state(entity.entity_id)
    command_topic = topics.entity_set(entity.entity_id)
    word = "{{ value_json.state }}"
    fields: dict[str, Any]
    if domain == "light":
        component = "light"
        fields = {
            "schema": "template",
            "command_topic": command_topic,
            "command_on_template": (
                '{"state": "on"{% if brightness is defined %}, "brightness": {{ brightness }}'
                "{% endif %}}"
            ),
            "command_off_template": '{"state": "off"}',
            "state_template": word,
        }
        fields["brightness_template"] = "{{ value_json.brightness | default(255) }}"
    elif domain in ("switch", "fan", "input_boolean"):
        component = "switch"
        fields = {
            "command_topic": command_topic,
            "payload_on": '{"state": "on"}',
            "payload_off": '{"state": "off"}',
            "value_template": word,
            "state_on": "on",
            "state_off": "off",
        }
    elif domain == "lock":
        component = "lock"
        fields = {
            "command_topic": command_topic,
            "payload_lock": '{"state": "locked"}',
            "payload_unlock": '{"state": "unlocked"}',
            "value_template": word,
            "state_locked": "locked",
            "state_unlocked": "unlocked",
        }
    elif domain == "cover":
        component = "cover"
        fields = {
            "command_topic": command_topic,
            "payload_open": '{"state": "open"}',
            "payload_close": '{"state": "closed"}',
            "payload_stop": None,
            "value_template": word,
            "state_open": "open",
            "state_closed": "closed",
        }
    elif domain == "climate":
        component = "climate"
        fields = {
            "modes": [str(state.get("state", "heat"))],
            "mode_state_topic": state_topic,
            "mode_state_template": word,
            "temperature_command_topic": command_topic,
            "temperature_command_template": '{"temperature": {{ value }}}',
            "temperature_state_topic": state_topic,
            "temperature_state_template": "{{ value_json.temperature }}",
            "current_temperature_topic": state_topic,
            "current_temperature_template": "{{ value_json.current_temperature }}",
            "temperature_unit": "C",
        }
    else:
        return []
    if component != "climate":
        fields["state_topic"] = state_topic
    object_id = f"{domain}_{object_name}"
    device: dict[str, Any] = {
        "identifiers": [f"{ENTITIES_NODE}_{object_id}"],
        "name": entity.name,
        "manufacturer": MANUFACTURER,
        "model": "xiaozhi hub entity",
    }
    if area_name:
        device["suggested_area"] = area_name
    payload = {
        "unique_id": f"xiaozhi_entity_{object_id}",
        "name": None,  # the device's name: one entity per device
        **fields,
        "qos": 1,
        "retain": False,
        "device": device,
        "origin": {"name": ORIGIN_NAME, "sw_version": origin_version},
        "availability": [
            {"topic": topics.bridge_state(), "value_template": "{{ value_json.state }}"}
        ],
    }
    return [(topics.discovery_config(component, ENTITIES_NODE, object_id), payload)]


def is_own_topic(topic: str, *, topics: TopicTree) -> bool:
    """True for a discovery topic whose node id is one of ours (``xiaozhi_…``, or the hub's
    own entities' node)."""
    try:
        parsed = topics.parse(topic)
    except ValueError:
        return False
    return (
        parsed.kind is TopicKind.HA_DISCOVERY
        and parsed.node_id is not None
        and (parsed.node_id.startswith(NODE_PREFIX) or parsed.node_id == ENTITIES_NODE)
    )


def stale_topics(retained: Iterable[str], current: Iterable[str], *, topics: TopicTree) -> set[str]:
    """Our retained config topics that ``current`` (all topics just produced) no longer has."""
    keep = set(current)
    return {t for t in retained if t not in keep and is_own_topic(t, topics=topics)}
