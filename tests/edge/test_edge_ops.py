"""The edge as an operator relies on it: a device is commandable the moment it is greeted,
its life is in the logs, a dead worker comes back. Real WebSockets, real Mosquitto."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import StartEdge
from tests.edge.devices import Device
from tests.support import Recorder, latency_proxy
from xiaozhi.payloads import CommandPayload
from xiaozhi.topics import TopicTree
from xiaozhi_cli.broker import ManagedMosquitto

pytestmark = pytest.mark.integration  # a real Mosquitto

TOPICS = TopicTree()
_ROUNDS = 20
_BROKER_LATENCY = 0.02  # seconds each way between the edge and its broker (another host)


def _new_mac() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


async def test_a_command_sent_the_moment_the_device_is_greeted_reaches_it(
    start_edge: StartEdge, integrator: Recorder, mosquitto: ManagedMosquitto
) -> None:
    """The edge answers a hello only once the broker has acknowledged the device's command
    subscription: an integrator that publishes as soon as the device holds the server hello
    (QoS 1, acknowledged by the broker) reaches it, every round, even with the broker a few
    milliseconds away from the edge (before, the hello won that race and the command was
    acknowledged by the broker and delivered to nobody)."""
    async with latency_proxy(mosquitto.port, _BROKER_LATENCY) as port:
        edge = await start_edge(mqtt_url=f"mqtt://127.0.0.1:{port}")
        for round_number in range(_ROUNDS):
            await _greet_and_command(edge.port, integrator, round_number)
        await edge.stop()  # while its broker is still reachable


async def _greet_and_command(port: int, integrator: Recorder, round_number: int) -> None:
    mac = _new_mac()
    device = await Device.connect(port, device_id=mac)
    await device.hello()
    message = f"round {round_number}"
    command = CommandPayload(
        command="alert",
        parameters={"status": "info", "message": message},
        message_id=uuid.uuid4().hex,
    )
    await integrator.publish(TOPICS.command(mac.replace(":", "")), command.to_wire())
    try:
        alert = await device.expect("alert", within=5)
    except TimeoutError:
        raise AssertionError(f"round {round_number}: the command reached nobody") from None
    assert alert["message"] == message
    await device.close()
