"""What the hub knows, right now, of an entity's state: for answers that must be true.

State questions ("is the front door locked") and relative changes ("dim the bedroom light",
"louder", "make it warmer") need the current state; the planner reads it here, never
guesses it. The sources, first that knows:

1. the states the pipeline is given (entity id → attributes): the hub's in-memory store of
   ``virtual`` entities, updated by every executed action;
2. a ``virtual`` entity's initial state from the home file (an entity never acted on yet);
   a virtual light without a ``state`` is off;
3. a xiaozhi device's own report, for the entities that are its functions: its LED
   (``light``, ``brightness`` 0-255) and its speaker (``volume`` 0-100) ride along in its
   ``xiaozhi/status/{id}`` telemetry; a device not connected reports nothing true;
4. otherwise nothing: an ``mqtt`` or ``homeassistant`` entity's state is not read back, so
   the answer says it is unknown rather than guess.

Attributes follow Home Assistant: ``state`` (``on``, ``off``, ``locked``, ``heat``...),
``brightness`` 0-255, ``volume_level`` 0.0-1.0, ``temperature`` (the target) and
``current_temperature`` in °C.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xiaozhi_hub.home import Entity, VirtualBinding, XiaozhiBinding
from xiaozhi_hub.registry import DeviceRecord

__all__ = ["DEFAULT_TEMPERATURE_RANGE", "CurrentState"]

DEFAULT_TEMPERATURE_RANGE = (7.0, 35.0)
"""A thermostat's settable range, °C, when its state has no ``min_temp``/``max_temp``
(Home Assistant's climate defaults)."""


def _no_device(_: str) -> DeviceRecord | None:
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class CurrentState:
    """The current state of entities, from the sources of the module docstring.

    Args:
        states: entity id → attributes (the virtual store; read, never written).
        devices: device id → the registry's record (``Registry.device``), for xiaozhi
            device functions.
        speaking_device: the record of the device that heard the command, if any.
    """

    states: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    devices: Callable[[str], DeviceRecord | None] = _no_device
    speaking_device: DeviceRecord | None = None

    def of(self, entity: Entity) -> Mapping[str, Any] | None:
        """The entity's attributes, or None when nothing true is known."""
        known = self.states.get(entity.entity_id)
        binding = entity.binding
        if isinstance(binding, VirtualBinding):
            state = known if known is not None else binding.state
            return {"state": "off", **state} if entity.domain == "light" else state
        if known is not None:
            return known
        if isinstance(binding, XiaozhiBinding):
            return self._device_function(entity, binding)
        return None

    def _device_function(self, entity: Entity, binding: XiaozhiBinding) -> Mapping[str, Any] | None:
        record = self.devices(binding.device_id)
        if record is None or not record.connected:
            return None
        telemetry = record.telemetry
        if entity.domain == "light" and telemetry.get("light") in ("on", "off"):
            state: dict[str, Any] = {"state": telemetry["light"]}
            brightness = _number(telemetry.get("brightness"))
            if brightness is not None:
                state["brightness"] = brightness
            return state
        volume = _number(telemetry.get("volume"))
        if entity.domain == "media_player" and volume is not None:
            return {"state": "on", "volume_level": volume / 100}
        return None

    def state(self, entity: Entity) -> str | None:
        """The ``state`` word (``on``, ``locked``...), or None when unknown."""
        value = (self.of(entity) or {}).get("state")
        return value if isinstance(value, str) else None

    def brightness_pct(self, entity: Entity) -> int | None:
        """0-100 (0 when off; 100 when on without a brightness), or None when unknown."""
        state = self.of(entity)
        if state is None:
            return None
        if state.get("state") == "off":
            return 0
        brightness = _number(state.get("brightness"))
        if brightness is not None:
            return round(brightness * 100 / 255)
        return 100 if state.get("state") == "on" else None

    def volume_pct(self, entity: Entity) -> int | None:
        """0-100, or None when unknown."""
        level = _number((self.of(entity) or {}).get("volume_level"))
        return None if level is None else round(level * 100)

    def last_audible_volume_pct(self, entity: Entity) -> int | None:
        """The last non-zero volume, 1-100, for "unmute"; None when never known."""
        binding = entity.binding
        if isinstance(binding, XiaozhiBinding):
            record = self.devices(binding.device_id)
            if record is not None and record.last_audible_volume:
                return record.last_audible_volume
        current = self.volume_pct(entity)
        return current if current else None

    def target_temperature(self, entity: Entity) -> float | None:
        """The temperature a thermostat is set to, °C, or None when unknown."""
        return _number((self.of(entity) or {}).get("temperature"))

    def temperature_range(self, entity: Entity) -> tuple[float, float]:
        """The lowest and highest temperature a thermostat can be set to, °C."""
        state = self.of(entity) or {}
        low, high = DEFAULT_TEMPERATURE_RANGE
        return _number(state.get("min_temp")) or low, _number(state.get("max_temp")) or high

    def current_temperature(self, entity: Entity) -> float | None:
        """The temperature a thermostat measures, °C, or None when unknown."""
        return _number((self.of(entity) or {}).get("current_temperature"))
