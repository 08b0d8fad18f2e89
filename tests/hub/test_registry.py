"""The fleet registry (xiaozhi_hub.registry): pure state fed from parsed payloads."""

from __future__ import annotations

import pytest

from xiaozhi.errors import InvalidTopic
from xiaozhi.payloads import (
    ConnectionEvent,
    DeviceStatus,
    DeviceTransport,
    SensorPayload,
    StatusPayload,
)
from xiaozhi_hub.home import Home
from xiaozhi_hub.registry import Change, Registry, RegistryError

WS = DeviceTransport.WEBSOCKET


def status(device_id: str, state: str = "connected", **fields: object) -> StatusPayload:
    return StatusPayload.from_obj({"status": state, "device_id": device_id, **fields})


def test_home_devices_and_groups_are_known_at_start(registry: Registry) -> None:
    kitchen = registry.device("demo_kitchen")
    assert kitchen is not None
    assert (kitchen.name, kitchen.area, kitchen.configured, kitchen.status) == (
        "Kitchen speaker",
        "kitchen",
        True,
        None,
    )
    assert registry.members_of("downstairs") == ["demo_living_room", "demo_kitchen"]
    assert registry.groups_of("demo_kitchen") == ["all_speakers", "downstairs"]
    assert registry.device_areas() == {
        "demo_kitchen": "kitchen",
        "demo_living_room": "living_room",
        "demo_office": "office",
    }
    assert registry.area_of("demo_office") == "office"
    assert registry.area_of(None) is None
    assert registry.area_of("unknown") is None


def test_status_learns_an_unknown_device(registry: Registry) -> None:
    change = registry.apply_status(
        status("aabbccddeeff", uptime=60, wifi_signal=-50, transport="websocket", edge_id="e1"),
        now=1_700_000_000.0,
    )
    assert change == Change(
        "aabbccddeeff", new_device=True, connected=True, snapshot=True, discovery=True
    )
    record = registry.device("aabbccddeeff")
    assert record is not None
    assert (record.name, record.area, record.configured) == ("aabbccddeeff", None, False)
    assert record.telemetry == {"uptime": 60, "wifi_signal": -50}
    assert (record.transport, record.edge_id) == (WS, "e1")
    assert record.to_json_dict()["last_seen"] == "2023-11-14T22:13:20.000Z"


def test_status_changes(registry: Registry) -> None:
    first = registry.apply_status(status("demo_kitchen", uptime=1), now=1.0)
    # uptime is new: its Home Assistant sensor is discovered now
    assert first == Change("demo_kitchen", connected=True, snapshot=True, discovery=True)
    same = registry.apply_status(status("demo_kitchen", uptime=2), now=2.0)
    assert same == Change("demo_kitchen")
    more = registry.apply_status(status("demo_kitchen", uptime=2, volume=40), now=2.0)
    assert more == Change("demo_kitchen", discovery=True)
    record = registry.device("demo_kitchen")
    assert record is not None
    assert record.telemetry == {"uptime": 2, "volume": 40}  # extras are kept as telemetry
    firmware = registry.apply_status(status("demo_kitchen", firmware_version="1.7"), now=3.0)
    assert firmware == Change("demo_kitchen", snapshot=True, discovery=True)
    gone = registry.apply_status(status("demo_kitchen", "disconnected"), now=4.0)
    assert gone == Change("demo_kitchen", connected=False, snapshot=True)
    assert record.telemetry["uptime"] == 2  # the last known values stay
    assert record.last_seen == 4.0


def test_the_last_audible_volume_is_remembered_for_unmute(registry: Registry) -> None:
    record = registry.device("demo_kitchen")
    assert record is not None
    assert record.last_audible_volume is None
    for volume, audible in ((40, 40), (0, 40), (62.4, 62), (True, 62), ("loud", 62), (0, 62)):
        registry.apply_status(status("demo_kitchen", volume=volume), now=1.0)
        assert record.last_audible_volume == audible, volume


def test_sensor_readings(registry: Registry) -> None:
    reading = SensorPayload(
        sensor_type="temperature", value=21.5, unit="°C", device_id="demo_office"
    )
    assert registry.apply_sensor(reading, now=5.0) == Change(
        "demo_office", snapshot=True, discovery=True
    )
    assert registry.apply_sensor(reading, now=6.0) == Change("demo_office")
    record = registry.device("demo_office")
    assert record is not None
    assert record.sensors["temperature"].value == 21.5
    assert record.to_json_dict()["sensors"] == {
        "temperature": {"value": 21.5, "unit": "°C", "timestamp": None}
    }
    new = SensorPayload(sensor_type="humidity", value=40, device_id="x1")
    assert registry.apply_sensor(new, now=7.0).new_device


