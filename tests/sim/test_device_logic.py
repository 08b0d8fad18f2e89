"""Pure device logic: identity, telemetry drift, back-off, commands, serial console, stats."""

from __future__ import annotations

import random
from typing import Any

import pytest

from xiaozhi import __version__, jsonutil
from xiaozhi.payloads import DeviceStatus, DeviceTransport
from xiaozhi_sim.executor import CommandExecutor
from xiaozhi_sim.identity import ESPRESSIF_OUI, make_identity
from xiaozhi_sim.mcp_server import McpServer, device_tools
from xiaozhi_sim.model import DeviceModel, Drift, Telemetry
from xiaozhi_sim.serial import SerialConsole
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.stats import SimStats

# -- identity ------------------------------------------------------------------------------


def test_identities_are_deterministic_unique_and_look_like_an_esp32_s3() -> None:
    first = make_identity(seed=7, index=0)
    assert first == make_identity(seed=7, index=0)
    assert first != make_identity(seed=8, index=0)
    fleet = {make_identity(seed=7, index=i).device_id for i in range(2000)}
    assert len(fleet) == 2000
    assert first.mac.startswith(":".join(f"{b:02x}" for b in ESPRESSIF_OUI))
    assert first.device_id == first.mac.replace(":", "")
    assert len(first.client_id) == 36
    assert first.user_agent == f"bread-compact-wifi/1.8.2 xiaozhi-sim/{__version__}"
    assert first.hardware.cpu_freq == 240
    assert first.hardware.flash_size == 16 * 1024 * 1024
    assert first.hardware.psram_size == 8 * 1024 * 1024
    info = first.system_info()
    assert info["mac_address"] == first.mac
    assert info["uuid"] == first.client_id
    assert info["application"]["version"] == "1.8.2"
    assert make_identity(name="kitchen", device_id="kitchen").device_id == "kitchen"
    with pytest.raises(ValueError, match="exactly one"):
        make_identity(index=1, name="x")


# -- telemetry -------------------------------------------------------------------------------


def test_drift_stays_in_bounds_and_is_repeatable() -> None:
    walk = Drift(22.5, 20.0, 25.0, 2.0)
    rng = random.Random(1)
    values = [walk.next(rng) for _ in range(2000)]
    assert all(20.0 <= v <= 25.0 for v in values)
    again = Drift(22.5, 20.0, 25.0, 2.0)
    rng = random.Random(1)
    assert [again.next(rng) for _ in range(2000)] == values
    telemetry = Telemetry.seeded(3, "dev")
    samples = [telemetry.sample() for _ in range(500)]
    assert all(30 <= s["memory_usage"] <= 90 for s in samples)
    assert all(-90 <= s["wifi_signal"] <= -30 for s in samples)
    assert all(0 < s["free_heap"] < 600_000 for s in samples)
    replay = Telemetry.seeded(3, "dev")
    assert [replay.sample() for _ in range(500)] == samples


def test_status_and_sensor_payloads_report_the_device() -> None:
    model = DeviceModel(make_identity(name="m"), boot_time=100.0)
    model.set_volume(80)
    model.set_light(True, 128)
    status = model.status_payload(130.0, timestamp="t", transport=DeviceTransport.MQTT)
    wire = jsonutil.loads_object(status.to_wire())
    assert wire["status"] == DeviceStatus.CONNECTED
    assert wire["uptime"] == 30
    assert (wire["volume"], wire["light"], wire["brightness"]) == (80, "on", 128)
    assert set(wire) >= {"memory_usage", "cpu_usage", "wifi_signal", "free_heap"}
    assert wire["simulated"] is True  # the hub keeps it out of Home Assistant
    sensors = {p.sensor_type: p for p in model.sensor_payloads(timestamp="t")}
    assert set(sensors) == {"temperature", "humidity", "audio_level"}
    assert sensors["temperature"].unit == "celsius"
    assert model.last_will().to_json_dict() == {
        "status": "disconnected",
        "device_id": model.identity.device_id,
        "simulated": True,
    }
    assert model.device_status()["network"]["signal"] in ("strong", "medium", "weak")
    with pytest.raises(ValueError, match="volume"):
        model.set_volume(101)
    with pytest.raises(ValueError, match="brightness"):
        model.set_light(True, 256)
    model.reboot(200.0)
    assert (model.reboots, model.light_on, model.volume) == (1, False, 80)  # volume is in NVS
    assert model.state is DeviceState.STARTING
    assert model.uptime(201.0) == 1


# -- back-off --------------------------------------------------------------------------------


# -- commands --------------------------------------------------------------------------------


def run(executor: CommandExecutor, command: str, **parameters: Any) -> dict[str, Any]:
    """Run one command with a fresh message_id ("m-1", "m-2", ... per executor)."""
    message_id = f"m-{executor.executed + executor.failed + 1}"
    raw = jsonutil.dumps({"command": command, "parameters": parameters, "message_id": message_id})
    execution = executor.execute(raw, timestamp="t")
    assert execution is not None
    out = execution.event.to_json_dict()
    out["_publish_status"] = execution.publish_status
    out["_reboot"] = execution.reboot
    return out


