"""The MQTT topic tree (xiaozhi.topics): design.md §5, seed 003 "Topic Structure"."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from xiaozhi.errors import InvalidTopic
from xiaozhi.topics import (
    DEVICE_ID_PATTERN,
    MAX_ID_LENGTH,
    RESERVED_DEVICE_IDS,
    ParsedTopic,
    PublishOptions,
    QoS,
    TopicKind,
    TopicTree,
    normalize_device_id,
    publish_options,
    validate_device_id,
    validate_id,
)

T = TopicTree()
K = TopicKind

# (built topic, expected string, expected parse)
GOLDEN = [
    (
        T.command("esp32_device_001"),
        "xiaozhi/commands/esp32_device_001",
        ParsedTopic(K.COMMAND, device_id="esp32_device_001"),
    ),
    (
        T.group_command("downstairs"),
        "xiaozhi/commands/group/downstairs",
        ParsedTopic(K.GROUP_COMMAND, group_id="downstairs"),
    ),
    (T.broadcast_command(), "xiaozhi/commands/broadcast", ParsedTopic(K.BROADCAST_COMMAND)),
    (
        T.status("aabbccddeeff"),
        "xiaozhi/status/aabbccddeeff",
        ParsedTopic(K.STATUS, device_id="aabbccddeeff"),
    ),
    (
        T.group_status("kids"),
        "xiaozhi/status/group/kids",
        ParsedTopic(K.GROUP_STATUS, group_id="kids"),
    ),
    (T.broadcast_status(), "xiaozhi/status/broadcast", ParsedTopic(K.BROADCAST_STATUS)),
    (
        T.sensor("esp32_device_001", "temperature"),
        "xiaozhi/sensors/esp32_device_001/temperature",
        ParsedTopic(K.SENSOR, device_id="esp32_device_001", sensor_type="temperature"),
    ),
    (
        T.sensor("d1", "audio_level"),
        "xiaozhi/sensors/d1/audio_level",
        ParsedTopic(K.SENSOR, device_id="d1", sensor_type="audio_level"),
    ),
    (T.device_events("d1"), "xiaozhi/events/d1", ParsedTopic(K.DEVICE_EVENTS, device_id="d1")),
    (T.utterance("d1"), "xiaozhi/utterances/d1", ParsedTopic(K.UTTERANCE, device_id="d1")),
    (
        T.utterance_start("d1"),
        "xiaozhi/utterances/d1/start",
        ParsedTopic(K.UTTERANCE_START, device_id="d1"),
    ),
    (
        T.utterance_claim("d1"),
        "xiaozhi/utterances/d1/claim",
        ParsedTopic(K.UTTERANCE_CLAIM, device_id="d1"),
    ),
    (
        T.utterance_stream("d1", "w-1"),
        "xiaozhi/utterances/d1/stream/w-1",
        ParsedTopic(K.UTTERANCE_STREAM, device_id="d1", worker_id="w-1"),
    ),
    (T.voice_command_events(), "xiaozhi/events/voice_command", ParsedTopic(K.VOICE_COMMAND_EVENTS)),
    (
        T.device_voice_command("d1"),
        "xiaozhi/events/voice_command/d1",
        ParsedTopic(K.DEVICE_VOICE_COMMAND, device_id="d1"),
    ),
    (T.device_connected(), "xiaozhi/events/device_connected", ParsedTopic(K.DEVICE_CONNECTED)),
    (
        T.device_disconnected(),
        "xiaozhi/events/device_disconnected",
        ParsedTopic(K.DEVICE_DISCONNECTED),
    ),
    (
        T.entity_state("light.living_room"),
        "xiaozhi/entities/light.living_room",
        ParsedTopic(K.ENTITY_STATE, entity_id="light.living_room"),
    ),
    (
        T.entity_set("lock.front_door"),
        "xiaozhi/entities/lock.front_door/set",
        ParsedTopic(K.ENTITY_SET, entity_id="lock.front_door"),
    ),
    (T.bridge_state(), "xiaozhi/bridge/state", ParsedTopic(K.BRIDGE_STATE)),
    (
        T.bridge_edge("edge-1"),
        "xiaozhi/bridge/edges/edge-1",
        ParsedTopic(K.BRIDGE_EDGE, edge_id="edge-1"),
    ),
    (
        T.bridge_edge_log("edge-1"),
        "xiaozhi/bridge/edges/edge-1/log",
        ParsedTopic(K.BRIDGE_EDGE_LOG, edge_id="edge-1"),
    ),
    (
        T.hub_state("hub-1"),
        "xiaozhi/bridge/hubs/hub-1/state",
        ParsedTopic(K.BRIDGE_HUB, hub_id="hub-1"),
    ),
    (T.bridge_devices(), "xiaozhi/bridge/devices", ParsedTopic(K.BRIDGE_DEVICES)),
    (T.bridge_groups(), "xiaozhi/bridge/groups", ParsedTopic(K.BRIDGE_GROUPS)),
    (T.bridge_info(), "xiaozhi/bridge/info", ParsedTopic(K.BRIDGE_INFO)),
    (
        T.bridge_request("health_check"),
        "xiaozhi/bridge/request/health_check",
        ParsedTopic(K.BRIDGE_REQUEST, path="health_check"),
    ),
    (
        T.bridge_request("group/members/add"),
        "xiaozhi/bridge/request/group/members/add",
        ParsedTopic(K.BRIDGE_REQUEST, path="group/members/add"),
    ),
    (
        T.bridge_response("device/rename"),
        "xiaozhi/bridge/response/device/rename",
        ParsedTopic(K.BRIDGE_RESPONSE, path="device/rename"),
    ),
    (
        T.discovery_config("sensor", "xiaozhi_aabbccddeeff", "temperature"),
        "homeassistant/sensor/xiaozhi_aabbccddeeff/temperature/config",
        ParsedTopic(
            K.HA_DISCOVERY,
            component="sensor",
            node_id="xiaozhi_aabbccddeeff",
            object_id="temperature",
        ),
    ),
    (
        T.discovery_config("device", None, "xiaozhi_aabbccddeeff"),
        "homeassistant/device/xiaozhi_aabbccddeeff/config",
        ParsedTopic(K.HA_DISCOVERY, component="device", object_id="xiaozhi_aabbccddeeff"),
    ),
    (
        T.discovery_config("binary_sensor", "Node-1", "Obj_2"),
        "homeassistant/binary_sensor/Node-1/Obj_2/config",
        ParsedTopic(K.HA_DISCOVERY, component="binary_sensor", node_id="Node-1", object_id="Obj_2"),
    ),
    (T.ha_status(), "homeassistant/status", ParsedTopic(K.HA_STATUS)),
    (
        T.monitor_audio("aabbccddeeff"),
        "xiaozhi/monitor/aabbccddeeff/audio",
        ParsedTopic(K.MONITOR_AUDIO, device_id="aabbccddeeff"),
    ),
    (
        T.monitor_listeners("aabbccddeeff", "edge-2"),
        "xiaozhi/monitor/aabbccddeeff/listeners/edge-2",
        ParsedTopic(K.MONITOR_LISTENERS, device_id="aabbccddeeff", edge_id="edge-2"),
    ),
]


@pytest.mark.parametrize(("built", "expected", "parsed"), GOLDEN)
def test_golden_topics_build_and_parse(built: str, expected: str, parsed: ParsedTopic) -> None:
    assert built == expected
    assert T.parse(built) == parsed


def test_every_kind_has_a_golden_topic_and_publish_options() -> None:
    assert {p.kind for _, _, p in GOLDEN} == set(TopicKind)
    for kind in TopicKind:
        options = publish_options(kind)
        assert isinstance(options, PublishOptions)
        assert options.qos in QoS


@pytest.mark.parametrize(
    ("kind", "qos", "retain"),
    [
        (K.COMMAND, 1, False),
        (K.GROUP_COMMAND, 1, False),
        (K.BROADCAST_COMMAND, 1, False),
        (K.STATUS, 1, True),
        (K.GROUP_STATUS, 1, True),
        (K.BROADCAST_STATUS, 1, True),
        (K.SENSOR, 0, True),
        (K.DEVICE_EVENTS, 1, False),
        (K.VOICE_COMMAND_EVENTS, 1, False),
        (K.DEVICE_CONNECTED, 1, False),
        (K.DEVICE_DISCONNECTED, 1, False),
        (K.UTTERANCE, 1, False),
        (K.BRIDGE_STATE, 1, True),
        (K.BRIDGE_EDGE, 1, True),
        (K.BRIDGE_EDGE_LOG, 0, False),
        (K.BRIDGE_HUB, 1, True),
        (K.BRIDGE_DEVICES, 1, True),
        (K.BRIDGE_GROUPS, 1, True),
        (K.BRIDGE_INFO, 1, True),
        (K.BRIDGE_REQUEST, 1, False),
        (K.BRIDGE_RESPONSE, 1, False),
        (K.HA_DISCOVERY, 1, True),
        (K.ENTITY_STATE, 1, True),
        (K.ENTITY_SET, 1, False),
        (K.MONITOR_AUDIO, 0, False),
        (K.MONITOR_LISTENERS, 1, True),
    ],
)
def test_publish_options_follow_design_table(kind: TopicKind, qos: int, retain: bool) -> None:
    assert publish_options(kind) == (qos, retain)


def test_commands_are_never_retained() -> None:
    for topic in (T.command("d"), T.group_command("g"), T.broadcast_command()):
        assert T.publish_options(topic).retain is False


def test_publish_options_for_a_topic_string() -> None:
    assert T.publish_options("xiaozhi/sensors/d1/temperature") == PublishOptions(QoS(0), True)
    with pytest.raises(InvalidTopic):
        T.publish_options("xiaozhi/sensors/+/temperature")


def test_subscription_filters() -> None:
    assert T.all_status() == "xiaozhi/status/+"
    assert T.all_sensors() == "xiaozhi/sensors/+/+"
    assert T.device_sensors("d1") == "xiaozhi/sensors/d1/+"
    assert T.all_events() == "xiaozhi/events/+"
    assert T.all_edges() == "xiaozhi/bridge/edges/+"
    assert T.all_edge_logs() == "xiaozhi/bridge/edges/+/log"
    assert T.all_hub_states() == "xiaozhi/bridge/hubs/+/state"
    assert T.all_utterances() == "xiaozhi/utterances/+"
    assert T.all_utterance_starts() == "xiaozhi/utterances/+/start"
    assert T.worker_streams("w-1") == "xiaozhi/utterances/+/stream/w-1"
    assert T.all_monitor_listeners() == "xiaozhi/monitor/+/listeners/+"
    assert T.all_entity_sets() == "xiaozhi/entities/+/set"
    assert T.all_device_voice_commands() == "xiaozhi/events/voice_command/+"
    assert T.bridge_requests() == "xiaozhi/bridge/request/#"
    assert T.all_commands_for("esp32_device_001") == [
        "xiaozhi/commands/esp32_device_001",
        "xiaozhi/commands/broadcast",
    ]
    assert T.shared_voice_commands("hub") == "$share/hub/xiaozhi/events/voice_command"
    assert T.shared_voice_commands("hub-2") == "$share/hub-2/xiaozhi/events/voice_command"
    with pytest.raises(InvalidTopic):
        T.shared_voice_commands("a/b")
    assert T.all_group_commands() == "xiaozhi/commands/group/+"
    assert T.shared("hub", T.broadcast_command()) == "$share/hub/xiaozhi/commands/broadcast"
    assert T.hub_probe("hub-1") == "xiaozhi/bridge/hubs/hub-1/probe"
    with pytest.raises(InvalidTopic):
        T.hub_probe("hub/1")
    assert T.all_discovery_configs() == "homeassistant/+/+/+/config"


def test_other_base_and_prefix() -> None:
    tree = TopicTree(base="site1/xiaozhi", discovery_prefix="ha")
    assert tree.command("d1") == "site1/xiaozhi/commands/d1"
    assert tree.parse("site1/xiaozhi/status/d1") == ParsedTopic(K.STATUS, device_id="d1")
    assert tree.discovery_config("sensor", None, "x") == "ha/sensor/x/config"
    assert tree.ha_status() == "ha/status"
    assert tree.parse("ha/status") == ParsedTopic(K.HA_STATUS)
    assert tree.discovery_config("sensor", None, "x", prefix="homeassistant") == (
        "homeassistant/sensor/x/config"
    )
    assert tree.ha_status(prefix="homeassistant") == "homeassistant/status"
    with pytest.raises(InvalidTopic):
        tree.parse("xiaozhi/status/d1")
    with pytest.raises(InvalidTopic):
        tree.ha_status(prefix="")
    with pytest.raises(InvalidTopic):
        tree.discovery_config("sensor", None, "x", prefix="a/b")


@pytest.mark.parametrize(
    ("base", "prefix"),
    [
        ("", "homeassistant"),
        ("xiaozhi/", "homeassistant"),
        ("/xiaozhi", "homeassistant"),
        ("xia+ozhi", "homeassistant"),
        ("xiaozhi/#", "homeassistant"),
        ("xiao\x00zhi", "homeassistant"),
        ("xiaozhi", ""),
        ("xiaozhi", "home/assistant"),
        ("homeassistant", "homeassistant"),
        ("homeassistant/xiaozhi", "homeassistant"),
    ],
)
def test_bad_tree_settings(base: str, prefix: str) -> None:
    with pytest.raises(InvalidTopic):
        TopicTree(base=base, discovery_prefix=prefix)


def test_tree_is_frozen() -> None:
    with pytest.raises(AttributeError):
        T.base = "other"  # type: ignore[misc]


# -- ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("AA:BB:CC:DD:EE:FF", "aabbccddeeff"),
        ("aa:bb:cc:dd:ee:ff", "aabbccddeeff"),
        ("aa-bb-cc-dd-ee-ff", "aabbccddeeff"),
        ("AA-BB-CC-DD-EE-0F", "aabbccddee0f"),
        ("aabbccddeeff", "aabbccddeeff"),
        ("ESP32_Device_001", "esp32_device_001"),
        ("web_client_001", "web_client_001"),
        ("aa_bb_cc_dd_ee_ff", "aa_bb_cc_dd_ee_ff"),
        ("x" * MAX_ID_LENGTH, "x" * MAX_ID_LENGTH),
    ],
)
def test_normalize_device_id(raw: str, normalized: str) -> None:
    assert normalize_device_id(raw) == normalized
    assert normalize_device_id(normalized) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "aa:bb:cc:dd:ee",  # five octets: not a MAC, and ':' is not allowed
        "aa:bb-cc:dd:ee:ff",  # mixed separators
        "aa:bb:cc:dd:ee:fg",
        "a/b",
        "a+b",
        "a#",
        "a b",
        " aabbccddeeff",
        "aabbccddeeff\n",
        "dévice",
        "\u212aitchen",  # KELVIN SIGN: lower-cases to "kitchen", another device's id
        "\u0130d",  # LATIN CAPITAL I WITH DOT: lower-cases to two characters
        "x" * (MAX_ID_LENGTH + 1),
        "GROUP",
        "Broadcast",
        "voice_command",
        "$sys",
    ],
)
def test_normalize_device_id_refuses(raw: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        normalize_device_id(raw)
    assert info.value.value in (raw, raw.lower())
    assert repr(info.value.value) in str(info.value)


def test_normalize_device_id_refuses_non_strings() -> None:
    with pytest.raises(InvalidTopic, match="expected a string"):
        normalize_device_id(123)  # type: ignore[arg-type]


def test_validate_device_id_message_quotes_value_and_form() -> None:
    with pytest.raises(InvalidTopic) as info:
        validate_device_id("AA:BB:CC:DD:EE:FF")
    text = str(info.value)
    assert "'AA:BB:CC:DD:EE:FF'" in text
    assert "a-z, 0-9, '_' or '-'" in text
    assert "normalize_device_id" in text
    assert info.value.value == "AA:BB:CC:DD:EE:FF"
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidTopic):
        validate_device_id(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("reserved", sorted(RESERVED_DEVICE_IDS))
def test_reserved_device_ids(reserved: str) -> None:
    with pytest.raises(InvalidTopic, match="reserved"):
        validate_device_id(reserved)
    for build in (T.command, T.status, T.device_events, T.device_sensors):
        with pytest.raises(InvalidTopic, match="reserved"):
            build(reserved)
    # ...but they are fine as group, edge or sensor ids
    assert T.group_command(reserved).endswith("/group/" + reserved)
    assert T.bridge_edge(reserved).endswith("/" + reserved)


def test_validate_id() -> None:
    assert validate_id("kitchen") == "kitchen"
    with pytest.raises(InvalidTopic, match="invalid group id 'Kitchen'"):
        validate_id("Kitchen", what="group id")
    with pytest.raises(InvalidTopic):
        validate_id(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: T.command("a/b"),
        lambda: T.status("+"),
        lambda: T.sensor("d1", "Temp"),
        lambda: T.sensor("d/1", "temp"),
        lambda: T.group_command("#"),
        lambda: T.group_status(""),
        lambda: T.bridge_edge("edge 1"),
        lambda: T.device_events("broadcast"),
        lambda: T.bridge_request(""),
        lambda: T.bridge_request("device//rename"),
        lambda: T.bridge_request("/device"),
        lambda: T.bridge_request("device/"),
        lambda: T.bridge_response("device/#"),
        lambda: T.bridge_response("a/" * 200),
        lambda: T.bridge_request(None),
        lambda: T.discovery_config("Sensor", None, "x"),
        lambda: T.discovery_config("sensor", None, "x/y"),
        lambda: T.discovery_config("sensor", "n+", "x"),
        lambda: T.discovery_config("sensor", None, "x" * 300),
        lambda: T.entity_state("light"),
        lambda: T.entity_state("Light.x"),
        lambda: T.entity_set("light.a/b"),
        lambda: T.entity_set(None),
    ],
)
def test_builders_refuse_bad_ids(build: object) -> None:
    with pytest.raises(InvalidTopic):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "xiaozhi",
        "xiaozhi/",
        "xiaozhi/commands",
        "xiaozhi/commands/group",  # a group command without a group
        "xiaozhi/commands/group/a/b",
        "xiaozhi/commands/d1/extra",
        "xiaozhi/commands/+",
        "xiaozhi/status/#",
        "xiaozhi/status/AA:BB",
        "xiaozhi/status/group",
        "xiaozhi/sensors/d1",
        "xiaozhi/sensors/d1/temp/x",
        "xiaozhi/sensors/d1/Temp",
        "xiaozhi/events",
        "xiaozhi/events/d1/x",
        "xiaozhi/bridge",
        "xiaozhi/bridge/state/x",
        "xiaozhi/bridge/edges",
        "xiaozhi/bridge/request",
        "xiaozhi/bridge/request/",
        "xiaozhi/bridge/response/a//b",
        "xiaozhi/unknown/d1",
        "xiaozhi/entities",
        "xiaozhi/entities/light",
        "xiaozhi/entities/light.x/get",
        "xiaozhi/entities/light.x/set/more",
        "xiaozhi//commands/d1",
        "other/commands/d1",
        "xiaozhi2/commands/d1",
        "$share/hub/xiaozhi/events/voice_command",
        "homeassistant",
        "homeassistant/sensor/x",
        "homeassistant/sensor/x/state",
        "homeassistant/Sensor/x/config",
        "homeassistant/sensor/a/b/c/config",
        "homeassistant/sensor/x y/config",
        "homeassistant/sensor/n/x y/config",
    ],
)
def test_parse_refuses_topics_outside_the_tree(topic: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        T.parse(topic)
    assert info.value.value == topic


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(InvalidTopic):
        T.parse(None)  # type: ignore[arg-type]


# -- property tests ----------------------------------------------------------------------

ID_RE = re.compile(DEVICE_ID_PATTERN)
ids = st.from_regex(rf"{DEVICE_ID_PATTERN}", fullmatch=True).filter(
    lambda s: len(s) <= MAX_ID_LENGTH
)
device_ids = ids.filter(lambda s: s not in RESERVED_DEVICE_IDS)
paths = st.lists(ids, min_size=1, max_size=4).map("/".join).filter(lambda p: len(p) <= 256)
bases = st.lists(
    st.from_regex(r"[A-Za-z0-9_$-]{1,10}", fullmatch=True), min_size=1, max_size=3
).map("/".join)


@given(bases, device_ids, st.tuples(ids, ids, ids), paths)
def test_build_then_parse_gives_the_ids_back(
    base: str, device: str, other_ids: tuple[str, str, str], path: str
) -> None:
    group, sensor, edge = other_ids
    assume(base.split("/", 1)[0] != "homeassistant")
    tree = TopicTree(base=base)
    cases = {
        tree.command(device): ParsedTopic(K.COMMAND, device_id=device),
        tree.status(device): ParsedTopic(K.STATUS, device_id=device),
        tree.device_events(device): ParsedTopic(K.DEVICE_EVENTS, device_id=device),
        tree.utterance(device): ParsedTopic(K.UTTERANCE, device_id=device),
        tree.sensor(device, sensor): ParsedTopic(K.SENSOR, device_id=device, sensor_type=sensor),
        tree.group_command(group): ParsedTopic(K.GROUP_COMMAND, group_id=group),
        tree.group_status(group): ParsedTopic(K.GROUP_STATUS, group_id=group),
        tree.bridge_edge(edge): ParsedTopic(K.BRIDGE_EDGE, edge_id=edge),
        tree.bridge_edge_log(edge): ParsedTopic(K.BRIDGE_EDGE_LOG, edge_id=edge),
        tree.bridge_request(path): ParsedTopic(K.BRIDGE_REQUEST, path=path),
        tree.bridge_response(path): ParsedTopic(K.BRIDGE_RESPONSE, path=path),
        tree.discovery_config("sensor", device, sensor): ParsedTopic(
            K.HA_DISCOVERY, component="sensor", node_id=device, object_id=sensor
        ),
    }
    for topic, expected in cases.items():
        assert tree.parse(topic) == expected


@given(st.text(max_size=80))
def test_strings_outside_the_grammar_are_refused(text: str) -> None:
    valid = len(text) <= MAX_ID_LENGTH and ID_RE.fullmatch(text) is not None
    if valid and text not in RESERVED_DEVICE_IDS:
        assert validate_device_id(text) == text
        assert T.parse(T.command(text)).device_id == text
        return
    with pytest.raises(InvalidTopic):
        validate_device_id(text)
    with pytest.raises(InvalidTopic):
        T.command(text)
    with pytest.raises(InvalidTopic):
        T.sensor("d1", text) if not valid else T.status(text)


@given(st.text(max_size=80))
def test_normalized_ids_are_valid_and_stable(text: str) -> None:
    try:
        normalized = normalize_device_id(text)
    except InvalidTopic:
        return
    assert validate_device_id(normalized) == normalized
    assert normalize_device_id(normalized) == normalized
    assert not set(normalized) & set("/+# \t\n")


@given(st.text(max_size=60))
def test_parse_only_raises_invalid_topic(topic: str) -> None:
    try:
        parsed = T.parse(topic)
    except InvalidTopic:
        return
    assert isinstance(parsed.kind, TopicKind)


@given(
    st.lists(st.integers(0, 255), min_size=6, max_size=6),
    st.sampled_from([":", "-"]),
    st.booleans(),
)
def test_any_mac_normalizes_to_twelve_hex_digits(octets: list[int], sep: str, upper: bool) -> None:
    mac = sep.join(f"{o:02x}" for o in octets)
    if upper:
        mac = mac.upper()
    assert normalize_device_id(mac) == "".join(f"{o:02x}" for o in octets)
