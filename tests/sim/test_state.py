"""The device state machine: the table, reboot and fatal error (reference 1.8)."""

from __future__ import annotations

import pytest

from xiaozhi_sim.state import TRANSITIONS, DeviceState, InvalidTransition, StateMachine

S = DeviceState


def test_every_state_has_a_row_and_the_firmware_voice_cycle_is_allowed() -> None:
    assert set(TRANSITIONS) == set(DeviceState)
    machine = StateMachine()
    seen: list[tuple[DeviceState, DeviceState]] = []
    machine.subscribe(lambda old, new: seen.append((old, new)))
    for target in (S.IDLE, S.CONNECTING, S.LISTENING, S.SPEAKING, S.LISTENING, S.IDLE):
        assert machine.go(target)
    assert seen[0] == (S.STARTING, S.IDLE)
    assert seen[-1] == (S.LISTENING, S.IDLE)
    assert machine.go(S.IDLE) is False  # no-op, no listener call
    assert len(seen) == 6


@pytest.mark.parametrize(
    ("start", "target"),
    [(S.IDLE, S.FATAL_ERROR), (S.SPEAKING, S.STARTING), (S.CONNECTING, S.STARTING)],
)
def test_reboot_and_fatal_error_are_reachable_from_anywhere(
    start: DeviceState, target: DeviceState
) -> None:
    machine = StateMachine(start)
    assert machine.can(target)
    machine.go(target)
    assert machine.state is target


def test_refused_moves_name_both_states_and_only_a_reboot_leaves_fatal_error() -> None:
    machine = StateMachine(S.CONNECTING)
    with pytest.raises(InvalidTransition, match="from connecting to speaking"):
        machine.go(S.SPEAKING, "tts before hello")
    fatal = StateMachine(S.FATAL_ERROR)
    assert not fatal.can(S.IDLE)
    with pytest.raises(InvalidTransition):
        fatal.go(S.CONNECTING)
    fatal.go(S.STARTING)
    assert fatal.state is S.STARTING
