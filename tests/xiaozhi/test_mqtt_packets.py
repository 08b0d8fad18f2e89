"""The MQTT 3.1.1 packets of the firmware's MQTT mode against literal bytes (MQTT 3.1.1
§2-3), and the hostile inputs the edge's device listener must refuse by type."""

from __future__ import annotations

import pytest

from xiaozhi.errors import MalformedPacket, PayloadTooLarge, UnsupportedVersion
from xiaozhi.mqtt_packets import (
    ConnackCode,
    Connect,
    PacketType,
    Publish,
    Subscribe,
    decode_connect,
    decode_publish,
    decode_subscribe,
    encode_connack,
    encode_connect,
    encode_packet,
    encode_pingresp,
    encode_publish,
    encode_suback,
    split_packet,
)

# CONNECT "MQTT" level 4, flags user+password+clean, keep alive 240, client "c", user "u", "p"
CONNECT = bytes.fromhex("10 13 0004 4d515454 04 c2 00f0 0001 63 0001 75 0001 70".replace(" ", ""))


def test_connect_in_both_directions() -> None:
    assert encode_connect("c", username="u", password="p") == CONNECT
    plain = bytes.fromhex("100d 0004 4d515454 04 02 003c 0001 63".replace(" ", ""))
    assert encode_connect("c", keepalive_seconds=60) == plain
    first, body, used = split_packet(CONNECT + b"\xc0", max_packet_bytes=100) or (0, b"", 0)
    assert (first >> 4, used) == (PacketType.CONNECT, len(CONNECT))
    assert decode_connect(body) == Connect("c", "u", "p", keepalive_seconds=240)


def test_a_connect_with_a_will_and_no_credentials() -> None:
    body = bytes.fromhex("00044d51545404 06 003c 0001 63 0001 74 0002 6869".replace(" ", ""))
    assert decode_connect(body) == Connect("c", None, None, keepalive_seconds=60)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (bytes.fromhex("00044d51545403020000000163"), UnsupportedVersion),  # 3.1
        (bytes.fromhex("00044d51545404030000000163"), MalformedPacket),  # reserved flag
        (bytes.fromhex("00044d51545404420000000163000170"), MalformedPacket),  # password only
        (bytes.fromhex("00044d515454040200000009"), MalformedPacket),  # client id cut short
        (bytes.fromhex("00044d5154540402000000"), MalformedPacket),  # no client id length
        (bytes.fromhex("00044d5154540482000000016300") + b"\x01\xff", MalformedPacket),  # UTF-8
    ],
)
def test_hostile_connects_are_refused_by_type(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_connect(body)


def test_publish_in_both_directions() -> None:
    packet = encode_publish("devices/p2p/aa", b'{"type":"hello"}')
    assert packet == bytes.fromhex("3020000e") + b"devices/p2p/aa" + b'{"type":"hello"}'
    first, body, _ = split_packet(packet, max_packet_bytes=100) or (0, b"", 0)
    assert decode_publish(first & 0x0F, body) == Publish("devices/p2p/aa", b'{"type":"hello"}')
    qos1 = decode_publish(0x0B, bytes.fromhex("0001 74 0007 7b7d".replace(" ", "")))
    assert (qos1.qos, qos1.dup, qos1.retain, qos1.packet_id, qos1.payload) == (
        1,
        True,
        True,
        7,
        b"{}",
    )
    with pytest.raises(MalformedPacket, match="QoS 3"):
        decode_publish(0x06, b"\x00\x01t")


def test_a_qos1_publish_carries_its_packet_id() -> None:
    packet = encode_publish("t/1", b"{}", retain=True, packet_id=0x0102)
    assert packet == bytes.fromhex("33090003 742f31 0102 7b7d".replace(" ", ""))
    first, body, _ = split_packet(packet, max_packet_bytes=100) or (0, b"", 0)
    assert decode_publish(first & 0x0F, body) == Publish(
        "t/1", b"{}", qos=1, retain=True, packet_id=0x0102
    )
    mqtt5 = encode_publish("t", b"x", mqtt5=True, packet_id=65_535)
    assert mqtt5 == bytes.fromhex("32070001 74 ffff 00 78".replace(" ", ""))
    for wrong in (0, 65_536):
        with pytest.raises(ValueError, match="packet id"):
            encode_publish("t", b"x", packet_id=wrong)


def test_subscribe_is_read_and_refused_in_protocol() -> None:
    body = bytes.fromhex("000a 0001 61 00 0001 62 01".replace(" ", ""))
    assert decode_subscribe(body) == Subscribe(packet_id=10, filters=("a", "b"))
    assert encode_suback(10, (0x80, 0x80)) == bytes.fromhex("9004000a8080")
    with pytest.raises(MalformedPacket, match="without a topic filter"):
        decode_subscribe(b"\x00\x0a")


def test_small_packets() -> None:
    assert encode_connack(ConnackCode.BAD_USERNAME_OR_PASSWORD) == bytes.fromhex("20020004")
    assert encode_connack(ConnackCode.ACCEPTED, session_present=True) == bytes.fromhex("20020100")
    assert encode_pingresp() == bytes.fromhex("d000")
    assert encode_packet(PacketType.PINGREQ) == bytes.fromhex("c000")


def test_split_packet_waits_for_whole_packets_and_checks_the_length_first() -> None:
    big = encode_publish("t", bytes(200))  # remaining length 203: two length bytes
    assert big[1:3] == bytes.fromhex("cb01")
    assert split_packet(big[:1], max_packet_bytes=1000) is None
    assert split_packet(big[:2], max_packet_bytes=1000) is None  # length still incomplete
    assert split_packet(big[:100], max_packet_bytes=1000) is None
    assert split_packet(big, max_packet_bytes=1000) == (0x30, big[3:], len(big))
    with pytest.raises(PayloadTooLarge):  # refused from the header alone
        split_packet(big[:3], max_packet_bytes=100)
    with pytest.raises(MalformedPacket, match="4 bytes"):
        split_packet(bytes.fromhex("30ffffffff01"), max_packet_bytes=1000)


@pytest.mark.parametrize(
    ("topic", "payload", "retain", "mqtt5", "packet"),
    [
        ("a/b", b"hi", False, False, b"\x30\x07\x00\x03a/bhi"),
        ("a/b", b"hi", True, False, b"\x31\x07\x00\x03a/bhi"),
        ("a/b", b"", True, False, b"\x31\x05\x00\x03a/b"),  # deletes a retained message
        ("a/b", b"hi", False, True, b"\x30\x08\x00\x03a/b\x00hi"),  # no MQTT 5 properties
        ("é", b"", False, False, b"\x30\x04\x00\x02\xc3\xa9"),  # UTF-8 length, not chars
        ("t", bytes(200), False, False, b"\x30\xcb\x01\x00\x01t" + bytes(200)),  # 2-byte length
    ],
)
def test_a_publish_packet_is_mqtt_byte_for_byte(
    topic: str, payload: bytes, retain: bool, mqtt5: bool, packet: bytes
) -> None:
    assert encode_publish(topic, payload, retain=retain, mqtt5=mqtt5) == packet


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "x" * 65_536])
def test_a_publish_packet_refuses_what_paho_refuses(topic: str) -> None:
    with pytest.raises(ValueError, match="invalid topic"):
        encode_publish(topic, b"")


def test_a_publish_packet_refuses_a_payload_past_mqtts_limit() -> None:
    with pytest.raises(ValueError, match="payload too large"):
        encode_publish("t", bytes(268_435_455))
