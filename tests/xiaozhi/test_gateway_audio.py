"""The xiaozhi-mqtt-gateway's 16-byte audio header: golden bytes from both upstream ends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xiaozhi.binary import decode_frame
from xiaozhi.errors import LengthMismatch, PayloadTooLarge, TruncatedFrame, VersionMismatch
from xiaozhi.gateway_audio import (
    GatewayAudio,
    decode_gateway_audio,
    encode_gateway_downlink,
    encode_gateway_uplink,
    is_gateway_query,
)

OPUS = bytes(range(1, 11))  # 10 bytes

# app.js WebSocketBridge.sendAudio: Buffer.alloc(16 + n); writeUInt32BE(timestamp, 8);
# writeUInt32BE(n, 12); set(opus, 16). Timestamp 0x01020304.
UPLINK = bytes.fromhex("0000000000000000010203040000000a") + OPUS

# sendAudioHandle._send_to_mqtt_gateway: type 1 @0, len u16 @2, sequence @4, timestamp @8,
# opus length @12. Sequence 7, timestamp 60.
DOWNLINK = bytes.fromhex("0100000a000000070000003c0000000a") + OPUS


def test_uplink_is_byte_for_byte_what_the_gateway_sends() -> None:
    assert encode_gateway_uplink(OPUS, timestamp_ms=0x01020304) == UPLINK
    assert decode_gateway_audio(UPLINK, max_payload_bytes=100) == GatewayAudio(OPUS, 0x01020304)


def test_downlink_is_byte_for_byte_what_the_xinnan_server_sends() -> None:
    assert encode_gateway_downlink(OPUS, sequence=7, timestamp_ms=60) == DOWNLINK
    # What the gateway reads of it: the timestamp @8 and opus[16 : 16 + len@12].
    assert int.from_bytes(DOWNLINK[8:12], "big") == 60
    assert DOWNLINK[16 : 16 + int.from_bytes(DOWNLINK[12:16], "big")] == OPUS
    assert decode_gateway_audio(DOWNLINK, max_payload_bytes=100) == GatewayAudio(OPUS, 60, 7)


def test_the_v2_decoder_refuses_it_which_is_why_it_has_its_own() -> None:
    with pytest.raises(VersionMismatch):
        decode_frame(UPLINK, 2)


@pytest.mark.parametrize("data", [b"", UPLINK[:16], UPLINK[:5]])
def test_truncated_frames_are_refused(data: bytes) -> None:
    with pytest.raises(TruncatedFrame):
        decode_gateway_audio(data, max_payload_bytes=100)


def test_a_length_that_disagrees_with_the_bytes_is_refused() -> None:
    with pytest.raises(LengthMismatch):
        decode_gateway_audio(UPLINK + b"\x00", max_payload_bytes=100)
    with pytest.raises(LengthMismatch):
        decode_gateway_audio(UPLINK[:-1], max_payload_bytes=100)


def test_a_hostile_length_is_refused_before_slicing() -> None:
    hostile = bytes(12) + (0xFFFFFFFF).to_bytes(4, "big") + OPUS
    with pytest.raises(PayloadTooLarge):
        decode_gateway_audio(hostile, max_payload_bytes=100)


@pytest.mark.parametrize(
    ("opus", "sequence", "timestamp"),
    [(b"", 0, 0), (bytes(0x10000), 0, 0), (OPUS, -1, 0), (OPUS, 0, 1 << 32)],
)
def test_encoding_refuses_caller_misuse(opus: bytes, sequence: int, timestamp: int) -> None:
    with pytest.raises(ValueError, match=r"Opus packet|u32"):
        encode_gateway_downlink(opus, sequence=sequence, timestamp_ms=timestamp)


def test_uplink_encoding_refuses_an_empty_packet() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        encode_gateway_uplink(b"", timestamp_ms=0)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from=mqtt_gateway", True),
        ("device-id=aa&from=mqtt_gateway", True),
        ("", False),
        ("from=mqtt_gateway2", False),
        ("xfrom=mqtt_gateway", False),
    ],
)
def test_the_gateway_is_recognised_by_its_query(query: str, expected: bool) -> None:
    assert is_gateway_query(query) is expected


@given(
    opus=st.binary(min_size=1, max_size=300),
    sequence=st.integers(0, 0xFFFFFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
)
def test_round_trips(opus: bytes, sequence: int, timestamp: int) -> None:
    down = encode_gateway_downlink(opus, sequence=sequence, timestamp_ms=timestamp)
    assert decode_gateway_audio(down, max_payload_bytes=300) == GatewayAudio(
        opus, timestamp, sequence
    )
    up = encode_gateway_uplink(opus, timestamp_ms=timestamp)
    assert decode_gateway_audio(up, max_payload_bytes=300) == GatewayAudio(opus, timestamp)
