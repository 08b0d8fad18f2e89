"""Fleets and scenarios against the real broker, through their API and their CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import record, refused_port
from xiaozhi.topics import TopicTree
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_sim.cli import main
from xiaozhi_sim.fleet import Fleet, demo_fleet, fleet_specs
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.scenario import ScenarioError, load_scenario, matches
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).resolve().parents[2] / "firmware-sim" / "scenarios"
T = TopicTree()


async def test_a_fleet_of_200_mqtt_devices_in_one_process(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings
) -> None:
    settings = sim_settings.model_copy(update={"sim_seed": 200})
    fleet = Fleet(
        settings,
        fleet_specs(200, "mqtt", groups=["floor1"]),
        ramp_per_second=2000,
        probe_rate=100,
    )
    try:
        await fleet.start()
        assert await fleet.wait_connected(within=30), fleet.summary_line()
        assert fleet.connected == fleet.expected == 200
        assert fleet.paho is not None
        assert fleet.paho.clients == 201  # one shared event loop, no thread per device
        probe = fleet.probe
        assert probe is not None
        assert await fleet.devices[0].wait_until(lambda: probe.answered >= 5, 10)
        line = fleet.summary_line()
        assert line.startswith("connected 200/200 | msgs/s")
        assert "errors 0" in line
        assert "cmd p50 -" not in line  # the probe measured command round trips
        # One group command reaches every member, once each is subscribed: a device
        # subscribes before it publishes its retained `connected` status (same connection).
        members = {d.device_id for d in fleet.devices}
        async with record(mosquitto.url, T.all_status(), T.all_events()) as obs:

            def announced() -> set[str]:
                statuses = [m.obj for m in obs.messages]
                return {s.get("device_id") for s in statuses if s.get("status") == "connected"}

            await obs.wait_for(lambda: announced() >= members, within=30)
            await obs.publish(
                T.group_command("floor1"), {"command": "get_status", "message_id": "g"}
            )

            def answered() -> set[str]:
                return {m.obj["device_id"] for m in obs.messages if m.obj.get("message_id") == "g"}

            await obs.wait_for(lambda: len(answered()) == 200, within=15)
    finally:
        await fleet.stop()
    assert fleet.stats.connected == 0
    report = "\n".join(fleet.report())
    assert "devices         200" in report
    assert "connects 200" in report
    assert "probe           sent" in report


async def test_demo_fleet_for_xiaozhi_up(sim_settings: SimSettings) -> None:
    """WS v1, WS v3 and MQTT; the WS ones are lazy, so only MQTT connects without an edge."""
    fleet = demo_fleet(sim_settings, say_every=60.0)
    try:
        await fleet.start()
        kinds = [(type(d).__name__, getattr(d, "version", None)) for d in fleet.devices]
        assert kinds == [("WsDevice", 1), ("WsDevice", 3), ("MqttDevice", None)]
        assert fleet.expected == 1
        assert await fleet.wait_connected(10)
        assert isinstance(fleet.devices[2], MqttDevice)
        assert fleet.devices[2].groups == ("all_speakers",)
        # the demo home's devices, so the hub knows each one's room
        ids = [d.device_id for d in fleet.devices]
        assert ids == ["demo_living_room", "demo_kitchen", "demo_office"]
        assert isinstance(fleet.devices[0], WsDevice)
    finally:
        await fleet.stop()


def test_fleet_cli_reports_and_exits_0_when_all_connected(
    mosquitto: ManagedMosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "fleet",
            "--devices", "8",
            "--transport", "mixed",
            "--no-wake",
            "--mqtt-url", mosquitto.url,
            "--ota-url", "",
            "--seed", "8",
            "--duration", "0",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "fleet     8 devices (mixed)" in out
    assert "connected 2/2 expected" in out  # MQTT devices; lazy WS devices wait for speech
    assert "  devices         8" in out


def test_fleet_cli_exits_1_when_devices_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    with refused_port() as port:
        code = main(
            [
                "fleet",
                "--devices", "2",
                "--transport", "ws",
                "--ota-url", "",
                "--ws-url", f"ws://127.0.0.1:{port}/xiaozhi/v1/",
                "--connect-timeout", "0.5",
                "--interval", "0.2",
                "--duration", "0",
            ]
        )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "connected 0/2 expected (not all within 0.5 s)" in out


# -- scenarios ------------------------------------------------------------------------------


def run_cli_scenario(path: Path, broker: ManagedMosquitto, *extra: str) -> int:
    return main(["scenario", str(path), "--mqtt-url", broker.url, "--ota-url", "", *extra])


def test_the_shipped_mqtt_scenario_passes_against_a_bare_broker(
    mosquitto: ManagedMosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli_scenario(SCENARIOS / "mqtt_commands.yaml", mosquitto)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "result    PASS: 19 passed, 0 failed, 0 skipped" in out


def test_a_failing_scenario_exits_1_and_says_what_it_saw(
    mosquitto: ManagedMosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "failing.yaml"
    scenario.write_text(
        """
