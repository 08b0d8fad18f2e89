"""docs/topics.md stays complete, and its examples stay valid for the models they illustrate."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from xiaozhi import commands, payloads
from xiaozhi.topics import TopicKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "topics.md"

LISTED = {
    TopicKind.COMMAND: "`xiaozhi/commands/{device_id}`",
    TopicKind.GROUP_COMMAND: "`xiaozhi/commands/group/{group_id}`",
    TopicKind.BROADCAST_COMMAND: "`xiaozhi/commands/broadcast`",
    TopicKind.STATUS: "`xiaozhi/status/{device_id}`",
    TopicKind.GROUP_STATUS: "`xiaozhi/status/group/{group_id}`",
    TopicKind.BROADCAST_STATUS: "`xiaozhi/status/broadcast`",
    TopicKind.SENSOR: "`xiaozhi/sensors/{device_id}/{sensor_type}`",
    TopicKind.DEVICE_EVENTS: "`xiaozhi/events/{device_id}`",
    TopicKind.VOICE_COMMAND_EVENTS: "`xiaozhi/events/voice_command`",
    TopicKind.DEVICE_VOICE_COMMAND: "`xiaozhi/events/voice_command/{device_id}`",
    TopicKind.DEVICE_CONNECTED: "`xiaozhi/events/device_connected`",
    TopicKind.DEVICE_DISCONNECTED: "`xiaozhi/events/device_disconnected`",
    TopicKind.UTTERANCE: "`xiaozhi/utterances/{device_id}`",
    TopicKind.UTTERANCE_START: "`xiaozhi/utterances/{device_id}/start`",
    TopicKind.UTTERANCE_CLAIM: "`xiaozhi/utterances/{device_id}/claim`",
    TopicKind.UTTERANCE_STREAM: "`xiaozhi/utterances/{device_id}/stream/{worker_id}`",
    TopicKind.MONITOR_AUDIO: "`xiaozhi/monitor/{device_id}/audio`",
    TopicKind.MONITOR_LISTENERS: "`xiaozhi/monitor/{device_id}/listeners/{edge_id}`",
    TopicKind.BRIDGE_STATE: "`xiaozhi/bridge/state`",
    TopicKind.BRIDGE_EDGE: "`xiaozhi/bridge/edges/{edge_id}`",
    TopicKind.BRIDGE_EDGE_LOG: "`xiaozhi/bridge/edges/{edge_id}/log`",
    TopicKind.BRIDGE_HUB: "`xiaozhi/bridge/hubs/{hub_id}/state`",
    TopicKind.BRIDGE_DEVICES: "`xiaozhi/bridge/devices`",
    TopicKind.BRIDGE_GROUPS: "`xiaozhi/bridge/groups`",
    TopicKind.BRIDGE_INFO: "`xiaozhi/bridge/info`",
    TopicKind.BRIDGE_REQUEST: "`xiaozhi/bridge/request/{path}`",
    TopicKind.BRIDGE_RESPONSE: "`xiaozhi/bridge/response/{path}`",
    TopicKind.ENTITY_STATE: "`xiaozhi/entities/{entity_id}`",
    TopicKind.ENTITY_SET: "`xiaozhi/entities/{entity_id}/set`",
    TopicKind.HA_DISCOVERY: "`homeassistant/{component}/xiaozhi_{device_id}/{object_id}/config`",
    TopicKind.HA_STATUS: "`homeassistant/status`",
}


def test_every_topic_kind_is_in_the_reference() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert set(LISTED) == set(TopicKind)
    for kind, topic in LISTED.items():
        assert topic in text, kind


def test_every_example_is_json_and_fits_the_model_it_names() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"(?:<!-- model: (\w+) -->\n)?```json\n(.*?)\n```", text, re.S)
    assert len(blocks) > 20
    checked = 0
    for name, block in blocks:
        example = orjson.loads(block)
        if name:
            model = getattr(payloads, name, None) or getattr(commands, name)
            model.from_obj(example)
            checked += 1
            if name == "CommandPayload":
                commands.parse_parameters(payloads.CommandPayload.from_obj(example))
    assert checked >= 20
