"""Reports CI gates on (issue 17, point 10): `xiaozhi sim fleet` and `scenario` as real commands
against a real edge, hub and Mosquitto write JSON and JUnit XML, and exit 0 when the thresholds
hold, 1 when one is missed (saying which, with the figure), 2 when they cannot run.

The fleet runs as a child process (`xiaozhi sim fleet`), so the edge or hub keeps serving on
the test's event loop; every wait is bounded by the child's own `--duration`/`--connect-timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartEdge
from tests.sim.test_against_edge import ws_faults_without_the_hub, ws_url
from tests.support import refused_port
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings
from xiaozhi_sim.cli import broker_hint, main
from xiaozhi_sim.report import Case, RunReport, junit_xml
from xiaozhi_sim.scenario import load_scenario
from xiaozhi_sim.settings import load_sim_settings
from xiaozhi_sim.thresholds import MinConnected

pytestmark = pytest.mark.integration

XIAOZHI = str(Path(sys.executable).with_name("xiaozhi"))
SCENARIOS = Path(__file__).resolve().parents[2] / "firmware-sim" / "scenarios"
RUN_SECONDS = 90.0  # the child ends on its own in seconds; this only bounds a hang


async def xiaozhi_sim(*args: str, mqtt_url: str, **settings: str) -> tuple[int, str, str]:
    """Run `xiaozhi sim ARGS` with only the broker (and `settings`, XIAOZHI_* names) set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env.update(settings, XIAOZHI_MQTT_URL=mqtt_url)
    process = await asyncio.create_subprocess_exec(
        XIAOZHI,
        "sim",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def junit_cases(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (outcome, message) of each testcase; checks the suite's counts add up."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases: dict[str, tuple[str, str]] = {}
    for case in suite.findall("testcase"):
        outcome = next(iter(case), None)
        tag = "passed" if outcome is None else outcome.tag
        cases[case.attrib["name"]] = (tag, "" if outcome is None else outcome.attrib["message"])
    tags = [tag for tag, _ in cases.values()]
    assert suite.attrib["tests"] == str(len(cases))
    for attribute, tag in (("failures", "failure"), ("skipped", "skipped"), ("errors", "error")):
        assert suite.attrib[attribute] == str(tags.count(tag)), (attribute, tags)
    return cases


def fleet_args(tmp_path: Path, ws: str, *extra: str) -> list[str]:
    """8 devices, a quarter of them MQTT (probed) and the rest WS v1-v3, for ~1.5 s."""
    seed = str(uuid.uuid4().int % 1_000_000)  # ids of their own on the session's broker
    return [
        "fleet",
        "--devices", "8",
        "--transport", "mixed",
        "--ota-url", "",
        "--ws-url", ws,
        "--seed", seed,
        "--probe-rate", "20",
        "--duration", "1.5",
        "--interval", "0.5",
        "--connect-timeout", "10",
        "--report-json", str(tmp_path / "reports" / "fleet.json"),
        "--junit", str(tmp_path / "reports" / "fleet.xml"),
        *extra,
    ]  # fmt: skip


async def test_a_fleet_on_the_edge_passes_its_thresholds_and_says_so_in_both_reports(
    start_edge: StartEdge, mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    edge = await start_edge()
    code, out, err = await xiaozhi_sim(
        *fleet_args(tmp_path, ws_url(edge), "--min-connected", "100%", "--max-p99-ms", "5000"),
        mqtt_url=mosquitto.url,
    )
    assert code == 0, out + err
    assert "check     PASS  connected: connected 8 of 8 expected devices" in out
    report: dict[str, Any] = json.loads((tmp_path / "reports" / "fleet.json").read_text())
    assert (report["kind"], report["passed"], report["exit_code"]) == ("fleet", True, 0)
    assert report["thresholds"] == {"min_connected": "100%", "max_p99_ms": 5000.0}
    assert report["expected"] == 8
    command = report["stats"]["latency"]["command"]
    assert command["n"] > 0
    assert 0 < command["p99_ms"] <= 5000
    statuses = {case["name"]: case["status"] for case in report["cases"]}
    assert statuses == {
        "connected": "PASS",
        "p99 command latency": "PASS",
        "p99 voice latency": "SKIP",  # nobody talked: the hub is not in this test
    }
    cases = junit_cases(tmp_path / "reports" / "fleet.xml")
    assert cases["connected"] == ("passed", "")
    assert cases["p99 command latency"] == ("passed", "")
    assert cases["p99 voice latency"][0] == "skipped"
    assert "--say-every" in cases["p99 voice latency"][1]


async def test_a_fleet_missing_its_thresholds_exits_1_naming_each_with_its_figure(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """The edge is down (a refused port): only the two MQTT devices connect."""
    with refused_port() as port:
        code, out, err = await xiaozhi_sim(
            *fleet_args(
                tmp_path,
                f"ws://127.0.0.1:{port}/xiaozhi/v1/",
                "--connect-timeout", "1",
                "--min-connected", "50%",
                "--max-p99-ms", "0.001",
            ),
            mqtt_url=mosquitto.url,
        )  # fmt: skip
    assert code == 1, out + err
    below = "connected 2 of 8 expected devices (after connecting 2, at the end 2), below "
    below += "--min-connected 50% (4 of 8)"
    assert f"check     FAIL  connected: {below}" in out
    cases = junit_cases(tmp_path / "reports" / "fleet.xml")
    assert cases["connected"] == ("failure", below)
    outcome, message = cases["p99 command latency"]
    assert outcome == "failure"
    assert message.startswith("command latency p99 ")
    assert message.endswith(" ms over " + message.split(" over ")[1])
    assert "above --max-p99-ms 0.001" in message
    report = json.loads((tmp_path / "reports" / "fleet.json").read_text())
    assert (report["passed"], report["exit_code"]) == (False, 1)
    assert report["counts"] == {"passed": 0, "failed": 2, "skipped": 1, "errors": 0}


async def test_a_percentage_below_what_connected_passes(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """The same fleet with the edge down passes a 25 % gate (2 of 8) with no latency gate."""
    with refused_port() as port:
        code, out, err = await xiaozhi_sim(
            *fleet_args(
                tmp_path,
                f"ws://127.0.0.1:{port}/xiaozhi/v1/",
                "--connect-timeout", "1",
                "--duration", "0",
                "--min-connected", "25%",
            ),
            mqtt_url=mosquitto.url,
        )  # fmt: skip
    assert code == 0, out + err
    assert junit_cases(tmp_path / "reports" / "fleet.xml") == {"connected": ("passed", "")}


async def test_voice_latency_through_a_real_hub_is_gated_too(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    """MQTT devices talk (`--say-every`); the hub answers each with a `respond` command: the
    `voice` p99 is checked, the unmeasured `command` one skipped."""
    tag = uuid.uuid4().hex[:8]
    base = f"t{tag}/xiaozhi"  # the session broker is shared: a tree of this test's own
    settings = HubSettings(
        mqtt_url=mosquitto.url,
        hub_host="127.0.0.1",
        hub_port=0,
        base_topic=base,
        discovery_prefix=f"ha{tag}",
        hub_id=f"hub-{tag}",
        hub_share_group=f"g{tag}",
        secret="test-secret",
        state_dir=tmp_path / "hub",
        stt_engine="none",
        tts_engine="none",
    )
    hub = HubService(settings)
    await hub.start()
    try:
        code, out, err = await xiaozhi_sim(
            "fleet",
            "--devices", "3",
            "--transport", "mqtt",
            "--seed", str(uuid.uuid4().int % 1_000_000),
            "--say-every", "0.5",
            "--duration", "3",
            "--interval", "1",
            "--max-p99-ms", "10000",
            "--report-json", str(tmp_path / "voice.json"),
            mqtt_url=mosquitto.url,
            XIAOZHI_BASE_TOPIC=base,
        )  # fmt: skip
    finally:
        await hub.stop()
    assert code == 0, out + err
    report = json.loads((tmp_path / "voice.json").read_text())
    statuses = {case["name"]: case["status"] for case in report["cases"]}
    assert statuses == {
        "connected": "PASS",
        "p99 command latency": "SKIP",
        "p99 voice latency": "PASS",
    }
    assert report["stats"]["latency"]["voice"]["n"] > 0


async def test_a_scenario_on_the_edge_reports_one_testcase_per_step(
    start_edge: StartEdge, mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    edge = await start_edge()
    scenario = ws_faults_without_the_hub(tmp_path)
    junit, report_json = tmp_path / "ws.xml", tmp_path / "ws.json"
    code, out, err = await xiaozhi_sim(
        "scenario", str(scenario),
        "--ota-url", "",
        "--ws-url", ws_url(edge),
        "--seed", str(uuid.uuid4().int % 1_000_000),
        "--junit", str(junit),
        "--report-json", str(report_json),
        mqtt_url=mosquitto.url,
    )  # fmt: skip
    assert code == 0, out + err
    cases = junit_cases(junit)
    assert len(cases) == 20
    assert set(cases.values()) == {("passed", "")}
    names = list(cases)
    assert names[0] == "step 01: connect bystander"
    assert names == sorted(names)  # run order is name order on a CI page
    report = json.loads(report_json.read_text())
    assert (report["kind"], report["exit_code"], report["file"]) == ("scenario", 0, str(scenario))
    assert report["counts"]["passed"] == 20


FAILING = """
name: expects a volume nobody set
devices:
  den: {transport: mqtt}
steps:
  - connect: den
  - command: {device: den, command: set_volume, parameters: {volume: 10}}
  - expect: {device: den, what: event, match: {result: {volume: 99}}, within: 3}
  - disconnect: den
"""


def test_a_failing_scenario_reports_the_failure_and_the_steps_not_run(
    mosquitto: ManagedMosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "failing.yaml"
    path.write_text(FAILING, encoding="utf-8")
    junit = tmp_path / "out" / "failing.xml"
    code = main(
        ["scenario", str(path), "--mqtt-url", mosquitto.url, "--ota-url", "", "--junit", str(junit)]
    )
    assert code == 1, capsys.readouterr().out
    cases = junit_cases(junit)
    assert cases["step 1: connect den"] == ("passed", "")
    outcome, message = cases["step 3: expect event of den {'result': {'volume': 99}} within 3 s"]
    assert outcome == "failure"
    assert message.startswith("no message matched {'result': {'volume': 99}}; last seen: ")
    assert "'command': 'set_volume', 'status': 'ok'" in message  # what it saw instead
    assert cases["step 4: disconnect den"] == (
        "skipped",
        "not run: step 3 failed (--keep-going runs the rest)",
    )
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.attrib["name"] == "expects a volume nobody set"
    assert f"written   {junit}" in capsys.readouterr().out


def test_no_broker_says_why_the_scenario_needs_one_and_still_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit, report_json = tmp_path / "none.xml", tmp_path / "none.json"
    with refused_port() as port:
        code = main(
            [
                "scenario", str(SCENARIOS / "mqtt_commands.yaml"),
                "--mqtt-url", f"mqtt://127.0.0.1:{port}",
                "--junit", str(junit), "--report-json", str(report_json),
            ]
        )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"broker mqtt://127.0.0.1:{port} unreachable" in err
    needs = "this scenario needs a broker: its MQTT devices (kitchen) connect to it"
    assert needs in err
    assert "neither XIAOZHI_MQTT_URL nor --mqtt-url" not in err  # it was set, just wrong
    ((outcome, message),) = junit_cases(junit).values()
    assert outcome == "error"
    assert needs in message
    assert json.loads(report_json.read_text())["exit_code"] == 2


def test_the_broker_hint_names_the_settings_when_neither_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run without a broker setting, the command tries the default; it says so and how to set
    one (checked on the hint itself: the default port may be taken on this machine)."""
    monkeypatch.delenv("XIAOZHI_MQTT_URL", raising=False)
    scenario = load_scenario(SCENARIOS / "ws_faults.yaml")
    hint = broker_hint(scenario, load_sim_settings())
    assert hint.startswith("this scenario needs a broker: its steps watch the devices' topics")
    assert "neither XIAOZHI_MQTT_URL nor --mqtt-url is set" in hint
    assert "neither" not in broker_hint(scenario, load_sim_settings(mqtt_url="mqtt://h:1"))


def test_every_shipped_scenario_says_it_needs_the_broker_setting() -> None:
    for path in SCENARIOS.glob("*.yaml"):
        header = path.read_text(encoding="utf-8").split("\nname:")[0]
        assert "XIAOZHI_MQTT_URL" in header, path.name


def test_min_connected_is_a_count_or_a_percentage() -> None:
    assert MinConnected.parse("95%").needed(8) == 8  # rounds up: at least 95 %
    assert MinConnected.parse("50%").needed(8) == 4
    assert MinConnected.parse("3").needed(8) == 3
    assert str(MinConnected.parse(" 12.5% ")) == "12.5%"
    for bad in ("", "x", "-1", "101%", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="a device count"):
            MinConnected.parse(bad)


def test_junit_holds_whatever_a_device_sent_back() -> None:
    """Markup and control bytes in a failure (a malformed payload quoted) still parse."""
    garbage = "last seen: <x & 'y'>\x00\x1b[31m\ufffe"
    report = RunReport(
        "scenario",
        "a <name>",
        "2026-12-07T18:00:00+00:00",
        1.0,
        1,
        [Case("step 1: expect", "FAIL", 0.5, garbage, garbage)],
    )
    failure = ET.fromstring(junit_xml(report)).find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.attrib["message"] == "last seen: <x & 'y'>\\x00\\x1b[31m\\ufffe"
