"""The firmware's UDP audio datagram (firmware reference §2.4) against literal bytes, and the
receive rules a device relies on: replays and late packets dropped, gaps accepted, noise from
a wrong key refused before it reaches the recogniser."""

from __future__ import annotations

import pytest

from xiaozhi.errors import (
    LengthMismatch,
    PayloadTooLarge,
    StaleSequence,
    TruncatedFrame,
    Undecryptable,
    UnknownFrameType,
)
from xiaozhi.udp_audio import (
    AudioChannel,
    UdpHeader,
    aes_ctr,
    decode_datagram,
    encode_datagram,
    make_nonce,
    opus_duration_ms,
)

KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SILK_60MS = bytes.fromhex("58") + bytes(range(1, 40))  # TOC config 11 (SILK WB 60 ms), code 0
PEER = ("192.0.2.7", 40000)


def test_aes_ctr_matches_nist_sp800_38a_f51() -> None:
    iv = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert aes_ctr(KEY, iv, plain).hex() == "874d6191b620e3261bef6864990db6ce"
    assert aes_ctr(KEY, iv, bytes.fromhex("874d6191b620e3261bef6864990db6ce")) == plain
    with pytest.raises(ValueError, match="16-byte"):
        aes_ctr(KEY[:8], iv, plain)


def test_the_nonce_is_a_header_with_the_ssrc_and_zeros() -> None:
    assert make_nonce(0x01020304).hex() == "01000000010203040000000000000000"
    header = UdpHeader(ssrc=7, timestamp=0x10, sequence=0x20, payload_len=3, flags=1)
    assert header.encode().hex() == "01010003000000070000001000000020"


def test_a_datagram_is_the_header_in_clear_then_the_payload_encrypted_under_it() -> None:
    nonce = make_nonce(0xA1B2C3D4)
    data = encode_datagram(KEY, nonce, b"\x58abc", timestamp=960, sequence=1)
    assert data[:16].hex() == "01000004a1b2c3d4000003c000000001"
    assert data[16:] == aes_ctr(KEY, data[:16], b"\x58abc")
    header, ciphertext = decode_datagram(data)
    assert header == UdpHeader(ssrc=0xA1B2C3D4, timestamp=960, sequence=1, payload_len=4)
    assert ciphertext == data[16:]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x01" * 15, TruncatedFrame),
        (bytes.fromhex("02000000000000010000000000000001"), UnknownFrameType),
        (bytes.fromhex("01000005000000010000000000000001") + b"abcd", LengthMismatch),
        (bytes.fromhex("01000003000000010000000000000001") + b"abcd", LengthMismatch),
    ],
)
def test_malformed_datagrams_are_refused_by_type(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_datagram(data)


def test_encoding_refuses_what_the_header_cannot_say() -> None:
    with pytest.raises(PayloadTooLarge):
        encode_datagram(KEY, make_nonce(1), bytes(70_000), timestamp=0, sequence=1)
    with pytest.raises(ValueError, match="nonce"):
        encode_datagram(KEY, b"short", b"x", timestamp=0, sequence=1)


@pytest.mark.parametrize(
    ("packet", "duration"),
    [
        (b"", None),
        (bytes([0x58]), 60.0),  # SILK 60 ms, code 0
        (bytes([0x51]), 80.0),  # SILK 40 ms, code 1: two frames
        (bytes([0xFB, 0x03]), 60.0),  # CELT 20 ms, code 3, three frames
        (bytes([0xFB]), None),  # code 3 without its frame count
        (bytes([0xFB, 0x00]), None),  # zero frames
        (bytes([0x5B, 0x03]), None),  # 3 x 60 ms > 120 ms
        (bytes([0x80]), 2.5),  # CELT NB 2.5 ms
    ],
)
def test_opus_duration_reads_the_toc_byte(packet: bytes, duration: float | None) -> None:
    assert opus_duration_ms(packet) == duration


def test_a_channel_opens_the_devices_packets_and_learns_its_address() -> None:
    channel = AudioChannel(key=KEY, ssrc=42)
    device_sequence = iter(range(1, 100))

    def send(payload: bytes = SILK_60MS) -> bytes:
        return encode_datagram(
            KEY, channel.nonce, payload, timestamp=0, sequence=next(device_sequence)
        )

    header, opus = channel.open(send(), PEER)
    assert (opus, header.sequence, channel.peer, channel.gaps) == (SILK_60MS, 1, PEER, 0)
    first_again = encode_datagram(KEY, channel.nonce, SILK_60MS, timestamp=0, sequence=1)
    with pytest.raises(StaleSequence):  # a replay is dropped and moves nothing
        channel.open(first_again, ("203.0.113.9", 1))
    assert channel.peer == PEER
    next(device_sequence)  # one packet lost in flight: a gap, accepted
    channel.open(send(), ("192.0.2.7", 40001))  # the NAT mapping moved: follow it
    assert (channel.remote_sequence, channel.gaps, channel.peer) == (3, 1, ("192.0.2.7", 40001))


def test_a_channel_refuses_another_ssrc_and_a_wrong_key() -> None:
    channel = AudioChannel(key=KEY, ssrc=42)
    other = encode_datagram(KEY, make_nonce(43), SILK_60MS, timestamp=0, sequence=1)
    with pytest.raises(Undecryptable, match="ssrc"):
        channel.open(other, PEER)
    wrong_key = encode_datagram(bytes(16), channel.nonce, SILK_60MS, timestamp=0, sequence=1)
    with pytest.raises(Undecryptable, match="expected 60 ms"):
        channel.open(wrong_key, PEER)
    assert (channel.peer, channel.remote_sequence) == (None, 0)  # nothing learnt from them
    with pytest.raises(Undecryptable, match="no valid Opus header"):
        channel.open(encode_datagram(KEY, channel.nonce, b"", timestamp=0, sequence=1), PEER)


def test_a_channel_seals_downlink_with_sequences_from_one() -> None:
    channel = AudioChannel(key=KEY, ssrc=42, frame_duration_ms=60)
    first, second = channel.seal(b"\x58a", 0), channel.seal(b"\x58b", 60)
    assert [decode_datagram(d)[0].sequence for d in (first, second)] == [1, 2]
    assert aes_ctr(KEY, second[:16], second[16:]) == b"\x58b"
    with pytest.raises(ValueError, match="16 bytes"):
        AudioChannel(key=b"short", ssrc=1)
