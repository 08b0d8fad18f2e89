"""The server side of the firmware's MQTT connection, fed literal bytes (no socket): what the
firmware sends is served, anything else refused with a reason the operator can read."""

from __future__ import annotations

import pytest

from xiaozhi.device_mqtt import (
    Closed,
    Connected,
    DeviceMqttProtocol,
    LinkState,
    Message,
    Pinged,
    Subscribed,
)
from xiaozhi.errors import MalformedPacket, PayloadTooLarge, UnsupportedPacket
from xiaozhi.mqtt_packets import (
    ConnackCode,
    Connect,
    PacketType,
    encode_connect,
    encode_packet,
    encode_publish,
)

CONNECT = encode_connect("GID@@@aa_bb@@@u", username="dXNlcg==", password="token")


def _open() -> DeviceMqttProtocol:
    link = DeviceMqttProtocol(max_packet_bytes=1024)
    [event] = link.receive_data(CONNECT)
    assert event == Connected(Connect("GID@@@aa_bb@@@u", "dXNlcg==", "token", 240))
    assert link.data_to_send() == b""  # nothing until the caller decides
    link.accept()
    assert link.data_to_send() == bytes.fromhex("20020000")
    return link


def test_the_firmwares_session_byte_by_byte() -> None:
    link = _open()
    hello = encode_publish("device-server", b'{"type":"hello"}')
    ping = encode_packet(PacketType.PINGREQ)
    # Two packets and half of a third in one read; the rest in the next.
    events = link.receive_data(hello + ping + hello[:5])
    assert events == [Message("device-server", b'{"type":"hello"}'), Pinged()]
    assert link.data_to_send() == bytes.fromhex("d000")
    assert link.receive_data(hello[5:]) == [Message("device-server", b'{"type":"hello"}')]
    link.publish("devices/p2p/aa_bb", b"{}")
    assert link.data_to_send() == encode_publish("devices/p2p/aa_bb", b"{}")
    assert link.receive_data(encode_packet(PacketType.DISCONNECT)) == [Closed("disconnect")]
    assert link.state is LinkState.CLOSED
    assert link.receive_data(hello) == []
    link.publish("devices/p2p/aa_bb", b"{}")  # nobody to push to any more
    assert link.data_to_send() == b""


def test_a_subscribe_gets_a_failure_suback_and_the_link_stays() -> None:
    link = _open()
    subscribe = encode_packet(PacketType.SUBSCRIBE, bytes.fromhex("000500047465737400"), 2)
    assert link.receive_data(subscribe) == [Subscribed(("test",))]
    assert link.data_to_send() == bytes.fromhex("9003000580")
    assert link.state is LinkState.OPEN


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode_packet(PacketType.PUBLISH, bytes.fromhex("0001740001") + b"{}", 2), "QoS 1"),
        (encode_packet(PacketType.UNSUBSCRIBE, bytes.fromhex("000100017400"), 2), "not a broker"),
        (encode_packet(PacketType.PUBACK, bytes.fromhex("0001")), "not a broker"),
        (CONNECT, "not a broker"),  # a second CONNECT
        (encode_packet(15), "packet type 15"),
    ],
)
def test_what_a_broker_would_serve_is_refused(data: bytes, reason: str) -> None:
    link = _open()
    [event] = link.receive_data(data)
    assert isinstance(event, Closed)
    assert isinstance(event.error, UnsupportedPacket)
    assert reason in event.reason
    assert link.state is LinkState.CLOSED


def test_refusals_before_the_connection_is_open() -> None:
    link = DeviceMqttProtocol(max_packet_bytes=1024)
    [event] = link.receive_data(encode_packet(PacketType.PINGREQ))
    assert isinstance(event, Closed)
    assert "must be CONNECT" in event.reason

    # MQTT 3.1.1 §3.1.4: a client need not wait for CONNACK; what follows waits for accept().
    link = DeviceMqttProtocol(max_packet_bytes=1024)
    assert link.receive_data(CONNECT + encode_packet(PacketType.PINGREQ)) == [
        Connected(Connect("GID@@@aa_bb@@@u", "dXNlcg==", "token", 240))
    ]
    assert link.receive_data(b"") == []  # still undecided
    link.accept()
    assert link.receive_data(b"") == [Pinged()]
    assert link.data_to_send() == bytes.fromhex("20020000 d000".replace(" ", ""))

    link = DeviceMqttProtocol(max_packet_bytes=1024)
    link.receive_data(CONNECT)
    link.refuse(ConnackCode.BAD_USERNAME_OR_PASSWORD)
    assert link.data_to_send() == bytes.fromhex("20020004")
    assert link.state is LinkState.CLOSED
    with pytest.raises(RuntimeError, match="accept"):
        link.accept()
    with pytest.raises(RuntimeError, match="refuse"):
        link.refuse(ConnackCode.NOT_AUTHORIZED)


def test_mqtt_3_1_is_answered_with_connack_1() -> None:
    link = DeviceMqttProtocol(max_packet_bytes=1024)
    body = bytes.fromhex("00064d5149736470 03 02 003c 0001 63".replace(" ", ""))
    [event] = link.receive_data(encode_packet(PacketType.CONNECT, body))
    assert isinstance(event, Closed)
    assert "unsupported version" in event.reason
    assert link.data_to_send() == bytes.fromhex("20020001")


def test_oversized_and_malformed_packets_close() -> None:
    link = _open()
    [event] = link.receive_data(encode_publish("t", bytes(2000))[:4])
    assert isinstance(event, Closed)
    assert isinstance(event.error, PayloadTooLarge)
    link = _open()
    [event] = link.receive_data(bytes.fromhex("30ffffffff01"))
    assert isinstance(event, Closed)
    assert isinstance(event.error, MalformedPacket)
