"""The device state machine: every rule that moves a simulated device between states.

States are the firmware's (``FW:main/device_state.h``, reference section 1.8) that a simulated
device can be in; Wi-Fi configuring, upgrading, activating and audio testing never happen here.
Transitions are one table, not scattered ``if``\\ s (h11's ``_state.py``); both transports drive
the same machine:

* WebSocket (reference 1.1, 1.6): ``Idle`` -wake-> ``Connecting`` -server hello-> ``Listening``
  -tts start-> ``Speaking`` -tts stop-> ``Listening`` (auto/realtime) or ``Idle`` (manual);
  a closed or timed-out channel -> ``Idle``.
* MQTT (seed 003's client, connected from boot, reference 2.2): ``Connecting`` -CONNACK->
  ``Idle``; a voice command -> ``Listening``; a ``respond`` command -> ``Speaking`` -> ``Idle``.

``Starting`` is boot and reboot; ``FatalError`` is where a device that gave up reconnecting ends.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

from xiaozhi.errors import XiaozhiError

__all__ = ["TRANSITIONS", "DeviceState", "InvalidTransition", "StateMachine"]


class DeviceState(enum.StrEnum):
    """What the device is doing (reference section 1.8)."""

    STARTING = "starting"  # booting or rebooting; no network yet
    IDLE = "idle"  # waiting for a wake word (WS: no channel needed)
    CONNECTING = "connecting"  # opening the channel / broker session
    LISTENING = "listening"  # channel open, microphone (or typed command) to the server
    SPEAKING = "speaking"  # playing the server's TTS
    FATAL_ERROR = "fatal_error"  # gave up (reconnect attempts exhausted)


_S = DeviceState

TRANSITIONS: Final[dict[DeviceState, frozenset[DeviceState]]] = {
    _S.STARTING: frozenset({_S.IDLE, _S.CONNECTING, _S.FATAL_ERROR}),
    _S.IDLE: frozenset({_S.CONNECTING, _S.LISTENING, _S.SPEAKING}),
    _S.CONNECTING: frozenset({_S.IDLE, _S.LISTENING}),
    _S.LISTENING: frozenset({_S.IDLE, _S.SPEAKING, _S.CONNECTING}),
    _S.SPEAKING: frozenset({_S.IDLE, _S.LISTENING, _S.CONNECTING}),
    _S.FATAL_ERROR: frozenset(),
}
"""Allowed moves. Every state may also go to ``Starting`` (reboot) and ``FatalError``; a move to
the current state is a no-op."""

_ALWAYS: Final = frozenset({_S.STARTING, _S.FATAL_ERROR})


class InvalidTransition(XiaozhiError):
    """A move the table does not allow: a bug in the simulator, never the peer's fault."""

    def __init__(self, *, current: DeviceState, target: DeviceState, why: str) -> None:
        super().__init__(f"cannot go from {current} to {target} ({why})")
        self.current, self.target, self.why = current, target, why


class StateMachine:
    """The current :class:`DeviceState` and its listeners.

    Args:
        initial: where the device starts (``Starting`` at power-on).
    """

    def __init__(self, initial: DeviceState = DeviceState.STARTING) -> None:
        self._state = initial
        self._listeners: list[Callable[[DeviceState, DeviceState], None]] = []

    @property
    def state(self) -> DeviceState:
        return self._state

    def can(self, target: DeviceState) -> bool:
        """True when :meth:`go` to ``target`` would succeed."""
        return (
            target == self._state or target in _ALWAYS or target in TRANSITIONS[self._state]
        ) and not (self._state is DeviceState.FATAL_ERROR and target is not DeviceState.STARTING)

    def go(self, target: DeviceState, why: str = "") -> bool:
        """Move to ``target``; return True if the state changed.

        Raises:
            InvalidTransition: the table does not allow it (only ``Starting`` leaves
                ``FatalError``: a reboot).
        """
        if not self.can(target):
            raise InvalidTransition(current=self._state, target=target, why=why or "not allowed")
        if target == self._state:
            return False
        old, self._state = self._state, target
        for listener in list(self._listeners):
            listener(old, target)
        return True

    def subscribe(self, listener: Callable[[DeviceState, DeviceState], None]) -> None:
        """Call ``listener(old, new)`` after every change."""
        self._listeners.append(listener)