@pytest.fixture
def executor() -> CommandExecutor:
    identity = make_identity(name="cmd")
    model = DeviceModel(identity)
    model.machine.go(DeviceState.IDLE)
    return CommandExecutor(model, McpServer("b", "1", device_tools(model, identity.system_info)))


def test_every_command_of_the_vocabulary_answers_a_command_result(
    executor: CommandExecutor,
) -> None:
    model = executor.model
    volume = run(executor, "set_volume", volume=80)
    assert volume["event_type"] == "command_result"
    assert (volume["status"], volume["message_id"], volume["result"]) == (
        "ok",
        "m-1",
        {"volume": 80},
    )
    assert volume["_publish_status"]
    assert run(executor, "led", on=True, brightness=10)["result"] == {"on": True, "brightness": 10}
    assert model.light_on
    assert run(executor, "respond", text="Done")["result"] == {"spoken": "Done"}
    assert model.last_response == "Done"
    assert run(executor, "get_status")["result"]["audio_speaker"] == {"volume": 80}
    assert run(executor, "alert", status="s", message="m")["result"] == {"shown": True}
    assert model.last_alert == {"status": "s", "message": "m", "emotion": "neutral"}
    mcp = run(executor, "mcp_call", name="self.light.turn_off")
    assert (mcp["status"], model.light_on) == ("ok", False)
    reboot = run(executor, "reboot")
    assert reboot["_reboot"]
    assert reboot["status"] == "ok"
    assert executor.executed == 7


@pytest.mark.parametrize(
    ("command", "parameters", "error"),
    [
        ("dance", {}, "unknown command 'dance'"),
        ("set_volume", {"volume": 150}, "parameters.volume"),
        ("led", {}, "parameters.on"),
        ("mcp_call", {"name": "self.nope"}, "Unknown tool: self.nope"),
    ],
)
def test_refused_commands_answer_an_error_result(
    executor: CommandExecutor, command: str, parameters: dict[str, Any], error: str
) -> None:
    result = run(executor, command, **parameters)
    assert result["status"] == "error"
    assert error in result["error"]
    assert result["message_id"] == "m-1"


def test_a_payload_that_is_not_a_command_gets_an_error_event(executor: CommandExecutor) -> None:
    execution = executor.execute(b"{nope", timestamp="t")
    assert execution.command is None
    assert not execution.ok
    event = execution.event.to_json_dict()
    assert event["event_type"] == "error"
    assert event["error_code"] == "INVALID_DATA_FORMAT"


# -- serial console (pure) ---------------------------------------------------------------------


def test_serial_console_answers_every_line_once() -> None:
    model = DeviceModel(make_identity(name="serial"), boot_time=0.0)
    console = SerialConsole(model)
    out = console.feed(b"$VOL,80#\r\n$LED,ON,2", 5.0)
    assert out.reply == b"$OK#\r\n"
    assert out.changed
    out = console.feed(b"55#$STA?#", 6.0)  # a command split across reads
    assert out.reply == b"$OK#\r\n$OK,STATE=STARTING,LED=ON,BRI=255,VOL=80,UP=6#\r\n"
    assert model.brightness == 255
    out = console.feed(b"hello\n$XX#$VOL,101#$LED,OFF#$RST#", 7.0)
    assert out.reply.split(b"\r\n")[:-1] == [
        b"$ERR#",
        b"$UNKNOWN,unknown command 'XX'#",
        b"$PARAM,volume '101' is not an integer 0-100#",
        b"$OK#",
        b"$OK#",
    ]
    assert out.reset
    assert out.changed
    assert not model.light_on
    out = console.feed(b"$" + b"A" * 300 + b"#\n\r\n$STA?#", 8.0)
    assert out.reply.startswith(b"$ERR#\r\n$OK,")
    assert console.lines == 10


# -- stats -------------------------------------------------------------------------------------


def test_summary_line_and_report() -> None:
    stats = SimStats(devices=3, connected=2)
    assert stats.summary_line(0.0).startswith("connected 2/3 | msgs/s 0")
    stats.messages_out, stats.messages_in = 10, 10
    stats.error("connect")
    stats.command_latency.extend([0.001, 0.002, 0.003])
    stats.voice_latency.append(0.5)
    line = stats.summary_line(2.0)
    assert "msgs/s 10" in line
    assert "errors 1" in line
    assert "cmd p50 2 ms" in line
    assert "voice p50 500 ms" in line
    report = "\n".join(stats.report())
    assert "errors          1 (connect 1)" in report
    assert "command latency n 3, p50 2 ms, p99 3 ms, max 3 ms" in report


def test_a_command_seen_twice_runs_once(executor: CommandExecutor) -> None:
    """A group command arrives on the group topic and again from the hub's fan-out."""
    raw = b'{"command":"set_volume","parameters":{"volume":30},"message_id":"m-1"}'
    first = executor.execute(raw, timestamp=None)
    assert first is not None
    assert first.ok
    assert executor.execute(raw, timestamp=None) is None
    assert (executor.executed, executor.duplicates) == (1, 1)
    other = raw.replace(b"m-1", b"m-2").replace(b"30", b"40")
    assert executor.execute(other, timestamp=None) is not None
    assert executor.model.volume == 40
