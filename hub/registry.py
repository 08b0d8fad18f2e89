"""The fleet registry as pure state: devices seen, groups, and the retained bridge snapshots.

No MQTT here: the hub's MQTT unit feeds it parsed payloads (``apply_status``,
``apply_sensor``, ``apply_connection``, ``mark_edge_offline``) with the time as an argument,
and publishes what the returned :class:`Change` says changed. Bridge requests
(:mod:`xiaozhi_hub.bridge_api`) call the editing methods (``rename``, ``remove``,
``group_*``), which raise :class:`RegistryError` with a message fit for the response.

Devices listed in the home file are known from the start (with their name, area and groups);
any other device id met on the topic tree is learnt, named by its id, without an area.
Group membership lives in one place, the group (a device's ``groups`` in the home file are
folded in at start). ``members_of`` is the fan-out list for ``xiaozhi/commands/group/{id}``
(design.md §5); broadcasts need none, every device reads the broadcast topic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from xiaozhi.commands import DeviceCommand
from xiaozhi.errors import OperationFailed
from xiaozhi.payloads import (
    ConnectionEvent,
    DeviceStatus,
    DeviceTransport,
    SensorPayload,
    StatusPayload,
)
from xiaozhi.timestamps import wire_timestamp
from xiaozhi.topics import validate_device_id, validate_id
from xiaozhi_hub.home import Home

__all__ = [
    "TELEMETRY_FIELDS",
    "Change",
    "DeviceRecord",
    "GroupRecord",
    "Registry",
    "RegistryError",
    "SensorReading",
]

TELEMETRY_FIELDS = ("uptime", "memory_usage", "cpu_usage", "wifi_signal", "free_heap")
"""Status fields kept as telemetry (seed 003 "Status Message"; units in StatusPayload)."""

_STATUS_FIELDS = {
    "status",
    "device_id",
    "timestamp",
    "transport",
    "edge_id",
    "firmware_version",
    "simulated",
}
_MAX_NAME_CHARS = 100


class RegistryError(OperationFailed):
    """A registry edit that cannot be done (unknown device or group, bad name...)."""


@dataclass(frozen=True, slots=True)
class SensorReading:
    value: bool | int | float | str
    unit: str | None
    timestamp: str | None  # as the device sent it
    received_at: float  # epoch seconds when the hub got it


@dataclass(slots=True)
class DeviceRecord:
    """What the hub knows about one device."""

    device_id: str
    name: str
    area: str | None = None
    model: str | None = None
    configured: bool = False  # listed in the home file
    status: DeviceStatus | None = None  # None: never heard from
    telemetry: dict[str, Any] = field(default_factory=dict)
    sensors: dict[str, SensorReading] = field(default_factory=dict)
    last_seen: float | None = None  # epoch seconds
    transport: DeviceTransport | None = None
    edge_id: str | None = None
    firmware_version: str | None = None
    last_audible_volume: int | None = None  # the last non-zero ``volume`` reported: unmute
    connections: int = 0  # times it came (back): tells a new connection from the old one
    simulated: bool = False  # its status or connection event said ``"simulated": true``

    @property
    def connected(self) -> bool:
        return self.status is DeviceStatus.CONNECTED

    def to_json_dict(self) -> dict[str, Any]:
        """Everything known, for the REST API and ``intent/test``."""
        return {
            "id": self.device_id,
            "name": self.name,
            "area": self.area,
            "model": self.model,
            "configured": self.configured,
            "status": self.status.value if self.status else None,
            "transport": self.transport.value if self.transport else None,
            "edge_id": self.edge_id,
            "firmware_version": self.firmware_version,
            "simulated": self.simulated,
            "last_seen": _iso(self.last_seen),
            "telemetry": dict(self.telemetry),
            "sensors": {
                kind: {"value": r.value, "unit": r.unit, "timestamp": r.timestamp}
                for kind, r in sorted(self.sensors.items())
            },
        }


@dataclass(slots=True)
class GroupRecord:
    group_id: str
    name: str
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Change:
    """What one update changed, so the caller re-publishes only that.

    Attributes:
        device_id: the device concerned.
        new_device: first time this device was seen (it was learnt).
        connected: True/False when the connection state flipped, else None.
        snapshot: ``xiaozhi/bridge/devices`` must be re-published.
        discovery: the device's Home Assistant discovery configs must be re-published.
    """

    device_id: str
    new_device: bool = False
    connected: bool | None = None
    snapshot: bool = False
    discovery: bool = False


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return wire_timestamp(epoch)


class Registry:
    """Devices and groups, starting from the home file's."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._devices: dict[str, DeviceRecord] = {
            d.id: DeviceRecord(d.id, d.name, area=d.area, model=d.model, configured=True)
            for d in home.devices
        }
        self._groups: dict[str, GroupRecord] = {
            g.id: GroupRecord(g.id, g.name, members)
            for g, members in zip(home.groups, home.group_members().values(), strict=True)
        }
        self._removed: set[str] = set()  # removed by an operator, until they really return

    # -- reading -------------------------------------------------------------------------

    def device(self, device_id: str) -> DeviceRecord | None:
        return self._devices.get(device_id)

    def devices(self) -> list[DeviceRecord]:
        return [self._devices[k] for k in sorted(self._devices)]

    def group(self, group_id: str) -> GroupRecord | None:
        return self._groups.get(group_id)

    def groups(self) -> list[GroupRecord]:
        return [self._groups[k] for k in sorted(self._groups)]

    def groups_of(self, device_id: str) -> list[str]:
        return [g.group_id for g in self.groups() if device_id in g.members]

    def members_of(self, group_id: str) -> list[str]:
        """Device ids to fan a ``commands/group/{group_id}`` command out to.

        Raises:
            RegistryError: unknown group.
        """
        return list(self._require_group(group_id).members)

    def device_areas(self) -> Mapping[str, str | None]:
        """Device id → area id, for :func:`xiaozhi_hub.resolve.resolve`: a live read-only
        view, not a copy (every voice command asks; a copy cost O(devices) each time)."""
        return _DeviceAreas(self._devices)

    def area_of(self, device_id: str | None) -> str | None:
        """The device's area id; None for an unknown device or one without an area."""
        record = self._devices.get(device_id) if device_id else None
        return record.area if record else None

    # -- updates from the topic tree ---------------------------------------------------

    def learn(self, device_id: str) -> tuple[DeviceRecord, bool]:
        """The record for ``device_id``, created if unknown; True when it was created.

        Raises:
            InvalidTopic: ``device_id`` is not a valid device id.
        """
        record = self._devices.get(device_id)
        if record is not None:
            return record, False
        validate_device_id(device_id)
        record = DeviceRecord(device_id, device_id)
        self._devices[device_id] = record
        self._removed.discard(device_id)  # it came back: known again, as z2m re-joins
        return record, True

    def is_removed(self, device_id: str) -> bool:
        """An operator removed this device and it has not been heard from since: its
        retained status and sensors (still on the broker) must not bring it back."""
        return device_id in self._removed

    def apply_status(self, payload: StatusPayload, now: float) -> Change:
        """A ``xiaozhi/status/{device_id}`` message (retained; also an MQTT device's LWT)."""
        record, new = self.learn(payload.device_id)
        was = record.status
        before = (record.transport, record.edge_id, record.firmware_version)
        if was is not payload.status and payload.status is DeviceStatus.CONNECTED:
            record.connections += 1
        record.status = payload.status
        record.last_seen = now
        if payload.transport is not None:
            record.transport = payload.transport
        if payload.edge_id is not None:
            record.edge_id = payload.edge_id
        if payload.firmware_version is not None:
            record.firmware_version = payload.firmware_version
        marked = record.simulated
        if payload.simulated is not None:
            record.simulated = payload.simulated
        values = payload.model_dump(exclude_none=True)
        new_telemetry = not values.keys() - _STATUS_FIELDS <= record.telemetry.keys()
        for key, value in values.items():
            if key not in _STATUS_FIELDS:
                record.telemetry[key] = value  # the five telemetry fields and extras (volume...)
        volume = values.get("volume")
        if isinstance(volume, int | float) and not isinstance(volume, bool) and 0 < volume <= 100:
            record.last_audible_volume = round(volume)
        flipped = was != payload.status
        firmware_changed = before[2] != record.firmware_version
        return Change(
            payload.device_id,
            new_device=new,
            connected=payload.status is DeviceStatus.CONNECTED if flipped else None,
            snapshot=new
            or flipped
            or marked != record.simulated
            or before != (record.transport, record.edge_id, record.firmware_version),
            # A telemetry field seen for the first time gets its Home Assistant entity.
            discovery=new or firmware_changed or new_telemetry or marked != record.simulated,
        )

    def apply_confirmed_command(
        self, device_id: str, command: str, parameters: Mapping[str, Any]
    ) -> None:
        """A device confirmed a ``set_volume`` or ``led`` command (its ``command_result``):
        what it now is goes into its telemetry at once, so "louder" or "is the office light
        on" right after it are answered from the new value, not from the last status."""
        record = self._devices.get(device_id)
        if record is None:
            return
        if command == DeviceCommand.SET_VOLUME.value:
            volume = parameters.get("volume")
            if isinstance(volume, int) and not isinstance(volume, bool) and 0 <= volume <= 100:
                record.telemetry["volume"] = volume
                if volume > 0:
                    record.last_audible_volume = volume
        elif command == DeviceCommand.LED.value and isinstance(parameters.get("on"), bool):
            record.telemetry["light"] = "on" if parameters["on"] else "off"
            brightness = parameters.get("brightness")
            if isinstance(brightness, int) and not isinstance(brightness, bool):
                record.telemetry["brightness"] = brightness

    def apply_sensor(self, payload: SensorPayload, now: float) -> Change:
        """A ``xiaozhi/sensors/{device_id}/{sensor_type}`` reading."""
        record, new = self.learn(payload.device_id)
        first = payload.sensor_type not in record.sensors
        record.sensors[payload.sensor_type] = SensorReading(
            payload.value, payload.unit, payload.timestamp, now
        )
        record.last_seen = now
        return Change(
            payload.device_id, new_device=new, snapshot=new or first, discovery=new or first
        )

    def apply_connection(self, event: ConnectionEvent, now: float) -> Change:
        """A ``device_connected`` / ``device_disconnected`` event from an edge or device."""
        record, new = self.learn(event.device_id)
        status = (
            DeviceStatus.CONNECTED
            if event.event_type == "device_connected"
            else DeviceStatus.DISCONNECTED
        )
        flipped = record.status != status
        before = (record.transport, record.edge_id, record.simulated)
        if flipped and status is DeviceStatus.CONNECTED:
            record.connections += 1
        record.status = status
        record.transport = event.transport
        record.edge_id = event.edge_id
        if status is DeviceStatus.CONNECTED:  # each connection says what it is
            record.simulated = bool(event.simulated)
        record.last_seen = now
        return Change(
            event.device_id,
            new_device=new,
            connected=status is DeviceStatus.CONNECTED if flipped else None,
            snapshot=new
            or flipped
            or before != (record.transport, record.edge_id, record.simulated),
            discovery=new or before[2] != record.simulated,
        )

    def mark_edge_offline(self, edge_id: str) -> list[str]:
        """An edge's LWT said offline: its connected devices are now disconnected.

        Returns:
            The ids of the devices that were connected through ``edge_id``; the caller
            publishes a retained ``disconnected`` status for each (design.md §5).
        """
        gone = []
        for record in self.devices():
            if record.edge_id == edge_id and record.connected:
                record.status = DeviceStatus.DISCONNECTED
                gone.append(record.device_id)
        return gone

    # -- edits (bridge requests) ---------------------------------------------------------

    def rename(self, device_id: str, new_name: str) -> str:
        """Give a device a new display name; its id (and every unique_id) stays.

        Returns:
            The old name.

        Raises:
            RegistryError: unknown device, or a name that is empty or too long.
        """
        record = self._require_device(device_id)
        name = new_name.strip() if isinstance(new_name, str) else ""
        if not name or len(name) > _MAX_NAME_CHARS:
            raise RegistryError(
                f"invalid name {new_name!r}: expected 1-{_MAX_NAME_CHARS} characters"
            )
        old, record.name = record.name, name
        return old

    def remove(self, device_id: str) -> DeviceRecord:
        """Forget a device (and its group memberships); it is learnt again if it reappears.

        Raises:
            RegistryError: unknown device.
        """
        record = self._require_device(device_id)
        del self._devices[device_id]
        self._removed.add(device_id)
        for group in self._groups.values():
            if device_id in group.members:
                group.members.remove(device_id)
        return record

    def select(
        self,
        now: float,
        *,
        simulated: bool | None = None,
        not_seen_for_seconds: float | None = None,
    ) -> list[DeviceRecord]:
        """The learnt devices (not in the home file) a bulk ``device/remove`` takes: those
        marked simulated (``simulated=True``) or not (False), and/or disconnected ones last
        heard from more than ``not_seen_for_seconds`` before ``now``; both given: both hold.

        Raises:
            RegistryError: neither filter given (a bulk removal of everything is refused).
        """
        if simulated is None and not_seen_for_seconds is None:
            raise RegistryError("a bulk removal needs 'simulated' or 'not_seen_for_seconds'")
        chosen = []
        for record in self.devices():
            if record.configured:
                continue
            if simulated is not None and record.simulated is not simulated:
                continue
            if not_seen_for_seconds is not None and (
                record.connected or (record.last_seen or 0.0) >= now - not_seen_for_seconds
            ):
                continue
            chosen.append(record)
        return chosen

    def forget(self, device_id: str) -> DeviceRecord:
        """Forget a device without remembering it (as :meth:`expire`): the caller clears its
        retained status and readings, so nothing brings it back but the device itself.

        Raises:
            RegistryError: unknown device.
        """
        record = self._require_device(device_id)
        del self._devices[device_id]
        for group in self._groups.values():
            if device_id in group.members:
                group.members.remove(device_id)
        return record

    def set_area(self, device_id: str, area: str | None) -> str | None:
        """Put a device in one of the home's areas (None: in none).

        Returns:
            The area it was in.

        Raises:
            RegistryError: unknown device or area.
        """
        record = self._require_device(device_id)
        if area is not None and self.home.area(area) is None:
            known = ", ".join(a.id for a in self.home.areas) or "none"
            raise RegistryError(f"unknown area {area!r} (known: {known})")
        old, record.area = record.area, area
        return old

    # -- the operator's edits, kept across restarts -----------------------------------------

    def edits(self) -> dict[str, Any]:
        """What bridge requests changed, as JSON: every device's name and area, the removed
        ids and the groups. The hub writes it after each edit and applies it over the home
        file at start (:meth:`apply_edits`), as zigbee2mqtt keeps renames in its
        configuration."""
        return {
            "devices": {
                d.device_id: {"name": d.name, "area": d.area, "configured": d.configured}
                for d in self.devices()
            },
            "removed": sorted(self._removed),
            "groups": [
                {"id": g.group_id, "name": g.name, "members": list(g.members)}
                for g in self.groups()
            ],
        }

    def apply_edits(self, edits: Mapping[str, Any]) -> list[str]:
        """Apply what :meth:`edits` wrote, over the home file's devices and groups.

        A device of the home file keeps its place even when the edits predate it; one the
        edits name but the home file no longer has is dropped if it came from the home file,
        kept (learnt) otherwise. Areas the home no longer has are left out.

        Returns:
            One sentence per entry that could not be applied (logged by the caller).
        """
        problems: list[str] = []
        for device_id, fields in dict(edits.get("devices") or {}).items():
            if fields.get("configured") and device_id not in self._devices:
                continue  # taken out of the home file since: the file wins
            try:
                self.learn(device_id)
                self.rename(device_id, str(fields.get("name") or device_id))
                self.set_area(device_id, fields.get("area"))
            except (RegistryError, ValueError) as err:
                problems.append(f"device {device_id!r}: {err}")
        for device_id in edits.get("removed") or ():
            if device_id in self._devices:
                self.remove(device_id)
            else:
                self._removed.add(device_id)
        if "groups" in edits:
            self._groups = {}
            for group in edits.get("groups") or ():
                try:
                    self.group_add(str(group["id"]), group.get("name"))
                    for member in group.get("members") or ():
                        if member in self._devices:
                            self.group_members_add(str(group["id"]), member)
                except (RegistryError, KeyError, TypeError) as err:
                    problems.append(f"group {group!r}: {err}")
        return problems

    def group_add(self, group_id: str, name: str | None = None) -> GroupRecord:
        """Create an empty group.

        Raises:
            RegistryError: the id is not valid or already used.
        """
        try:
            validate_id(group_id, what="group id")
        except ValueError as err:
            raise RegistryError(str(err)) from err
        if group_id in self._groups:
            raise RegistryError(f"group {group_id!r} already exists")
        label = (name or "").strip() or group_id
        if len(label) > _MAX_NAME_CHARS:
            raise RegistryError(f"invalid name {name!r}: expected 1-{_MAX_NAME_CHARS} characters")
        group = GroupRecord(group_id, label)
        self._groups[group_id] = group
        return group

    def group_remove(self, group_id: str) -> GroupRecord:
        """Delete a group (its devices stay). Raises RegistryError for an unknown group."""
        group = self._require_group(group_id)
        del self._groups[group_id]
        return group

    def group_members_add(self, group_id: str, device_id: str) -> bool:
        """Add a known device to a group; False if it already was a member.

        Raises:
            RegistryError: unknown group or device.
        """
        group = self._require_group(group_id)
        self._require_device(device_id)
        if device_id in group.members:
            return False
        group.members.append(device_id)
        return True

    def group_members_remove(self, group_id: str, device_id: str) -> None:
        """Take a device out of a group.

        Raises:
            RegistryError: unknown group, or the device is not a member.
        """
        group = self._require_group(group_id)
        if device_id not in group.members:
            raise RegistryError(f"device {device_id!r} is not a member of group {group_id!r}")
        group.members.remove(device_id)

    def _require_device(self, device_id: str) -> DeviceRecord:
        record = self._devices.get(device_id)
        if record is None:
            raise RegistryError(f"unknown device {device_id!r}")
        return record

    def _require_group(self, group_id: str) -> GroupRecord:
        group = self._groups.get(group_id)
        if group is None:
            known = ", ".join(sorted(self._groups)) or "none"
            raise RegistryError(f"unknown group {group_id!r} (known: {known})")
        return group

    # -- retained snapshots --------------------------------------------------------------

    def snapshot_members(self, limit: int) -> list[DeviceRecord]:
        """The devices ``bridge/devices`` lists when at most ``limit`` fit: the home file's
        first, then connected ones, then the most recently seen (zigbee2mqtt-style snapshots
        are for hundreds of devices; a fleet of 10,000 one-time ids must not make a
        multi-megabyte retained message)."""
        devices = self.devices()
        if len(devices) <= limit:
            return devices
        ranked = sorted(
            devices, key=lambda d: (not d.configured, not d.connected, -(d.last_seen or 0.0))
        )
        return sorted(ranked[:limit], key=lambda d: d.device_id)

    def expire(self, now: float, older_than: float) -> list[DeviceRecord]:
        """Forget learnt devices (not in the home file) that are disconnected and were last
        heard from more than ``older_than`` seconds before ``now``; returns them.

        Unlike :meth:`remove`, nothing is remembered: a device that speaks again is simply
        learnt again.
        """
        gone = [
            d
            for d in self._devices.values()
            if not d.configured and not d.connected and (d.last_seen or 0.0) < now - older_than
        ]
        for record in gone:
            del self._devices[record.device_id]
            for group in self._groups.values():
                if record.device_id in group.members:
                    group.members.remove(record.device_id)
        return gone

    def snapshot_devices(self, limit: int | None = None) -> list[dict[str, Any]]:
        """``xiaozhi/bridge/devices``: one entry per device (at most ``limit``, see
        :meth:`snapshot_members`), without fast-changing values (telemetry, readings, last
        seen), so it is re-published only when :class:`Change` says so.
        """
        members = self.devices() if limit is None else self.snapshot_members(limit)
        groups_of: dict[str, list[str]] = {}
        for group in self.groups():
            for member in group.members:
                groups_of.setdefault(member, []).append(group.group_id)
        return [
            {
                "id": d.device_id,
                "name": d.name,
                "area": d.area,
                "area_name": self.home.area_name(d.area),
                "model": d.model,
                "configured": d.configured,
                "groups": groups_of.get(d.device_id, []),
                "status": d.status.value if d.status else None,
                "transport": d.transport.value if d.transport else None,
                "edge_id": d.edge_id,
                "firmware_version": d.firmware_version,
                "simulated": d.simulated,
                "sensors": sorted(d.sensors),
            }
            for d in members
        ]

    def snapshot_groups(self) -> list[dict[str, Any]]:
        """``xiaozhi/bridge/groups``: ``[{"id","name","members"}]`` (zigbee2mqtt's shape)."""
        return [
            {"id": g.group_id, "name": g.name, "members": list(g.members)} for g in self.groups()
        ]

    def info(
        self,
        *,
        version: str,
        config: dict[str, Any] | None = None,
        snapshot_limit: int | None = None,
    ) -> dict[str, Any]:
        """``xiaozhi/bridge/info``: version, counts and the (secret-free) config given;
        ``devices.in_snapshot`` says how many of them ``bridge/devices`` lists."""
        devices = self.devices()
        known = len(devices)
        return {
            "version": version,
            "devices": {
                "known": known,
                "connected": sum(1 for d in devices if d.connected),
                "in_snapshot": known if snapshot_limit is None else min(known, snapshot_limit),
            },
            "groups": len(self._groups),
            "home": {
                "floors": len(self.home.floors),
                "areas": len(self.home.areas),
                "entities": len(self.home.entities),
            },
            "config": dict(config or {}),
        }


class _DeviceAreas(Mapping[str, "str | None"]):
    """:meth:`Registry.device_areas`: the registry's devices seen as id → area id."""

    __slots__ = ("_devices",)

    def __init__(self, devices: Mapping[str, DeviceRecord]) -> None:
        self._devices = devices

    def __getitem__(self, device_id: str) -> str | None:
        return self._devices[device_id].area

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)
