"""zigbee2mqtt-style bridge requests (xiaozhi_hub.bridge_api): the table, transactions, errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import structlog.testing

from xiaozhi.payloads import BridgeResponse, ResponseStatus, StatusPayload
from xiaozhi_hub.bridge_api import (
    CHANGED_DEVICES,
    CHANGED_GROUPS,
    CHANGED_INFO,
    BridgeApi,
    discovery_change,
)
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.registry import Registry


@pytest.fixture
async def api(registry: Registry, engine: IntentEngine) -> AsyncIterator[BridgeApi]:
    pipeline = VoicePipeline(registry, engine=engine)
    yield BridgeApi(registry, pipeline)
    pipeline.close()


async def call(api: BridgeApi, path: str, request: Any) -> tuple[BridgeResponse, set[str]]:
    raw = request if isinstance(request, bytes) else orjson.dumps(request)
    response, changed = await api.handle(path, raw)
    # every answer is a valid wire message
    assert BridgeResponse.from_wire(response.to_wire()) == response
    return response, changed


def test_the_table_lists_every_path(api: BridgeApi) -> None:
    assert sorted(api.handlers) == [
        "device/approve",
        "device/area",
        "device/pending",
        "device/reject",
        "device/remove",
        "device/remove_simulated",
        "device/rename",
        "group/add",
        "group/members/add",
        "group/members/remove",
        "group/remove",
        "health_check",
        "intent/test",
    ]


async def test_rename_echoes_the_transaction(api: BridgeApi, registry: Registry) -> None:
    response, changed = await call(
        api, "device/rename", {"id": "demo_kitchen", "name": "Cooking corner", "transaction": 23}
    )
    assert response.to_json_dict() == {
        "status": "ok",
        "data": {"id": "demo_kitchen", "from": "Kitchen speaker", "to": "Cooking corner"},
        "transaction": 23,
    }
    assert changed == {CHANGED_DEVICES, discovery_change("demo_kitchen")}
    assert registry.device("demo_kitchen").name == "Cooking corner"  # type: ignore[union-attr]


async def test_rename_accepts_zigbee2mqtt_field_names(api: BridgeApi) -> None:
    response, _ = await call(api, "device/rename", {"from": "demo_office", "to": "Desk"})
    assert response.data == {"id": "demo_office", "from": "Office speaker", "to": "Desk"}
    assert response.transaction is None


async def test_remove(api: BridgeApi, registry: Registry) -> None:
    response, changed = await call(
        api, "device/remove", {"id": "demo_kitchen", "transaction": "t1"}
    )
    assert (response.status, response.data, response.transaction) == (
        ResponseStatus.OK,
        {"id": "demo_kitchen"},
        "t1",
    )
    assert changed == {CHANGED_DEVICES, CHANGED_GROUPS, CHANGED_INFO, "discovery/demo_kitchen"}
    assert registry.device("demo_kitchen") is None


async def test_filtered_removal_takes_matching_learnt_devices_only(
    api: BridgeApi, registry: Registry
) -> None:
    now = time.time()
    marked = {"transport": "mqtt", "simulated": True}
    for device_id, fields, seen in [
        ("sim_fresh", marked, now),
        ("sim_old", marked, now - 7200),
        ("real_old", {"transport": "mqtt"}, now - 7200),
        ("real_fresh", {"transport": "mqtt"}, now),
    ]:
        status = StatusPayload(status="disconnected", device_id=device_id, **fields)
        registry.apply_status(status, seen)
    simulated = StatusPayload(status="connected", device_id="demo_kitchen", simulated=True)
    registry.apply_status(simulated, now)  # in the home file: never taken in bulk
    forgotten: list[str] = []
    api.on_forget = lambda record: forgotten.append(record.device_id)

    both = {"simulated": True, "not_seen_for_seconds": 3600}
    response, changed = await call(api, "device/remove", both)
    assert response.data == {"removed": ["sim_old"]}
    assert {"discovery/sim_old", CHANGED_DEVICES} <= changed
    response, _ = await call(api, "device/remove", {"not_seen_for_seconds": 3600})
    assert response.data == {"removed": ["real_old"]}
    response, _ = await call(api, "device/remove_simulated", {})
    assert response.data == {"removed": ["sim_fresh"]}
    response, changed = await call(api, "device/remove_simulated", {})
    assert (response.data, changed) == ({"removed": []}, set())
    assert forgotten == ["sim_old", "real_old", "sim_fresh"]
    assert registry.device("real_fresh") is not None
    assert registry.device("demo_kitchen") is not None
    # Forgotten, not remembered as removed: heard again, learnt again.
    assert not registry.is_removed("sim_old")


@pytest.mark.parametrize(
    ("request_fields", "error"),
    [
        ({"simulated": "yes"}, "'simulated' must be true or false"),
        ({"not_seen_for_seconds": -1}, "'not_seen_for_seconds' must be a number"),
        ({"not_seen_for_seconds": True}, "'not_seen_for_seconds' must be a number"),
        ({"simulated": None}, "needs 'simulated' or 'not_seen_for_seconds'"),
    ],
)
async def test_a_bad_filter_is_refused(
    api: BridgeApi, request_fields: dict[str, Any], error: str
) -> None:
    response, changed = await call(api, "device/remove", request_fields)
    assert response.status is ResponseStatus.ERROR
    assert error in (response.error or "")
    assert changed == set()


async def test_area(api: BridgeApi, registry: Registry) -> None:
    response, changed = await call(api, "device/area", {"id": "demo_kitchen", "area": "office"})
    assert response.data == {"id": "demo_kitchen", "from": "kitchen", "to": "office"}
    assert changed == {CHANGED_DEVICES, discovery_change("demo_kitchen")}
    assert registry.area_of("demo_kitchen") == "office"
    response, _ = await call(api, "device/area", {"id": "demo_kitchen", "area": None})
    assert response.data == {"id": "demo_kitchen", "from": "office", "to": None}
    for bad, error in [
        ({"id": "demo_kitchen"}, "missing required field 'area'"),
        ({"id": "demo_kitchen", "area": 3}, "'area' must be an area id or null"),
        ({"id": "demo_kitchen", "area": "attic"}, "unknown area 'attic' (known: "),
        ({"id": "nobody", "area": None}, "unknown device 'nobody'"),
    ]:
        response, changed = await call(api, "device/area", bad)
        assert response.status is ResponseStatus.ERROR
        assert error in (response.error or ""), response.error
        assert changed == set()
    assert registry.area_of("demo_kitchen") is None


async def test_group_requests(api: BridgeApi, registry: Registry) -> None:
    response, changed = await call(api, "group/add", {"id": "kids", "friendly_name": "Kids"})
    assert (response.data, changed) == (
        {"id": "kids", "name": "Kids"},
        {CHANGED_GROUPS, CHANGED_INFO},
    )
    response, changed = await call(
        api, "group/members/add", {"group": "kids", "device": "demo_office"}
    )
    assert (response.data, changed) == (
        {"group": "kids", "device": "demo_office"},
        {CHANGED_GROUPS, CHANGED_DEVICES},
    )
    assert registry.members_of("kids") == ["demo_office"]
    _, again = await call(api, "group/members/add", {"group": "kids", "device": "demo_office"})
    assert again == set()  # already a member: nothing to re-publish
    response, changed = await call(
        api, "group/members/remove", {"group": "kids", "device": "demo_office"}
    )
    assert response.status is ResponseStatus.OK
    assert changed == {CHANGED_GROUPS, CHANGED_DEVICES}
    response, changed = await call(api, "group/remove", {"id": "kids", "transaction": 5})
    assert (response.data, response.transaction) == ({"id": "kids"}, 5)
    assert CHANGED_GROUPS in changed
    assert registry.group("kids") is None


async def test_intent_test_executes_nothing(api: BridgeApi, registry: Registry) -> None:
    before = registry.snapshot_devices()
    response, changed = await call(
        api,
        "intent/test",
        {"text": "turn on the light", "device_id": "demo_living_room", "transaction": "x"},
    )
    assert response.status is ResponseStatus.OK
    assert changed == set()
    assert response.transaction == "x"
    assert response.data == {
        "text": "turn on the light",
        "intent": "HassTurnOn",
        "slots": {"domain": "light", "area": "living_room"},
        "actions": [
            {
                "type": "homeassistant",
                "action": "turn_on",
                "entity_id": "light.living_room",
                "parameters": {},
            }
        ],
        "response": "Turning on the living room light.",
        "would_execute": True,
        "executed": False,
        "error": None,
        "device_id": "demo_living_room",
    }
    assert registry.snapshot_devices() == before


async def test_intent_test_with_area_and_states(registry: Registry, engine: IntentEngine) -> None:
    states = {"climate.office": {"current_temperature": 18}}
    pipeline = VoicePipeline(registry, engine=engine, states=states)
    api = BridgeApi(registry, pipeline)
    response, _ = await call(
        api, "intent/test", {"text": "what is the temperature", "area": "office"}
    )
    assert response.data["response"] == "The office is 18 degrees."
    response, _ = await call(api, "intent/test", {"text": "turn on the garage light"})
    assert (response.data["would_execute"], response.data["actions"]) == (False, [])
    assert response.data["response"] == "I don't know a device called garage light."
    pipeline.close()


async def test_health_check(api: BridgeApi, registry: Registry) -> None:
    response, changed = await call(api, "health_check", b"")
    assert response.data == {"healthy": True, "devices": 3, "connected": 0, "intents_loaded": True}
    assert changed == set()


BAD = [
    # path, raw payload, error, transaction echoed
    ("device/rename", b"{not json", "invalid JSON", None),
    ("device/rename", b"[1, 2]", "expected a JSON object, got a JSON array", None),
    ("device/rename", {"name": "x", "transaction": 1}, "missing required field 'id'", 1),
    (
        "device/rename",
        {"id": "nope", "name": "x", "transaction": "a"},
        "unknown device 'nope'",
        "a",
    ),
    ("device/rename", {"id": 7, "name": "x"}, "field 'id' must be a non-empty string", None),
    ("device/rename", {"id": "demo_kitchen", "name": "", "transaction": 2}, "field 'name'", 2),
    ("device/remove", {"id": "ghost", "transaction": 3}, "unknown device 'ghost'", 3),
    ("group/add", {"id": "Bad Id"}, "invalid group id 'Bad Id'", None),
    ("group/add", {"id": "downstairs"}, "group 'downstairs' already exists", None),
    ("group/remove", {"id": "nope"}, "unknown group 'nope'", None),
    ("group/members/add", {"group": "downstairs"}, "missing required field 'device'", None),
    ("group/members/add", {"group": "downstairs", "device": "ghost"}, "unknown device", None),
    (
        "group/members/remove",
        {"group": "downstairs", "device": "demo_office"},
        "not a member",
        None,
    ),
    ("intent/test", {"transaction": 9}, "missing required field 'text'", 9),
    ("intent/test", {"text": "x" * 501}, "text of 501 characters > limit 500", None),
    ("intent/test", {"text": "hi", "area": "garage"}, "unknown area 'garage'", None),
    ("permit_join", {"value": True, "transaction": 4}, "unknown request 'permit_join'", 4),
    ("health_check", {"transaction": [1]}, "transaction", None),
    ("health_check", b"{" + b" " * 70_000 + b"}", "JSON message 70002 B > limit 65536 B", None),
]


@pytest.mark.parametrize(("path", "request_", "error", "transaction"), BAD)
async def test_errors_are_answered(
    api: BridgeApi, path: str, request_: Any, error: str, transaction: object
) -> None:
    response, changed = await call(api, path, request_)
    assert response.status is ResponseStatus.ERROR
    assert error in (response.error or "")
    assert response.data == {}
    assert response.transaction == transaction
    assert changed == set()


async def test_intent_test_without_engine(registry: Registry) -> None:
    response, _ = await call(BridgeApi(registry), "intent/test", {"text": "hi", "transaction": 1})
    assert (response.error, response.transaction) == ("the intent engine is not loaded", 1)


async def test_a_handler_bug_is_answered_without_details(registry: Registry) -> None:
    api = BridgeApi(registry)

    def broken(_: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        raise KeyError("secret detail")

    api.handlers["health_check"] = broken
    with structlog.testing.capture_logs() as logs:
        response, changed = await call(api, "health_check", {"transaction": 8})
    assert response.to_json_dict() == {
        "status": "error",
        "data": {},
        "error": "internal error while handling 'health_check'",
        "transaction": 8,
    }
    assert changed == set()
    [logged] = [entry for entry in logs if entry["event"] == "bridge_request_failed"]
    assert isinstance(logged["exc_info"], KeyError)  # the details go to the log, once


async def test_an_async_handler_is_awaited_and_answered(registry: Registry) -> None:
    api = BridgeApi(registry)
    gate = asyncio.Event()

    async def slow(request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        await gate.wait()
        return {"echo": request["value"]}, {CHANGED_INFO}

    api.handlers["slow"] = slow
    pending = asyncio.create_task(call(api, "slow", {"value": 3, "transaction": 5}))
    # a plain request is answered while the slow one waits
    response, _ = await call(api, "health_check", {"transaction": 6})
    assert (response.status, response.transaction) == (ResponseStatus.OK, 6)
    assert not pending.done()
    gate.set()
    response, changed = await pending
    assert response.to_json_dict() == {"status": "ok", "data": {"echo": 3}, "transaction": 5}
    assert changed == {CHANGED_INFO}


async def test_intent_test_before_the_pipeline_is_ready(registry: Registry) -> None:
    pipeline = VoicePipeline(registry)  # no engine: start() not run yet
    response, _ = await call(BridgeApi(registry, pipeline), "intent/test", {"text": "hi"})
    assert response.error == "the intent engine is not loaded"
    pipeline.close()
