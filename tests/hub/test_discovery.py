"""Home Assistant MQTT discovery payloads (xiaozhi_hub.discovery), checked without a broker."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from xiaozhi.commands import DeviceCommand, parse_parameters
from xiaozhi.payloads import (
    CommandPayload,
    DeviceStatus,
    EventType,
    SensorPayload,
    StatusPayload,
)
from xiaozhi.topics import TopicKind, TopicTree
from xiaozhi_hub.discovery import (
    DEVICE_EVENT_TYPES,
    clear_payloads,
    device_configs,
    encode,
    is_own_topic,
    node_id,
    stale_topics,
)
from xiaozhi_hub.registry import DeviceRecord, Registry

TOPICS = TopicTree()

HA_ID = re.compile(r"[a-zA-Z0-9_-]+")

# HA's required keys per platform (homeassistant/components/mqtt/<platform>.py schemas)
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "number": {"command_topic", "min", "max"},
    "button": {"command_topic"},
    "event": {"state_topic", "event_types"},
}


@pytest.fixture
def kitchen(registry: Registry) -> DeviceRecord:
    registry.apply_status(
        StatusPayload.model_validate(
            {
                "status": "connected",
                "device_id": "demo_kitchen",
                "firmware_version": "1.6.2",
                **dict.fromkeys(("uptime", "wifi_signal", "free_heap"), 1),
                **dict.fromkeys(("memory_usage", "cpu_usage"), 1.5),
            }
        ),
        now=1.0,
    )
    for sensor_type, value, unit in [
        ("temperature", 22.5, "°C"),
        ("humidity", 40, None),
        ("audio_level", 51.2, "dB"),
        ("door", "open", None),
        ("uptime", 5, "s"),  # clashes with a telemetry sensor's object id
    ]:
        registry.apply_sensor(
            SensorPayload(
                sensor_type=sensor_type, value=value, unit=unit, device_id="demo_kitchen"
            ),
            now=2.0,
        )
    record = registry.device("demo_kitchen")
    assert record is not None
    return record


def configs_by_object(record: DeviceRecord, **kwargs: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    tree = TopicTree()
    out = {}
    for topic, payload in device_configs(record, **{"topics": TOPICS, **kwargs}):
        parsed = tree.parse(topic)
        assert parsed.kind is TopicKind.HA_DISCOVERY
        out[parsed.object_id] = (parsed.component, payload)
    return out


def test_every_payload_has_home_assistants_required_fields(kitchen: DeviceRecord) -> None:
    configs = device_configs(kitchen, area_name="Kitchen", topics=TOPICS)
    unique_ids = set()
    for topic, payload in configs:
        parsed = TopicTree().parse(topic)
        assert parsed.kind is TopicKind.HA_DISCOVERY
        assert HA_ID.fullmatch(parsed.node_id or "")
        assert HA_ID.fullmatch(parsed.object_id or "")
        assert (
            topic
            == f"homeassistant/{parsed.component}/xiaozhi_demo_kitchen/{parsed.object_id}/config"
        )
        assert payload["name"]
        assert HA_ID.fullmatch(payload["unique_id"])
        assert payload["unique_id"] == f"xiaozhi_demo_kitchen_{parsed.object_id}"
        assert REQUIRED[parsed.component] <= payload.keys(), topic
        assert payload["origin"]["name"] == "xiaozhi-hub"
        assert payload["device"]["identifiers"] == ["xiaozhi_demo_kitchen"]
        assert payload["availability_mode"] == "all"
        assert payload["availability"][0] == {
            "topic": "xiaozhi/bridge/state",
            "value_template": "{{ value_json.state }}",
        }
        assert orjson.loads(encode(payload)) == payload
        unique_ids.add(payload["unique_id"])
    assert len(unique_ids) == len(configs)


def test_device_block_and_two_layer_availability(kitchen: DeviceRecord) -> None:
    _, payload = configs_by_object(kitchen, area_name="Kitchen")["temperature"]
    assert payload["device"] == {
        "identifiers": ["xiaozhi_demo_kitchen"],
        "name": "Kitchen speaker",
        "manufacturer": "xiaozhi",
        "model": "xiaozhi simulator",
        "sw_version": "1.6.2",
        "suggested_area": "Kitchen",
    }
    assert payload["availability"][1] == {
        "topic": "xiaozhi/status/demo_kitchen",
        "value_template": "{{ 'online' if value_json.status == 'connected' else 'offline' }}",
    }


def test_entities_of_a_device(kitchen: DeviceRecord) -> None:
    configs = configs_by_object(kitchen)
    assert {k: c for k, (c, _) in configs.items()} == {
        "status": "binary_sensor",
        "uptime": "sensor",
        "wifi_signal": "sensor",
        "free_heap": "sensor",
        "memory_usage": "sensor",
        "cpu_usage": "sensor",
        "audio_level": "sensor",
        "door": "sensor",
        "humidity": "sensor",
        "temperature": "sensor",
        "sensor_uptime": "sensor",
        "volume": "number",
        "restart": "button",
        "voice": "event",
    }


def test_connectivity_sensor(kitchen: DeviceRecord) -> None:
    _, status = configs_by_object(kitchen)["status"]
    assert status["state_topic"] == "xiaozhi/status/demo_kitchen"
    assert (status["payload_on"], status["payload_off"]) == ("connected", "disconnected")
    assert status["device_class"] == "connectivity"
    # only the hub layer, so a disconnected device reads "off" rather than "unavailable"
    assert status["availability"] == [
        {"topic": "xiaozhi/bridge/state", "value_template": "{{ value_json.state }}"}
    ]


def test_telemetry_sensors(kitchen: DeviceRecord) -> None:
    configs = configs_by_object(kitchen)
    units = {
        key: configs[key][1].get("unit_of_measurement")
        for key in ("uptime", "wifi_signal", "free_heap", "memory_usage", "cpu_usage")
    }
    assert units == {
        "uptime": "s",
        "wifi_signal": "dBm",
        "free_heap": "B",
        "memory_usage": "%",
        "cpu_usage": "%",
    }
    _, wifi = configs["wifi_signal"]
    assert wifi["state_topic"] == "xiaozhi/status/demo_kitchen"
    assert wifi["value_template"] == "{{ value_json.get('wifi_signal') }}"
    assert wifi["device_class"] == "signal_strength"
    assert wifi["entity_category"] == "diagnostic"


def test_sensor_types_seen(kitchen: DeviceRecord) -> None:
    configs = configs_by_object(kitchen, sensor_expire_after_s=60)
    _, temperature = configs["temperature"]
    assert temperature["state_topic"] == "xiaozhi/sensors/demo_kitchen/temperature"
    assert temperature["value_template"] == "{{ value_json.value }}"
    assert (temperature["device_class"], temperature["unit_of_measurement"]) == (
        "temperature",
        "°C",
    )
    assert temperature["state_class"] == "measurement"
    assert temperature["expire_after"] == 60
    _, humidity = configs["humidity"]
    assert humidity["unit_of_measurement"] == "%"  # the device sent none: the class's unit
    _, audio = configs["audio_level"]
    assert (audio["device_class"], audio["unit_of_measurement"]) == ("sound_pressure", "dB")
    _, door = configs["door"]
    assert "state_class" not in door  # not a number
    assert "device_class" not in door
    _, clash = configs["sensor_uptime"]
    assert clash["state_topic"] == "xiaozhi/sensors/demo_kitchen/uptime"


def test_volume_number_sends_a_command_payload(kitchen: DeviceRecord) -> None:
    _, volume = configs_by_object(kitchen)["volume"]
    assert (volume["min"], volume["max"], volume["step"]) == (0, 100, 1)
    assert volume["command_topic"] == "xiaozhi/commands/demo_kitchen"
    assert volume["retain"] is False
    rendered = volume["command_template"].replace("{{ value | int }}", "80")
    command = CommandPayload.from_wire(rendered)
    assert command.device_id == "demo_kitchen"
    parsed = parse_parameters(command)
    assert parsed is not None
    assert parsed[0] is DeviceCommand.SET_VOLUME
    assert parsed[1].volume == 80


def test_restart_button(kitchen: DeviceRecord) -> None:
    _, button = configs_by_object(kitchen)["restart"]
    command = CommandPayload.from_wire(button["payload_press"])
    assert command.command == "reboot"
    assert button["command_topic"] == "xiaozhi/commands/demo_kitchen"


def test_voice_event(kitchen: DeviceRecord) -> None:
    _, voice = configs_by_object(kitchen)["voice"]
    assert voice["state_topic"] == "xiaozhi/events/demo_kitchen"
    assert voice["event_types"] == list(DEVICE_EVENT_TYPES)
    assert EventType.VOICE_COMMAND.value in voice["event_types"]
    assert EventType.DEVICE_CONNECTED.value not in voice["event_types"]  # not on this topic


def test_unique_ids_survive_a_rename(registry: Registry, kitchen: DeviceRecord) -> None:
    before = device_configs(kitchen, topics=TOPICS)
    registry.rename("demo_kitchen", "Cooking corner")
    after = device_configs(kitchen, topics=TOPICS)
    assert [t for t, _ in before] == [t for t, _ in after]
    assert [p["unique_id"] for _, p in before] == [p["unique_id"] for _, p in after]
    assert after[0][1]["device"]["name"] == "Cooking corner"


def test_learnt_device_defaults_and_other_prefix() -> None:
    record = DeviceRecord("aabbccddeeff", "aabbccddeeff")
    configs = device_configs(
        record, topics=TopicTree(base="site1/xiaozhi", discovery_prefix="ha"), origin_version="9"
    )
    topic, payload = configs[0]
    assert topic == "ha/binary_sensor/xiaozhi_aabbccddeeff/status/config"
    assert payload["device"] == {
        "identifiers": ["xiaozhi_aabbccddeeff"],
        "name": "aabbccddeeff",
        "manufacturer": "xiaozhi",
        "model": "ESP32-S3 voice",
    }
    assert payload["origin"] == {"name": "xiaozhi-hub", "sw_version": "9"}
    assert payload["state_topic"] == "site1/xiaozhi/status/aabbccddeeff"
    assert len(configs) == 4  # status, volume, restart, voice: no telemetry reported yet
    assert node_id("aabbccddeeff") == "xiaozhi_aabbccddeeff"


def test_clearing_stale_configs(kitchen: DeviceRecord) -> None:
    current = [t for t, _ in device_configs(kitchen, topics=TOPICS)]
    retained = [
        *current,
        "homeassistant/sensor/xiaozhi_gone/temperature/config",
        "homeassistant/sensor/xiaozhi_demo_kitchen/pressure/config",
        "homeassistant/light/0x00158d0001/light/config",  # zigbee2mqtt's, not ours
        "homeassistant/sensor/no_node/config",
        "homeassistant/status",
        "not/a/discovery/topic",
    ]
    stale = stale_topics(retained, current, topics=TOPICS)
    assert stale == {
        "homeassistant/sensor/xiaozhi_gone/temperature/config",
        "homeassistant/sensor/xiaozhi_demo_kitchen/pressure/config",
    }
    assert clear_payloads(stale) == [
        ("homeassistant/sensor/xiaozhi_demo_kitchen/pressure/config", b""),
        ("homeassistant/sensor/xiaozhi_gone/temperature/config", b""),
    ]
    assert is_own_topic("homeassistant/sensor/xiaozhi_x/t/config", topics=TOPICS)
    assert not is_own_topic("homeassistant/sensor/+/t/config", topics=TOPICS)


def test_units_in_home_assistants_spelling(registry: Registry) -> None:
    for sensor_type, value, unit in [
        ("temperature", 21.5, "celsius"),
        ("humidity", 40, "percent"),
        ("audio_level", 51.2, "db"),
        ("pressure", 1013, "furlongs"),  # not a pressure unit HA knows: no device class
        ("co2", 400, " PPM "),
        ("rain", 3, "mm"),  # no class of ours: the unit as sent
    ]:
        registry.apply_sensor(
            SensorPayload(sensor_type=sensor_type, value=value, unit=unit, device_id="aa11"),
            now=1.0,
        )
    record = registry.device("aa11")
    assert record is not None
    configs = configs_by_object(record)
    found = {
        key: (configs[key][1].get("device_class"), configs[key][1].get("unit_of_measurement"))
        for key in ("temperature", "humidity", "audio_level", "pressure", "co2", "rain")
    }
    assert found == {
        "temperature": ("temperature", "°C"),
        "humidity": ("humidity", "%"),
        "audio_level": ("sound_pressure", "dB"),
        "pressure": (None, "furlongs"),
        "co2": ("carbon_dioxide", "ppm"),
        "rain": (None, "mm"),
    }


def test_telemetry_entities_only_once_reported(registry: Registry) -> None:
    """A WebSocket device's status (from its edge) has no uptime or heap: HA gets no entity
    that would stay "unknown" forever; the first status that has one brings it."""
    change = registry.apply_status(
        StatusPayload(status=DeviceStatus.CONNECTED, device_id="ws1", transport="websocket"),
        now=1.0,
    )
    assert change.discovery
    record = registry.device("ws1")
    assert record is not None
    assert not set(configs_by_object(record)) & {"uptime", "wifi_signal", "free_heap"}
    again = registry.apply_status(
        StatusPayload(status=DeviceStatus.CONNECTED, device_id="ws1", transport="websocket"),
        now=2.0,
    )
    assert not again.discovery
    later = registry.apply_status(
        StatusPayload.model_validate(
            {"status": "connected", "device_id": "ws1", "uptime": 60, "wifi_signal": -50}
        ),
        now=3.0,
    )
    assert later.discovery
    assert {"uptime", "wifi_signal"} <= set(configs_by_object(record))
    assert not set(configs_by_object(record)) & {"free_heap", "memory_usage", "cpu_usage"}