def test_connection_events(registry: Registry) -> None:
    up = ConnectionEvent(
        event_type="device_connected", device_id="demo_kitchen", transport=WS, edge_id="e1"
    )
    assert registry.apply_connection(up, now=1.0) == Change(
        "demo_kitchen", connected=True, snapshot=True
    )
    assert registry.apply_connection(up, now=2.0) == Change("demo_kitchen")
    down = ConnectionEvent(
        event_type="device_disconnected", device_id="demo_kitchen", transport=WS, edge_id="e1"
    )
    assert registry.apply_connection(down, now=3.0).connected is False


def test_edge_offline_disconnects_its_devices(registry: Registry) -> None:
    registry.apply_status(status("demo_kitchen", transport="websocket", edge_id="e1"), now=1.0)
    registry.apply_status(status("demo_office", transport="websocket", edge_id="e2"), now=1.0)
    registry.apply_status(status("aa11", transport="websocket", edge_id="e1"), now=1.0)
    registry.apply_status(
        status("aa22", "disconnected", transport="websocket", edge_id="e1"), now=1.0
    )
    assert registry.mark_edge_offline("e1") == ["aa11", "demo_kitchen"]
    assert registry.device("demo_kitchen").status is DeviceStatus.DISCONNECTED  # type: ignore[union-attr]
    assert registry.device("demo_office").connected  # type: ignore[union-attr]
    assert registry.mark_edge_offline("e1") == []


def test_invalid_device_id_is_refused(registry: Registry) -> None:
    with pytest.raises(InvalidTopic):
        registry.learn("broadcast")


def test_rename_keeps_the_id(registry: Registry) -> None:
    assert registry.rename("demo_kitchen", "  Cooking corner ") == "Kitchen speaker"
    assert registry.device("demo_kitchen").name == "Cooking corner"  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="unknown device 'nope'"):
        registry.rename("nope", "x")
    with pytest.raises(RegistryError, match="invalid name"):
        registry.rename("demo_kitchen", "   ")


def test_remove_forgets_device_and_memberships(registry: Registry) -> None:
    record = registry.remove("demo_kitchen")
    assert record.device_id == "demo_kitchen"
    assert registry.device("demo_kitchen") is None
    assert registry.members_of("downstairs") == ["demo_living_room"]
    with pytest.raises(RegistryError):
        registry.remove("demo_kitchen")
    # it is learnt again when it shows up
    assert registry.apply_status(status("demo_kitchen"), now=1.0).new_device


def test_groups(registry: Registry) -> None:
    group = registry.group_add("kids", " Kids' rooms ")
    assert (group.group_id, group.name, group.members) == ("kids", "Kids' rooms", [])
    assert registry.group_add("guests").name == "guests"
    with pytest.raises(RegistryError, match="already exists"):
        registry.group_add("kids")
    with pytest.raises(RegistryError, match="invalid group id"):
        registry.group_add("Kids Rooms")
    with pytest.raises(RegistryError, match="invalid name"):
        registry.group_add("long", "x" * 101)
    assert registry.group_members_add("kids", "demo_office") is True
    assert registry.group_members_add("kids", "demo_office") is False
    assert registry.members_of("kids") == ["demo_office"]
    with pytest.raises(RegistryError, match="unknown device"):
        registry.group_members_add("kids", "ghost")
    with pytest.raises(RegistryError, match=r"unknown group 'nope' \(known: all_speakers"):
        registry.group_members_add("nope", "demo_office")
    registry.group_members_remove("kids", "demo_office")
    with pytest.raises(RegistryError, match="not a member"):
        registry.group_members_remove("kids", "demo_office")
    assert registry.group_remove("kids").group_id == "kids"
    with pytest.raises(RegistryError):
        registry.members_of("kids")


