"""The hub's HTTP side on a real server: REST envelopes and auth, commands reaching MQTT,
the OTA setup endpoint, health, metrics, OpenAPI and the dashboard.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from tests.hub.conftest import READ_KEY, SECRET, WRITE_KEY
from tests.support import Recorder
from xiaozhi.tokens import public_key_from_text, verify_token
from xiaozhi_hub.http import RunningHub, create_app, run_hub
from xiaozhi_hub.http.dashboard import dashboard_html
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.settings import HubSettings, derive_jwt_secret
from xiaozhi_runtime.asgi import AddressInUse, serve_app

pytestmark = pytest.mark.integration  # a real Mosquitto

WRITE = {"X-API-Key": WRITE_KEY}
READ = {"X-API-Key": READ_KEY}


@pytest.fixture
async def client(running_hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running_hub.url, timeout=10) as http:
        yield http


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error", "timestamp", "request_id"}
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["request_id"].startswith("req_")
    assert body["timestamp"].endswith("Z")
    return body["error"]


def assert_ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "data", "message", "timestamp", "request_id"}
    assert body["success"] is True
    assert response.headers["x-request-id"] == body["request_id"]
    return body["data"]


# -- auth -------------------------------------------------------------------------------------


async def test_auth_refusals_use_the_error_envelope(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/api/v1/devices"), 401, "MISSING_CREDENTIALS")
    assert "X-API-Key" in error["message"]
    assert_error(
        await client.get("/api/v1/devices", headers={"X-API-Key": "guess"}), 401, "INVALID_API_KEY"
    )
    assert_error(
        await client.get("/api/v1/devices", headers={"Authorization": "Bearer not.a.jwt"}),
        401,
        "INVALID_TOKEN",
    )
    response = await client.post(
        "/api/v1/devices/demo_kitchen/command", headers=READ, json={"command": "reboot"}
    )
    error = assert_error(response, 403, "FORBIDDEN")
    assert error["details"] == {"role": "read", "required": "write"}
    # Authentication comes before the body: no credentials + a bad body is still a 401.
    response = await client.post("/api/v1/broadcast", json={"nope": 1})
    assert_error(response, 401, "MISSING_CREDENTIALS")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_jwt_exchanged_for_an_api_key_carries_its_role(
    client: httpx.AsyncClient, hub_settings: HubSettings
) -> None:
    data = assert_ok(await client.post("/api/v1/auth/token", headers=READ))
    assert (data["token_type"], data["role"]) == ("bearer", "read")
    bearer = {"Authorization": f"Bearer {data['access_token']}"}
    assert_ok(await client.get("/api/v1/devices", headers=bearer))
    response = await client.post(
        "/api/v1/broadcast", headers=bearer, json={"command": "get_status"}
    )
    assert_error(response, 403, "FORBIDDEN")
    # A JWT cannot mint JWTs; an expired or foreign-signed one is refused.
    assert_error(await client.post("/api/v1/auth/token", headers=bearer), 403, "API_KEY_REQUIRED")
    key = derive_jwt_secret(hub_settings, SECRET.encode())
    now = int(time.time())
    claims = {"sub": "x", "role": "write", "iss": "xiaozhi-hub", "iat": now - 7200}
    expired = jwt.encode({**claims, "exp": now - 3600}, key, algorithm="HS256")
    response = await client.get("/api/v1/devices", headers={"Authorization": f"Bearer {expired}"})
    assert_error(response, 401, "TOKEN_EXPIRED")
    forged = jwt.encode(
        {**claims, "exp": now + 3600}, b"another key of 32 bytes or more!", algorithm="HS256"
    )
    response = await client.get("/api/v1/devices", headers={"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "INVALID_TOKEN")
    data = assert_ok(await client.post("/api/v1/auth/token", headers=WRITE))
    response = await client.post(
        "/api/v1/broadcast",
        headers={"Authorization": f"Bearer {data['access_token']}"},
        json={"command": "get_status"},
    )
    assert_ok(response, 202)


# -- devices, commands, voice test, stats ----------------------------------------------------


async def test_devices_and_a_command_that_reaches_the_device_topic(
    client: httpx.AsyncClient, running_hub: RunningHub, watcher: Recorder
) -> None:
    t = running_hub.service.topics
    devices = assert_ok(await client.get("/api/v1/devices", headers=READ))
    assert [d["id"] for d in devices] == ["demo_kitchen", "demo_living_room", "demo_office"]
    device = assert_ok(await client.get("/api/v1/devices/demo_kitchen", headers=READ))
    assert (device["name"], device["area"], device["area_name"]) == (
        "Kitchen speaker",
        "kitchen",
        "Kitchen",
    )
    assert device["groups"] == ["all_speakers", "downstairs"]

    start = watcher.mark()
    response = await client.post(
        "/api/v1/devices/demo_kitchen/command",
        headers=WRITE,
        json={"command": "set_volume", "parameters": {"volume": 35}, "message_id": "rest-1"},
    )
    data = assert_ok(response, 202)
    assert data["topic"] == t.command("demo_kitchen")
    command = await watcher.expect(t.command("demo_kitchen"), after=start)
    assert command["command"] == "set_volume"
    assert command["parameters"] == {"volume": 35}
    assert (command["message_id"], command["device_id"]) == ("rest-1", "demo_kitchen")


async def test_a_device_renamed_and_moved_over_rest_is_edited_as_the_bridge_edits_it(
    client: httpx.AsyncClient, running_hub: RunningHub, watcher: Recorder
) -> None:
    t = running_hub.service.topics
    start = watcher.mark()
    edit = {"name": "Cooking corner", "area": "office"}
    response = await client.patch("/api/v1/devices/demo_kitchen", headers=WRITE, json=edit)
    device = assert_ok(response)
    assert (device["name"], device["area"], device["area_name"]) == (
        "Cooking corner",
        "office",
        "Office",
    )
    # the bridge's retained list is re-published, as after the request device/rename
    await watcher.first(
        lambda m: m.topic == t.bridge_devices() and b'"Cooking corner"' in m.payload, after=start
    )
    saved = (running_hub.service.settings.state_dir / "registry.json").read_text()
    assert "Cooking corner" in saved  # survives a restart, like a bridge edit
    moved = {"area": None}
    device = assert_ok(
        await client.patch("/api/v1/devices/demo_kitchen", headers=WRITE, json=moved)
    )
    assert (device["name"], device["area"]) == ("Cooking corner", None)

    assert_error(
        await client.patch("/api/v1/devices/demo_kitchen", headers=READ, json=edit),
        403,
        "FORBIDDEN",
    )
    assert_error(
        await client.patch("/api/v1/devices/nobody", headers=WRITE, json=edit),
        404,
        "DEVICE_NOT_FOUND",
    )
    assert_error(
        await client.patch("/api/v1/devices/demo_kitchen", headers=WRITE, json={}),
        422,
        "EDIT_REQUIRED",
    )
    bad_area = await client.patch(
        "/api/v1/devices/demo_kitchen", headers=WRITE, json={"area": "attic"}
    )
    assert "kitchen" in assert_error(bad_area, 422, "UNKNOWN_AREA")["details"]["known"]
    long_name = await client.patch(
        "/api/v1/devices/demo_kitchen", headers=WRITE, json={"name": "x" * 101}
    )
    assert_error(long_name, 422, "VALIDATION_ERROR")
    device = assert_ok(await client.get("/api/v1/devices/demo_kitchen", headers=READ))
    assert (device["name"], device["area"]) == ("Cooking corner", None)  # refusals changed nothing


async def test_the_home_model_lists_areas_entities_with_their_state_and_bindings(
    client: httpx.AsyncClient,
) -> None:
    home = assert_ok(await client.get("/api/v1/home", headers=READ))
    areas = {a["id"]: a for a in home["areas"]}
    assert areas["kitchen"]["name"] == "Kitchen"
    assert areas["kitchen"]["devices"] == ["demo_kitchen"]
    entities = {e["entity_id"]: e for e in home["entities"]}
    living = entities["light.living_room"]
    assert (living["domain"], living["area"], living["state"]) == (
        "light",
        "living_room",
        {"state": "off"},
    )
    assert living["binding"] == {"type": "virtual", "target": "in the hub's memory"}
    assert {g["id"] for g in home["groups"]} >= {"downstairs"}
    assert_error(await client.get("/api/v1/home"), 401, "MISSING_CREDENTIALS")


async def test_bad_commands_get_errors_and_nothing_is_published(
    client: httpx.AsyncClient, running_hub: RunningHub, watcher: Recorder
) -> None:
    t = running_hub.service.topics
    start = watcher.mark()
    url = "/api/v1/devices/demo_kitchen/command"
    error = assert_error(
        await client.post("/api/v1/devices/kitchen/command", headers=WRITE, json={"command": "x"}),
        404,
        "DEVICE_NOT_FOUND",
    )
    assert error["details"] == {"id": "kitchen"}
    assert_error(await client.get("/api/v1/devices/kitchen", headers=READ), 404, "DEVICE_NOT_FOUND")
    bad_json = await client.post(
        url, headers={**WRITE, "Content-Type": "application/json"}, content=b"{nope"
    )
    assert_error(bad_json, 400, "INVALID_JSON")
    error = assert_error(
        await client.post(url, headers=WRITE, json={"parameters": {}}), 422, "VALIDATION_ERROR"
    )
    assert error["details"]["errors"][0]["field"] == "command"
    error = assert_error(
        await client.post(
            url, headers=WRITE, json={"command": "set_volume", "parameters": {"volume": 200}}
        ),
        422,
        "INVALID_PARAMETERS",
    )
    assert error["details"] == {"field": "parameters.volume"}
    assert_error(
        await client.post("/api/v1/groups/nobody/command", headers=WRITE, json={"command": "x"}),
        404,
        "GROUP_NOT_FOUND",
    )
    huge = {"command": "alert", "parameters": {"message": "x" * 100_000}}
    assert_error(await client.post(url, headers=WRITE, json=huge), 413, "PAYLOAD_TOO_LARGE")
    assert_error(await client.get("/api/v1/nothing", headers=READ), 404, "NOT_FOUND")
    assert_error(await client.delete("/api/v1/devices", headers=READ), 405, "METHOD_NOT_ALLOWED")

    # The next good command (JSON without a Content-Type header) is the first thing on any
    # command topic since the bad ones.
    response = await client.post(
        url, headers=WRITE, content=b'{"command": "reboot", "message_id": "ok-1"}'
    )
    assert "content-type" not in response.request.headers
    assert_ok(response, 202)
    await watcher.expect(t.command("demo_kitchen"), after=start)
    published = [m for m in watcher.messages[start:] if m.topic.startswith(t.base + "/commands/")]
    assert len(published) == 1
    assert b'"ok-1"' in published[0].payload


async def test_group_commands_over_rest_fan_out_and_broadcasts_are_published(
    client: httpx.AsyncClient, running_hub: RunningHub, watcher: Recorder
) -> None:
    t = running_hub.service.topics
    start = watcher.mark()
    data = assert_ok(
        await client.post(
            "/api/v1/groups/downstairs/command",
            headers=WRITE,
            json={"command": "alert", "parameters": {"status": "s", "message": "m"}},
        ),
        202,
    )
    assert data["members"] == ["demo_living_room", "demo_kitchen"]
    for member in data["members"]:
        await watcher.expect(
            t.command(member), lambda m, d=data: m["message_id"] == d["message_id"], after=start
        )
    data = assert_ok(
        await client.post("/api/v1/broadcast", headers=WRITE, json={"command": "get_status"}),
        202,
    )
    broadcast = await watcher.expect(
        t.broadcast_command(), lambda m: m["message_id"] == data["message_id"], after=start
    )
    assert broadcast["command"] == "get_status"
    groups = assert_ok(await client.get("/api/v1/groups", headers=READ))
    assert {g["id"] for g in groups} == {"downstairs", "all_speakers"}


async def test_voice_test_plans_and_executes_nothing(
    client: httpx.AsyncClient, running_hub: RunningHub
) -> None:
    response = await client.post(
        "/api/v1/voice/test",
        headers=READ,
        json={"text": "set volume to 40", "device_id": "demo_office"},
    )
    data = assert_ok(response)
    assert data["intent"] == "XiaozhiSetDeviceVolume"
    assert data["actions"] == [
        {
            "type": "homeassistant",
            "action": "volume_set",
            "entity_id": "media_player.xiaozhi_demo_office",
            "parameters": {"volume_level": 0.4},
        }
    ]
    assert (data["executed"], data["would_execute"]) == (False, True)
    data = assert_ok(
        await client.post(
            "/api/v1/voice/test", headers=READ, json={"text": "turn on the garage light"}
        )
    )
    assert data["response"] == "I don't know a device called garage light."
    assert data["would_execute"] is False
    assert_error(
        await client.post(
            "/api/v1/voice/test", headers=READ, json={"text": "hi", "area": "garage"}
        ),
        422,
        "UNKNOWN_AREA",
    )
    stats = assert_ok(await client.get("/api/v1/stats", headers=READ))
    assert stats["devices"] == {"known": 3, "connected": 0}
    assert stats["mqtt"]["connected"] is True
    assert stats["state"] == "online"


# -- OTA setup ---------------------------------------------------------------------------------


async def test_ota_setup_issues_a_token_once_the_device_is_approved(
    client: httpx.AsyncClient, hub_settings: HubSettings
) -> None:
    headers = {
        "Device-Id": "AA:BB:CC:DD:EE:FF",
        "Client-Id": "e4b0c442-98fc-4e1b-8c3d-6a5b0f5d2a11",
        "Activation-Version": "1",
        "User-Agent": "bread-compact-wifi/1.8.2",
        "Accept-Language": "en-US",
    }
    body = {"version": 2, "application": {"name": "xiaozhi", "version": "1.8.2"}}
    first = (await client.post("/xiaozhi/ota/", headers=headers, json=body)).json()
    assert "websocket" not in first
    code = first["activation"]["code"]
    approved = await client.post("/api/v1/activations/approve", headers=WRITE, json={"code": code})
    assert approved.status_code == 200, approved.text
    response = await client.post("/xiaozhi/ota/", headers=headers, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "activation" not in answer
    assert answer["firmware"] == {"version": "1.8.2", "url": ""}
    assert abs(answer["server_time"]["timestamp"] - time.time() * 1000) < 60_000
    assert isinstance(answer["server_time"]["timezone_offset"], int)
    websocket = answer["websocket"]
    assert websocket["url"] == "ws://127.0.0.1:8000/xiaozhi/v1/"
    assert websocket["version"] == hub_settings.device_binary_version
    public = (hub_settings.state_dir / "device_token_key.pub").read_text()
    issued = verify_token(
        public_key_from_text(public),
        websocket["token"],
        client_id=headers["Client-Id"],
        device_id=headers["Device-Id"],
        now=int(time.time()),
    )
    assert abs(issued - time.time()) < 60

    activate = await client.post("/xiaozhi/ota/activate", headers=headers, json={})
    assert activate.status_code == 200
    info = await client.get("/xiaozhi/ota/")
    assert info.status_code == 200
    assert info.json()["websocket"] == {"url": "ws://127.0.0.1:8000/xiaozhi/v1/"}
    missing = await client.post("/xiaozhi/ota/", headers={"Device-Id": "aa:bb:cc:dd:ee:ff"})
    assert (missing.status_code, missing.json()) == (400, {"error": "missing Client-Id header"})
    bad = await client.post(
        "/xiaozhi/ota/", headers={**headers, "Content-Type": "application/json"}, content=b"{"
    )
    assert bad.status_code == 400


# -- health, metrics, docs, dashboard; a lifespan-owned service --------------------------------


async def test_health_metrics_openapi_and_dashboard(
    client: httpx.AsyncClient, running_hub: RunningHub, watcher: Recorder
) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["broker_connected"] is True
    assert health.json()["hub"] == "online"
    metrics = (await client.get("/metrics")).text
    for name in (
        'xiaozhi_hub_registry_devices{state="known"} 3.0',
        "xiaozhi_hub_mqtt_connected 1.0",
        "xiaozhi_hub_intent_latency_seconds_bucket",
    ):
        assert name in metrics
    openapi = (await client.get("/openapi.json")).json()
    assert "/api/v1/devices/{device_id}/command" in openapi["paths"]
    assert {"APIKeyHeader", "HTTPBearer"} <= set(openapi["components"]["securitySchemes"])
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == dashboard_html()  # the package's dashboard/index.html, as shipped
    assert page.text.startswith("<!doctype html>")
    await assert_only_local_assets(client, page.text, expected=3)  # css, msgpack, app.js


async def assert_only_local_assets(client: httpx.AsyncClient, html: str, expected: int) -> None:
    """Every ``src=``/``href=`` and quoted ``*_url`` of ``html`` is a path on the hub (no
    scheme, no host: nothing from a CDN) and the hub answers it with 200."""
    urls = set(re.findall(r'(?:src|href)="([^"#]+)"', html))
    urls |= set(re.findall(r"url: *'([^']+)'", html))  # Swagger UI's spec URL
    assert len(urls) >= expected, urls
    for url in sorted(urls):
        assert url.startswith("/"), url  # a path on the hub...
        assert not url.startswith("//"), url  # ...not a scheme-relative URL to another host
        answer = await client.get(url)
        assert answer.status_code == 200, url
        assert answer.content, url


async def test_the_api_docs_need_no_internet(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    # the bundle, its css, the favicon and the OpenAPI document itself
    await assert_only_local_assets(client, docs.text, expected=4)
    bundle = await client.get("/ui/vendor/swagger-ui/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert len(bundle.content) > 1_000_000  # the real bundle, not a stub
    assert (await client.get("/redoc")).status_code == 404  # CDN-only, so switched off


async def test_a_lifespan_owned_service_goes_offline_on_shutdown(
    hub_settings: HubSettings, watcher: Recorder
) -> None:
    app = create_app(hub_settings)
    async with serve_app(app) as served, httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get("/health")).status_code == 200
        await watcher.expect(hub_settings.topics.bridge_state(), lambda s: s["state"] == "online")
        start = watcher.mark()
    state = await watcher.expect(hub_settings.topics.bridge_state(), after=start)
    assert state == {"state": "offline"}


async def test_a_taken_port_fails_before_the_hub_goes_online(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = hub_settings.model_copy(update={"hub_port": taken.getsockname()[1]})
        with pytest.raises(AddressInUse, match="XIAOZHI_HUB_PORT"):
            async with run_hub(settings, home=engine.home, engine=engine):
                pytest.fail("the hub ran on a taken port")
    # Integrators never saw it come online (and go): no bridge state at all. The probe,
    # published after, shows the watcher has read everything before it.
    probe = f"{hub_settings.base_topic}/test/probe"
    await watcher.publish(probe, {"probe": 1})
    await watcher.expect(probe, lambda m: m == {"probe": 1})
    assert not watcher.json(f"{hub_settings.base_topic}/bridge/state")