name: expects a volume nobody set
devices:
  den: {transport: mqtt}
steps:
  - connect: den
  - command: {device: den, command: set_volume, parameters: {volume: 10}}
  - expect: {device: den, what: event, match: {result: {volume: 99}}, within: 0.5}
  - disconnect: den
""",
        encoding="utf-8",
    )
    code = run_cli_scenario(scenario, mosquitto)
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL    3  expect event of den" in out
    assert "'volume': 10" in out  # the last message seen, to help whoever reads the report
    assert "SKIP    4  disconnect den" in out
    assert "result    FAIL: 2 passed, 1 failed, 1 skipped" in out
    assert run_cli_scenario(scenario, mosquitto, "--keep-going") == 1
    assert "PASS    4  disconnect den" in capsys.readouterr().out


def test_an_invalid_scenario_lists_every_problem_and_exits_2(
    mosquitto: ManagedMosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "invalid.yaml"
    scenario.write_text(
        """
devices:
  den: {transport: mqtt}
steps:
  - connect: attic
  - inject: {device: den, fault: truncated}
  - expect: {what: status}
  - say: {device: den}
  - jump: {device: den}
""",
        encoding="utf-8",
    )
    assert run_cli_scenario(scenario, mosquitto) == 2
    err = capsys.readouterr().err
    assert "step 1: unknown device 'attic' (declared: den)" in err
    assert "step 2: fault truncated exists on WebSocket only" in err
    assert "step 3 (expect): 'what: status' needs a device" in err
    assert "step 4 (say.text): Field required" in err
    assert "step 5 (jump): Extra inputs are not permitted" in err
    assert run_cli_scenario(tmp_path / "missing.yaml", mosquitto) == 2


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ("  - connect: attic\n", "step 1: unknown device 'attic' (declared: den)"),
        ("  - inject: {device: den, fault: bad_token}\n", "exists on WebSocket only"),
        ("  - expect: {device: den, what: event, retained: true}\n", "status and sensor only"),
        ("  - wait_for: {device: den}\n", "give a state or connected"),
        ("  - command: {command: reboot}\n", "exactly one of device, group"),
        ("  - {say: {device: den, text: hi}, pause: 1}\n", "exactly one key"),
    ],
)
def test_scenario_checks(tmp_path: Path, steps: str, problem: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("devices: {den: {transport: mqtt}}\nsteps:\n" + steps, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert problem in str(caught.value)
    path.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(path)


def test_no_broker_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with refused_port() as port:
        url = f"mqtt://127.0.0.1:{port}"
        assert main(["scenario", str(SCENARIOS / "mqtt_commands.yaml"), "--mqtt-url", url]) == 2
    assert "unreachable" in capsys.readouterr().err


def test_every_shipped_scenario_is_valid() -> None:
    names = sorted(p.name for p in SCENARIOS.glob("*.yaml"))
    assert names == [
        "mqtt_commands.yaml",
        "mqtt_faults.yaml",
        "ws_auth.yaml",
        "ws_faults.yaml",
        "ws_voice_command.yaml",
    ]
    for path in SCENARIOS.glob("*.yaml"):
        assert load_scenario(path).steps


def test_match_is_a_recursive_subset() -> None:
    payload = {"a": 1, "b": {"c": 2, "d": [1]}, "e": None}
    assert matches(payload, {})
    assert matches(payload, {"a": 1, "b": {"c": 2}})
    assert matches(payload, {"b": {"d": "*"}, "e": "*"})
    assert not matches(payload, {"b": {"c": 3}})
    assert not matches(payload, {"z": "*"})
    assert not matches(None, {"a": 1})
