"""The edge as an operator relies on it: a device is commandable the moment it is greeted,
its life is in the logs, a dead worker comes back. Real WebSockets, real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path
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


async def _worker_line(stdout: asyncio.StreamReader, within: float = 30) -> tuple[str, int]:
    """The next "edge ... edge id X, pid N" line a worker prints once it serves: (X, N)."""

    async def _read() -> tuple[str, int]:
        while line := (await stdout.readline()).decode():
            found = re.search(r"\(devices\), edge id (\S+), pid (\d+)", line)
            if found:
                return found.group(1), int(found.group(2))
        raise AssertionError("the edge's output ended")

    return await asyncio.wait_for(_read(), within)


async def test_a_worker_killed_with_sigkill_comes_back_and_serves(
    mosquitto: ManagedMosquitto, integrator: Recorder, tmp_path: Path
) -> None:
    """`xiaozhi edge --workers 2`: kill -9 one worker (as the OOM killer would). The parent
    starts it again under the same edge id; it goes online again and devices land on it."""
    base_id = f"edge-r-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env.update(
        XIAOZHI_MQTT_URL=mosquitto.url,
        XIAOZHI_EDGE_PORT="0",
        XIAOZHI_EDGE_HOST="127.0.0.1",
        XIAOZHI_DEVICE_AUTH="open",
        XIAOZHI_EDGE_ID=base_id,
        XIAOZHI_STATE_DIR=str(tmp_path),
    )
    xiaozhi = str(Path(sys.executable).with_name("xiaozhi"))
    process = await asyncio.create_subprocess_exec(
        xiaozhi, "edge", "--workers", "2", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    victim = f"{base_id}-w1"

    def states(worker: str) -> list[str]:
        return [s["state"] for s in integrator.json(TOPICS.bridge_edge(worker))]

    try:
        shared = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)/", shared).group(1))  # type: ignore[union-attr]
        pids = dict([await _worker_line(process.stdout), await _worker_line(process.stdout)])
        await integrator.wait_for(lambda: states(victim)[-1:] == ["online"], 30)
        os.kill(pids[victim], signal.SIGKILL)
        worker, pid = await _worker_line(process.stdout)
        assert worker == victim
        assert pid != pids[victim]
        await integrator.wait_for(lambda: states(victim)[-2:] == ["offline", "online"], 30)

        landed = None
        for _ in range(40):  # the kernel spreads connections: one lands on it soon
            mac = _new_mac()
            device = await Device.connect(port, device_id=mac)
            await device.hello()
            status = await integrator.expect(
                TOPICS.status(mac.replace(":", "")), lambda s: s["status"] == "connected"
            )
            await device.close()
            if status["edge_id"] == victim:
                landed = mac
                break
        assert landed, "no device was served by the restarted worker"
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
