"""The simulated hardware: speaker, light, screen, clocks, telemetry and sensors.

One :class:`DeviceModel` per device, shared by everything that can change it: MCP tools
(reference section 4), MQTT commands (:mod:`xiaozhi.commands`) and the serial console (seed 003).
Whatever changed it, the next status reports it.

Telemetry and sensors drift as bounded random walks from a seeded RNG, so a run is repeatable:
seed 003's heartbeat fields (uptime, memory_usage, cpu_usage, wifi_signal, free_heap) and its
sensor types (temperature, humidity, audio_level). No clock is read here: ``now`` (seconds,
monotonic) is passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final

from xiaozhi.payloads import DeviceStatus, DeviceTransport, SensorPayload, StatusPayload
from xiaozhi_sim.identity import DeviceIdentity
from xiaozhi_sim.state import DeviceState, StateMachine

__all__ = [
    "DEFAULT_VOLUME",
    "HEAP_TOTAL_BYTES",
    "SENSOR_UNITS",
    "DeviceModel",
    "Drift",
    "Telemetry",
]

DEFAULT_VOLUME: Final = 70
HEAP_TOTAL_BYTES: Final = 585_000
"""Heap the telemetry's ``free_heap`` is a share of: seed 003's example (65 % used, 204800 B
free) fits it."""

SENSOR_UNITS: Final[dict[str, str]] = {
    "temperature": "celsius",
    "humidity": "percent",
    "audio_level": "db",
}
"""Seed 003 "Sensor Topics": the sensor types every simulated device has, with their units."""


@dataclass(slots=True)
class Drift:
    """A bounded random walk: each :meth:`step` moves by N(0, ``step``) and stays in bounds."""

    value: float
    low: float
    high: float
    step: float
    digits: int = 1

    def next(self, rng: random.Random) -> float:
        """Take one step and return the new value, rounded to ``digits``."""
        moved = self.value + rng.gauss(0.0, self.step)
        if moved < self.low or moved > self.high:  # reflect at the bounds, never stick to one
            moved = self.value - (moved - self.value)
        self.value = min(self.high, max(self.low, moved))
        return round(self.value, self.digits)


@dataclass(slots=True)
class Telemetry:
    """Seed 003 heartbeat and sensor values for one device; deterministic per seed."""

    rng: random.Random
    memory: Drift = field(default_factory=lambda: Drift(60.0, 30.0, 90.0, 1.5))
    cpu: Drift = field(default_factory=lambda: Drift(35.0, 5.0, 95.0, 4.0))
    rssi: Drift = field(default_factory=lambda: Drift(-50.0, -90.0, -30.0, 1.0, digits=0))
    sensors: dict[str, Drift] = field(
        default_factory=lambda: {
            "temperature": Drift(22.5, 15.0, 32.0, 0.1),
            "humidity": Drift(45.0, 25.0, 75.0, 0.5),
            "audio_level": Drift(40.0, 30.0, 90.0, 3.0),
        }
    )

    @classmethod
    def seeded(cls, seed: int, device_id: str) -> Telemetry:
        """Telemetry whose walk depends only on ``seed`` and ``device_id``."""
        return cls(rng=random.Random(f"{seed}|{device_id}|telemetry"))

    def sample(self) -> dict[str, int | float]:
        """The next heartbeat values (memory and CPU in percent, RSSI in dBm, heap in bytes)."""
        memory = self.memory.next(self.rng)
        return {
            "memory_usage": memory,
            "cpu_usage": self.cpu.next(self.rng),
            "wifi_signal": int(self.rssi.next(self.rng)),
            "free_heap": int(HEAP_TOTAL_BYTES * (1 - memory / 100)),
        }

    def sample_sensors(self) -> dict[str, float]:
        """The next reading of every sensor."""
        return {name: drift.next(self.rng) for name, drift in self.sensors.items()}


class DeviceModel:
    """The mutable state of one device's hardware, plus its :class:`StateMachine`.

    Args:
        identity: who the device is.
        boot_time: ``now`` at power-on (monotonic seconds), for ``uptime``.
        seed: seeds the telemetry walk.
    """

    def __init__(self, identity: DeviceIdentity, *, boot_time: float = 0.0, seed: int = 0) -> None:
        self.identity = identity
        self.machine = StateMachine()
        self.telemetry = Telemetry.seeded(seed, identity.device_id)
        self.boot_time = boot_time
        self.volume = DEFAULT_VOLUME  # kept in NVS by firmware, so it survives a reboot
        self.light_on = False
        self.brightness = 255  # LED brightness 0-255 (seed 003 serial `$LED,ON,255#`)
        self.screen_brightness = 75
        self.theme = "light"
        self.reboots = 0
        self.reboot_pending = False  # set by the `self.reboot` tool; the transport reboots
        self.last_response: str | None = None
        self.last_alert: dict[str, str] | None = None
        self.last_emotion: str | None = None
        self.vision: dict[str, Any] | None = None
        self.last_sensors: dict[str, float] = {}
        self.last_telemetry: dict[str, int | float] = {}

    @property
    def state(self) -> DeviceState:
        return self.machine.state

    def uptime(self, now: float) -> int:
        """Whole seconds since the last boot."""
        return max(0, int(now - self.boot_time))

    def set_volume(self, volume: int) -> None:
        """Speaker volume 0-100.

        Raises:
            ValueError: outside 0-100 (the MCP and command layers check before calling).
        """
        if not 0 <= volume <= 100:
            raise ValueError(f"volume {volume} outside 0-100")
        self.volume = volume

    def set_light(self, on: bool, brightness: int | None = None) -> None:
        """Light on or off; ``brightness`` 0-255 when given (kept otherwise)."""
        if brightness is not None:
            if not 0 <= brightness <= 255:
                raise ValueError(f"brightness {brightness} outside 0-255")
            self.brightness = brightness
        self.light_on = on

    def reboot(self, now: float) -> None:
        """What survives a reboot is what firmware keeps in NVS: the volume. The light goes off."""
        self.reboots += 1
        self.reboot_pending = False
        self.boot_time = now
        self.light_on = False
        self.machine.go(DeviceState.STARTING, "reboot")

    def device_status(self) -> dict[str, Any]:
        """``self.get_device_status``'s answer (firmware ``GetDeviceStatusJson``, reference 4)."""
        return {
            "audio_speaker": {"volume": self.volume},
            "screen": {"brightness": self.screen_brightness, "theme": self.theme},
            "light": {"on": self.light_on, "brightness": self.brightness},
            "network": {
                "type": "wifi",
                "ssid": "xiaozhi-sim",
                "signal": _signal_word(int(self.last_telemetry.get("wifi_signal", -50))),
            },
            "state": str(self.state),
        }

    def status_payload(
        self, now: float, *, timestamp: str | None, transport: DeviceTransport | None
    ) -> StatusPayload:
        """A ``connected`` status with fresh telemetry (seed 003 "Status Message").

        The device's own settings ride along as extra fields (``volume``, ``light``,
        ``brightness``, ``state``), so a command's effect shows in the next status.
        """
        self.last_telemetry = self.telemetry.sample()
        return StatusPayload(
            status=DeviceStatus.CONNECTED,
            device_id=self.identity.device_id,
            timestamp=timestamp,
            uptime=self.uptime(now),
            transport=transport,
            firmware_version=self.identity.firmware_version,
            volume=self.volume,
            light="on" if self.light_on else "off",
            brightness=self.brightness,
            state=str(self.state),
            simulated=True,  # the hub keeps it out of Home Assistant (docs/simulator.md)
            **self.last_telemetry,
        )

    def last_will(self) -> StatusPayload:
        """The retained ``disconnected`` status registered as the MQTT last will."""
        return StatusPayload(
            status=DeviceStatus.DISCONNECTED, device_id=self.identity.device_id, simulated=True
        )

    def sensor_payloads(self, *, timestamp: str | None) -> list[SensorPayload]:
        """One reading per sensor type (seed 003 "Sensor Message")."""
        self.last_sensors = self.telemetry.sample_sensors()
        return [
            SensorPayload(
                sensor_type=name,
                value=value,
                unit=SENSOR_UNITS[name],
                device_id=self.identity.device_id,
                timestamp=timestamp,
            )
            for name, value in self.last_sensors.items()
        ]

    def serial_status(self, now: float) -> dict[str, str | int]:
        """The ``KEY=VALUE`` fields of the answer to ``$STA?#`` (seed 003 serial protocol)."""
        return {
            "STATE": str(self.state).upper(),
            "LED": "ON" if self.light_on else "OFF",
            "BRI": self.brightness,
            "VOL": self.volume,
            "UP": self.uptime(now),
        }


def _signal_word(rssi: int) -> str:
    # The firmware reports a word, not dBm, in its status JSON.
    if rssi >= -55:
        return "strong"
    if rssi >= -70:
        return "medium"
    return "weak"
