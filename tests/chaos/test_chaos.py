"""Issue 13 (points 6, 7, 13): kill -9 the broker, an edge and the hub under a running fleet,
and count what a user would miss. The fleet, the faults and the judging are
:mod:`xiaozhi_bench.chaos` (``xiaozhi bench chaos`` reports the same figures); here they are
asserted. One run for the module: the phases follow each other on one broker, so the whole
suite costs about 20 s.

Against main (edges on clean sessions) the broker phases lose commands for devices that stay
connected: the integrator reconnects and publishes before the edge has subscribed again, and
what the broker queued for the edge's old session is gone.
"""

from __future__ import annotations

import asyncio

import pytest

from xiaozhi_bench.chaos import Chaos, PhaseTally, run_phases

pytestmark = pytest.mark.integration  # a real Mosquitto, edges and a hub

_DEVICES, _RATE, _SECONDS = 6, 60.0, 2.0


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PhaseTally]:
    workdir = tmp_path_factory.mktemp("chaos")
    run: Chaos = asyncio.run(
        run_phases(workdir, devices=_DEVICES, command_rate=_RATE, phase_seconds=_SECONDS)
    )
    return {tally.name: tally for tally in run.phases}


@pytest.mark.parametrize("phase", ["broker SIGTERM", "broker kill -9"])
def test_a_broker_restart_loses_no_command_or_voice_command(
    chaos: dict[str, PhaseTally], phase: str
) -> None:
    tally = chaos[phase]
    assert tally.reconnects == 0  # the devices stayed connected to their edges
    assert tally.to_connected == tally.commands > 0
    if phase == "broker SIGTERM":
        assert tally.lost == 0, tally
    else:
        # Not guaranteed (docs/operations.md section 9): what the broker acknowledged in its
        # last milliseconds and had not yet handed on or saved (autosave, 1 s) dies with it.
        # Seen once in CI, at 60 commands/s: 1 of 121, answered with an error by the hub.
        assert tally.lost <= 2, tally
    assert tally.voice_lost == 0, tally
    assert tally.recovery_seconds < 10, tally
    # a redelivery the edge has seen in this session is dropped, not played twice
    assert tally.duplicates == 0, tally


def test_an_edge_killed_loses_nothing_in_silence(chaos: dict[str, PhaseTally]) -> None:
    """Its devices reconnect to the other edge; a command that died with the edge is answered
    with an error by the hub, every other one is delivered."""
    tally = chaos["edge kill -9"]
    assert tally.reconnects > 0
    assert tally.lost == 0, tally  # devices on the surviving edge got everything
    # Not guaranteed (docs/operations.md section 9): a command published in the instant its
    # device reconnects elsewhere, read by the hub only after the device's new status, is
    # left to the new edge, which never had it. Seen once in CI: 7 of 1,384.
    assert tally.silent <= tally.commands // 100, tally
    assert tally.delivered + tally.answered_error >= tally.commands
    assert tally.duplicates <= tally.commands // 10, tally
    assert tally.recovery_seconds < 10, tally


def test_a_hub_killed_is_back_and_commands_never_stopped(chaos: dict[str, PhaseTally]) -> None:
    tally = chaos["hub kill -9"]
    assert tally.reconnects == 0
    assert tally.lost == 0, tally  # commands do not pass through the hub
    assert tally.recovery_seconds < 30, tally  # /health answers 200 again
