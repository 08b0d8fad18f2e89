"""Contracts between parts that never import each other: what one publishes, the other accepts."""

from __future__ import annotations

import orjson

from tests.edge.helpers import WALL, ready_session, tone_packets
from xiaozhi.binary import encode_opus
from xiaozhi.topics import TopicTree
from xiaozhi_edge.outputs import Publish
from xiaozhi_hub.discovery import DEVICE_EVENT_TYPES

TOPICS = TopicTree()


def test_every_event_the_edge_publishes_for_a_device_is_one_home_assistant_accepts() -> None:
    """HA's event entity drops (with a warning) a type missing from its `event_types`."""
    session = ready_session()
    device_topic = TOPICS.device_events(session.device_id or "")
    outputs = []
    steps = [
        '{"type":"listen","state":"detect","text":"你好小智"}',  # wake word
        '{"type":"listen","state":"start","mode":"manual"}',
        *[encode_opus(p, 1) for p in tone_packets(600)],
        '{"type":"listen","state":"stop"}',  # utterance
        '{"type":"listen","state":"detect","text":"turn on the light"}',  # voice command
        '{"type":"abort"}',
        '{"type":"mcp","payload":{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2024-11-05"}}}',
        '{"type":"mcp","payload":{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"self.x"}]}}}',
        "{not json",  # error
    ]
    for step in steps:
        if isinstance(step, bytes):
            outputs += session.on_binary(step, 1.0, WALL)
        else:
            outputs += session.on_text(step, 1.0, WALL)
    published = {
        orjson.loads(o.payload)["event_type"]
        for o in outputs
        if isinstance(o, Publish) and o.topic == device_topic
    }
    assert {"wake_word", "utterance", "voice_command", "abort", "mcp_tools"} <= published
    assert published <= set(DEVICE_EVENT_TYPES), published - set(DEVICE_EVENT_TYPES)
