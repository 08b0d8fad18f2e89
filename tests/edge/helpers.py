"""Shared helpers for the edge's sans-I/O tests: literal inputs, real Opus, output filters."""

from __future__ import annotations

import array
import math
from typing import Any, TypeVar

import opuslib
import orjson

from tests.seed_samples import SEED_DEVICE_REGISTER
from xiaozhi.topics import TopicTree
from xiaozhi_edge.counters import EdgeCounters
from xiaozhi_edge.identity import ConnectionIdentity
from xiaozhi_edge.limits import EdgeLimits
from xiaozhi_edge.outputs import Close, Output, Publish, SendText
from xiaozhi_edge.session import DeviceSession
from xiaozhi_edge.utterances import ToneSynthesizer

T = TypeVar("T")

MAC = "AA:BB:CC:DD:EE:FF"
DEVICE_ID = "aabbccddeeff"
SESSION_ID = "sess-1"
WALL = "2026-01-01T00:00:00Z"

# The firmware's hello, as GetHelloMessage() builds it (reference §1.3).
FIRMWARE_HELLO = (
    '{"type":"hello","version":%d,"features":{"mcp":true,"glyph_push":false},'
    '"transport":"websocket","audio_params":{"format":"opus","sample_rate":16000,'
    '"channels":1,"frame_duration":%d}}'
)

# Seed 003 "Device Registration", verbatim.
SEED_REGISTER = SEED_DEVICE_REGISTER


def hello_text(version: int = 1, frame_duration: int = 60) -> str:
    return FIRMWARE_HELLO % (version, frame_duration)


def pcm_tone(freq: float, ms: int, amplitude: float = 0.3, rate: int = 16000) -> bytes:
    count = rate * ms // 1000
    peak = amplitude * 32767
    return array.array(
        "h", (int(peak * math.sin(2 * math.pi * freq * i / rate)) for i in range(count))
    ).tobytes()


def opus_packets(pcm: bytes, frame_ms: int = 60) -> list[bytes]:
    """Encode 16 kHz mono PCM as Opus packets of ``frame_ms`` with a real opuslib encoder."""
    encoder = opuslib.Encoder(16000, 1, opuslib.APPLICATION_VOIP)
    frame_bytes = 16000 * frame_ms // 1000 * 2
    pcm += bytes(-len(pcm) % frame_bytes)
    return [
        encoder.encode(pcm[i : i + frame_bytes], frame_bytes // 2)
        for i in range(0, len(pcm), frame_bytes)
    ]


def tone_packets(ms: int, frame_ms: int = 60, freq: float = 440.0) -> list[bytes]:
    return opus_packets(pcm_tone(freq, ms), frame_ms)


def silence_packets(ms: int, frame_ms: int = 60) -> list[bytes]:
    return opus_packets(bytes(16000 * ms // 1000 * 2), frame_ms)


_SYNTH = ToneSynthesizer()


def make_session(
    identity: ConnectionIdentity | None = None,
    *,
    header_version: int | None = None,
    limits: EdgeLimits | None = None,
    counters: EdgeCounters | None = None,
    now: float = 0.0,
    **kwargs: Any,
) -> DeviceSession:
    if identity is None and "no_identity" not in kwargs:
        identity = ConnectionIdentity.from_handshake(MAC, protocol_version=header_version)
    kwargs.pop("no_identity", None)
    ids = iter(f"msg-{n}" for n in range(1, 10_000))
    kwargs.setdefault("message_id_factory", lambda: next(ids))
    return DeviceSession(
        identity,
        edge_id="edge-1",
        topics=TopicTree(),
        limits=limits or EdgeLimits(),
        counters=counters if counters is not None else EdgeCounters(),
        synthesizer=kwargs.pop("synthesizer", _SYNTH),
        now=now,
        wall=WALL,
        session_id_factory=lambda: SESSION_ID,
        **kwargs,
    )


def of_type(outputs: list[Output], kind: type[T]) -> list[T]:
    return [o for o in outputs if isinstance(o, kind)]


def sent(outputs: list[Output]) -> list[dict[str, Any]]:
    """The JSON of every SendText, parsed."""
    return [orjson.loads(o.text) for o in of_type(outputs, SendText)]


def published(outputs: list[Output], topic: str | None = None) -> list[dict[str, Any]]:
    return [
        orjson.loads(p.payload)
        for p in of_type(outputs, Publish)
        if topic is None or p.topic == topic
    ]


def close_of(outputs: list[Output]) -> Close | None:
    found = of_type(outputs, Close)
    assert len(found) <= 1
    return found[0] if found else None


def error_codes(outputs: list[Output]) -> list[str]:
    return [m["data"]["error_code"] for m in sent(outputs) if m["type"] == "error"]


def ready_session(version: int = 1, frame_duration: int = 60, **kwargs: Any) -> DeviceSession:
    """A firmware session past its hello (header gives the version)."""
    session = make_session(header_version=version, **kwargs)
    session.on_text(hello_text(version, frame_duration), 0.1, WALL)
    return session


def ready_seed_session(**kwargs: Any) -> DeviceSession:
    session = make_session(no_identity=True, **kwargs)
    session.on_text(SEED_REGISTER, 0.1, WALL)
    return session
