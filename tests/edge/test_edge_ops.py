"""The edge as an operator relies on it: a device is commandable the moment it is greeted,
its life is in the logs, a dead worker comes back. Real WebSockets, real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import structlog

from tests.conftest import StartEdge
from tests.edge.devices import Device
from tests.support import Recorder, latency_proxy
from xiaozhi.payloads import CommandPayload
from xiaozhi.topics import TopicTree
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_edge.session import DeviceSession

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


def _lines(logs: list[dict[str, Any]], event: str, device_id: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == event and line["device_id"] == device_id]


async def test_each_devices_connect_and_disconnect_are_logged_with_the_close_reason(
    start_edge: StartEdge,
) -> None:
    """An operator reading the edge's log sees each device arrive and leave, and why: the
    device said goodbye, the edge closed it (here: no hello in time), or the network."""
    edge = await start_edge(hello_timeout_seconds=0.5)
    polite_mac, silent_mac = _new_mac(), _new_mac()
    polite, silent = polite_mac.replace(":", ""), silent_mac.replace(":", "")
    with structlog.testing.capture_logs() as logs:
        device = await Device.connect(edge.port, device_id=polite_mac)
        await device.hello()
        await device.ws.close(1000, "user turned me off")
        quiet = await Device.connect(edge.port, device_id=silent_mac)
        assert await quiet.closed() == (1008, "hello timeout")
        await asyncio.wait_for(edge.idle.wait(), 10)
    (connected,) = _lines(logs, "device_connected", polite)
    assert (connected["log_level"], connected["device_kind"]) == ("info", "firmware")
    assert connected["session_id"]
    (left,) = _lines(logs, "device_disconnected", polite)
    assert (left["closed_by"], left["close_code"], left["close_reason"]) == (
        "device", 1000, "user turned me off"
    )  # fmt: skip
    assert left["session_id"] == connected["session_id"]
    assert _lines(logs, "device_connected", silent) == []  # it never said hello
    (timed_out,) = _lines(logs, "device_disconnected", silent)
    assert (timed_out["closed_by"], timed_out["close_code"], timed_out["close_reason"]) == (
        "edge", 1008, "hello timeout"
    )  # fmt: skip


async def test_an_internal_fault_is_logged_with_its_traceback_and_the_device_lives_on(
    start_edge: StartEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met while handling a device's message: the device gets a bare INTERNAL_ERROR
    and stays connected; the log has the fault, whose device, and the traceback."""

    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the listen handler")

    monkeypatch.setattr(DeviceSession, "_on_listen", broken)
    edge = await start_edge()
    mac = _new_mac()
    device = await Device.connect(edge.port, device_id=mac)
    await device.hello()
    with structlog.testing.capture_logs() as logs:
        await device.send_json({"session_id": "x", "type": "listen", "state": "detect"})
        error = await device.expect("error")
    assert error["data"]["error_code"] == "INTERNAL_ERROR"
    assert "bug" not in json.dumps(error)  # no details to the device
    (fault,) = _lines(logs, "edge_internal_fault", mac.replace(":", ""))
    assert fault["log_level"] == "error"
    assert isinstance(fault["exc_info"], RuntimeError)
    rendered = structlog.processors.format_exc_info(None, "error", dict(fault))
    assert "Traceback (most recent call last)" in rendered["exception"]
    assert "RuntimeError: a bug in the listen handler" in rendered["exception"]
    await device.ws.ping()  # still connected
    await device.close()