def test_snapshots(registry: Registry) -> None:
    registry.apply_status(
        status("demo_kitchen", transport="websocket", edge_id="e1", uptime=9), 1.0
    )
    registry.apply_sensor(
        SensorPayload(sensor_type="temperature", value=20, device_id="demo_kitchen"), now=1.0
    )
    devices = {d["id"]: d for d in registry.snapshot_devices()}
    assert devices["demo_kitchen"] == {
        "id": "demo_kitchen",
        "name": "Kitchen speaker",
        "area": "kitchen",
        "area_name": "Kitchen",
        "model": "xiaozhi simulator",
        "configured": True,
        "groups": ["all_speakers", "downstairs"],
        "status": "connected",
        "transport": "websocket",
        "edge_id": "e1",
        "firmware_version": None,
        "simulated": False,
        "sensors": ["temperature"],
    }
    assert devices["demo_office"]["status"] is None
    assert registry.snapshot_groups() == [
        {
            "id": "all_speakers",
            "name": "All speakers",
            "members": ["demo_living_room", "demo_kitchen", "demo_office"],
        },
        {"id": "downstairs", "name": "Downstairs", "members": ["demo_living_room", "demo_kitchen"]},
    ]
    assert registry.info(version="0.1.0", config={"base_topic": "xiaozhi"}) == {
        "version": "0.1.0",
        "devices": {"known": 3, "connected": 1, "in_snapshot": 3},
        "groups": 2,
        "home": {"floors": 2, "areas": 4, "entities": 6},
        "config": {"base_topic": "xiaozhi"},
    }
    assert registry.device("demo_office").to_json_dict()["last_seen"] is None  # type: ignore[union-attr]


def test_edits_round_trip_over_the_home_file(registry: Registry, home: Home) -> None:
    registry.apply_status(status("aa11"), now=1.0)
    registry.rename("aa11", "Hall speaker")
    registry.set_area("aa11", "office")
    registry.remove("demo_office")
    registry.group_add("upstairs")
    registry.group_members_add("upstairs", "aa11")
    saved = registry.edits()

    fresh = Registry(home)
    assert fresh.apply_edits(saved) == []
    assert fresh.edits() == saved
    assert fresh.device("demo_office") is None
    assert fresh.is_removed("demo_office")
    # It speaks again: known again, no longer removed.
    fresh.apply_status(status("demo_office"), now=2.0)
    assert not fresh.is_removed("demo_office")


def test_edits_that_no_longer_fit_the_home_are_reported_not_applied(
    registry: Registry, home: Home
) -> None:
    problems = registry.apply_edits(
        {
            "devices": {
                "gone_from_file": {"name": "Old", "area": None, "configured": True},
                "aa11": {"name": "Hall", "area": "attic", "configured": False},
                "Bad Id": {"name": "x", "area": None, "configured": False},
            },
            "removed": ["never_seen"],
            "groups": [{"id": "ok", "members": ["aa11", "unknown"]}, {"name": "no id"}],
        }
    )
    assert registry.device("gone_from_file") is None  # the home file wins
    assert len(problems) == 3, problems
    assert "attic" in problems[0]
    assert registry.is_removed("never_seen")
    assert [(g.group_id, g.members) for g in registry.groups()] == [("ok", ["aa11"])]


def test_set_area_refuses_an_unknown_area(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="unknown area 'attic'"):
        registry.set_area("demo_kitchen", "attic")
    assert registry.set_area("demo_kitchen", None) == "kitchen"


def test_the_snapshot_keeps_home_devices_then_connected_then_recent(registry: Registry) -> None:
    for number in range(6):
        device_id = f"learnt{number}"
        state = "connected" if number in (1, 4) else "disconnected"
        registry.apply_status(status(device_id, state), now=float(number))
    listed = [d["id"] for d in registry.snapshot_devices(7)]
    # 3 from the home file, the 2 connected, then the most recently seen (5, then 3)
    assert listed == sorted(
        [
            "demo_kitchen",
            "demo_living_room",
            "demo_office",
            "learnt1",
            "learnt4",
            "learnt5",
            "learnt3",
        ]
    )
    assert len(registry.snapshot_devices()) == 9
    assert registry.info(version="x", snapshot_limit=7)["devices"] == {
        "known": 9,
        "connected": 2,
        "in_snapshot": 7,
    }


def test_learnt_devices_gone_long_enough_expire(registry: Registry) -> None:
    registry.apply_status(status("old", "disconnected"), now=100.0)
    registry.apply_status(status("recent", "disconnected"), now=950.0)
    registry.apply_status(status("online"), now=100.0)  # connected: stays however old
    registry.apply_status(status("demo_office", "disconnected"), now=0.0)  # home file: stays
    registry.group_add("lab")
    registry.group_members_add("lab", "old")
    gone = registry.expire(now=1000.0, older_than=600.0)
    assert [d.device_id for d in gone] == ["old"]
    assert registry.device("old") is None
    assert registry.members_of("lab") == []
    assert not registry.is_removed("old")  # not the operator's removal: it may come back
    assert {d.device_id for d in registry.devices()} >= {"recent", "online", "demo_office"}
