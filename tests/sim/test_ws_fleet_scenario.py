"""WebSocket devices in fleets and scenarios, against the protocol peer (edge_peer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xiaozhi.wav import UPLINK_FORMAT, encode_wav
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_sim.device import Fault
from xiaozhi_sim.fleet import Fleet, fleet_specs
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mic_and_speaker import tone
from xiaozhi_sim.scenario import load_scenario, run_scenario
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

from .edge_peer import EdgeProtocolPeer

pytestmark = pytest.mark.integration


async def test_a_ws_fleet_wakes_talks_and_measures_voice_latency(
    sim_settings: SimSettings,
) -> None:
    async with EdgeProtocolPeer() as peer:
        settings = sim_settings.model_copy(update={"sim_ws_url": peer.url, "sim_seed": 5})
        fleet = Fleet(
            settings,
            fleet_specs(6, "ws", binary_version=2),
            wake_on_start=True,
            say_every=0.2,
            ramp_per_second=0,
        )
        try:
            await fleet.start()
            assert await fleet.wait_connected(10)
            assert fleet.expected == 6

            def spoken() -> int:
                return sum(
                    1 for c in peer.connections for t in c.texts if t.get("state") == "detect"
                )

            await peer.wait_for(lambda: spoken() >= 6, within=10)
            assert {c.headers["Protocol-Version"] for c in peer.connections} == {"2"}
            assert await fleet.devices[0].wait_until(lambda: len(fleet.stats.voice_latency) >= 3, 5)
            assert "voice p50 -" not in fleet.summary_line()
        finally:
            await fleet.stop()
        assert fleet.stats.connected == 0


async def test_a_lax_server_that_accepts_version_4_is_reported(device_name: str) -> None:
    async with EdgeProtocolPeer(strict=False) as peer:
        settings = SimSettings(sim_ota_url="", sim_ws_url=peer.url)
        device = WsDevice(make_identity(name=device_name), settings)
        try:
            result = await device.inject(Fault.WRONG_VERSION)
            assert (result.refused, result.detail) == (False, "server hello: accepted")
            assert peer.last.headers["Protocol-Version"] == "4"
        finally:
            await device.stop()


WS_SCENARIO = """
name: ws devices against the protocol peer
devices:
  lamp: {transport: ws, binary_version: 3, record: RECORD}
  desk: {transport: ws, binary_version: 1, mode: manual}
steps:
  - connect: lamp
  - say: {device: lamp, text: turn on the lamp}
  - expect: {device: lamp, what: response, match: {type: stt, text: turn on the lamp}}
  - expect: {device: lamp, what: received, match: {type: tts, state: stop}}
  - wait_for: {device: lamp, state: listening, within: 2}
  - speak: {device: lamp, file: mic.wav}
  - inject: {device: lamp, fault: malformed}
  - expect: {device: lamp, what: received, match: {type: error}}
  - expect: {device: lamp, what: fault, match: {fault: malformed}}
  - inject: {device: lamp, fault: bad_token}
  - expect: {device: lamp, what: fault, match: {refused: true}}
  - connect: desk
  - say: {device: desk, text: hello}
  - wait_for: {device: desk, state: idle, within: 5}
  - pause: 0.01
  - disconnect: desk
  - wait_for: {device: desk, connected: false, within: 1}
  - expect: {device: lamp, what: error, match: {type: nothing}, within: 0.2}
"""


async def test_a_ws_scenario_passes_until_its_deliberately_failing_last_step(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, tmp_path: Path
) -> None:
    (tmp_path / "mic.wav").write_bytes(encode_wav(tone(0.12), UPLINK_FORMAT))
    path = tmp_path / "ws.yaml"
    path.write_text(WS_SCENARIO.replace("RECORD", str(tmp_path / "lamp.wav")), encoding="utf-8")
    lines: list[str] = []
    async with EdgeProtocolPeer() as peer:
        settings = sim_settings.model_copy(update={"sim_ws_url": peer.url})
        report = await run_scenario(load_scenario(path), settings, show=lines.append)
    text = "\n".join(lines)
    assert [s.status for s in report.steps[:-1]] == ["PASS"] * 17, text
    assert report.steps[-1].status == "FAIL"
    assert "no error matched {'type': 'nothing'}" in report.steps[-1].detail
    assert report.exit_code == 1
    assert (tmp_path / "lamp.wav").stat().st_size > 44
    assert "speak mic.wav on lamp" in text


async def test_expectations_that_fail_say_what_they_saw(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, tmp_path: Path
) -> None:
    path = tmp_path / "fail.yaml"
    path.write_text(
        """
devices:
  attic: {transport: mqtt, device_id: attic-never-connected}
  cellar: {transport: mqtt}
steps:
  - expect: {device: attic, what: status, retained: true, within: 0.3}
  - expect: {device: attic, what: sensor, within: 0.2}
  - connect: cellar
  - expect:
      {device: cellar, what: sensor, sensor_type: humidity, match: {unit: kelvin},
       retained: true, within: 0.3}
  - expect: {device: cellar, what: voice_command, within: 0.2}
  - expect: {device: cellar, what: command, within: 0.2}
  - wait_for: {device: cellar, state: speaking, within: 0.2}
  - connect: {device: attic, within: 0.2}
""",
        encoding="utf-8",
    )
    settings = sim_settings.model_copy(update={"mqtt_url": mosquitto.url})
    lines: list[str] = []
    report = await run_scenario(load_scenario(path), settings, show=lines.append, keep_going=True)
    statuses = [s.status for s in report.steps]
    assert statuses == ["FAIL", "FAIL", "PASS", "FAIL", "FAIL", "FAIL", "FAIL", "PASS"], lines
    assert "broker holds no retained match" in report.steps[0].detail
    assert "kelvin" not in report.steps[3].detail
    assert "holds: {" in report.steps[3].detail
    assert "state idle" in report.steps[6].detail
