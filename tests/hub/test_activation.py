"""Devices become known by approval (design.md §9, issue 13 points 3 and 4), on a real hub
(HTTP and MQTT), a real token-mode edge and a real Mosquitto.

What a user notices: a device nobody approved shows a 6-digit code instead of connecting; the
operator approves it with the API key or a bridge request; only then does its setup call
return a token the edge accepts. Someone who knows a victim's MAC address gets a code, not a
token that would throw the victim off. An edge has no key that mints a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from pydantic import SecretStr

from tests.conftest import StartEdge
from tests.edge.devices import Device
from tests.hub.conftest import READ_KEY, SECRET, WRITE_KEY
from tests.support import Recorder
from xiaozhi.activation import activation_hmac
from xiaozhi_hub.http import RunningHub, run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.settings import HubSettings, resolve_device_token_key
from xiaozhi_sim.device import ChannelError
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.ws_device import WsDevice

pytestmark = pytest.mark.integration  # a real Mosquitto

WRITE = {"X-API-Key": WRITE_KEY}
READ = {"X-API-Key": READ_KEY}


def new_mac() -> str:
    raw = uuid.uuid4().hex[:12].upper()
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def firmware_headers(mac: str, client_id: str, **extra: str) -> dict[str, str]:
    """The headers `Ota::SetupHttp` sends (firmware reference §3.1)."""
    return {
        "Activation-Version": "1",
        "Device-Id": mac,
        "Client-Id": client_id,
        "User-Agent": "bread-compact-wifi/1.8.2",
        "Accept-Language": "en-US",
        **extra,
    }


BODY = {"version": 2, "application": {"name": "xiaozhi", "version": "1.8.2"}}


@pytest.fixture
async def client(running_hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running_hub.url, timeout=10) as http:
        yield http


async def setup_call(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.post("/xiaozhi/ota/", headers=headers, json=BODY)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def approved_token(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """What an operator and a device do together: setup, approve the code, setup again."""
    code = (await setup_call(http, headers))["activation"]["code"]
    approved = await http.post("/api/v1/activations/approve", headers=WRITE, json={"code": code})
    assert approved.status_code == 200, approved.text
    token: str = (await setup_call(http, headers))["websocket"]["token"]
    return token


# -- 3. the hijack through the setup endpoint ---------------------------------------------------


async def test_a_victims_device_id_from_another_client_gets_a_code_and_the_victim_stays(
    client: httpx.AsyncClient, start_edge: StartEdge
) -> None:
    edge = await start_edge(device_auth="token")  # reads the hub's public key file
    mac = new_mac()
    victim_headers = firmware_headers(mac, str(uuid.uuid4()))
    token = await approved_token(client, victim_headers)
    victim = await Device.connect(
        edge.port,
        device_id=mac,
        headers={"Client-Id": victim_headers["Client-Id"], "Authorization": f"Bearer {token}"},
    )
    await victim.hello()

    # The attacker knows the MAC address (it is printed on the box), not the board's UUID.
    attacker_headers = firmware_headers(mac, str(uuid.uuid4()))
    answer = await setup_call(client, attacker_headers)
    assert "websocket" not in answer, "a token for someone else's device"
    activation = answer["activation"]
    assert activation["code"].isdigit()
    assert len(activation["code"]) == 6
    assert activation["code"] in activation["message"]
    assert activation["challenge"]
    assert activation["timeout_ms"] > 0
    # nothing the attacker holds opens the edge, and the victim's socket is untouched
    for authorization in ("", "Bearer " + token):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Device.connect(
                edge.port,
                device_id=mac,
                headers={
                    "Client-Id": attacker_headers["Client-Id"],
                    "Authorization": authorization,
                },
            )
        assert refused.value.response.status_code == 401
    await victim.send_json({"type": "listen", "state": "detect", "text": "hello"})
    assert victim.ws.close_code is None
    assert edge.by_device[mac.replace(":", "").lower()].session.identity is not None
    await victim.close()

    # The second client id is a pending activation the operator sees, with its own code.
    listed = (await client.get("/api/v1/activations", headers=READ)).json()["data"]
    mine = [p for p in listed if p["client_id"] == attacker_headers["Client-Id"]]
    assert [p["code"] for p in mine] == [activation["code"]]


# -- 3. the activation flow, as firmware and operator see it ------------------------------------


async def test_an_unknown_device_polls_until_the_operator_approves_its_code(
    client: httpx.AsyncClient, start_edge: StartEdge
) -> None:
    edge = await start_edge(device_auth="token")
    mac, client_id = new_mac(), str(uuid.uuid4())
    headers = firmware_headers(mac, client_id)
    first = await setup_call(client, headers)
    assert "websocket" not in first
    activation = first["activation"]
    assert set(activation) == {"message", "code", "challenge", "timeout_ms"}
    # the firmware re-runs setup after every activation round: the code it speaks stays
    assert (await setup_call(client, headers))["activation"]["code"] == activation["code"]

    # `Ota::Activate` without an eFuse serial posts {}: 202 means "still pending"
    poll = await client.post("/xiaozhi/ota/activate", headers=headers, json={})
    assert poll.status_code == 202
    wrong = {"algorithm": "hmac-sha256", "serial_number": "SN1", "challenge": "x", "hmac": "00"}
    assert (
        await client.post("/xiaozhi/ota/activate", headers=headers, json=wrong)
    ).status_code == 403

    listed = (await client.get("/api/v1/activations", headers=READ)).json()["data"]
    entry = next(p for p in listed if p["client_id"] == client_id)
    assert entry["code"] == activation["code"]
    assert entry["device_id"] == mac.replace(":", "").lower()
    assert 0 < entry["expires_in_seconds"] <= 3600

    body = {"code": activation["code"]}
    no_key = await client.post("/api/v1/activations/approve", json=body)
    assert no_key.status_code == 401
    read_only = await client.post("/api/v1/activations/approve", headers=READ, json=body)
    assert read_only.status_code == 403
    unknown = await client.post("/api/v1/activations/approve", headers=WRITE, json={"code": "x"})
    assert unknown.status_code == 404
    assert (await client.post("/xiaozhi/ota/activate", headers=headers, json={})).status_code == 202

    approved = await client.post("/api/v1/activations/approve", headers=WRITE, json=body)
    assert approved.status_code == 200, approved.text
    assert approved.json()["data"]["by"].startswith("rest:key:")
    assert (await client.post("/xiaozhi/ota/activate", headers=headers, json={})).status_code == 200
    listed = (await client.get("/api/v1/activations", headers=READ)).json()["data"]
    assert all(p["client_id"] != client_id for p in listed)

    token = (await setup_call(client, headers))["websocket"]["token"]
    device = await Device.connect(
        edge.port,
        device_id=mac,
        headers={"Client-Id": client_id, "Authorization": f"Bearer {token}"},
    )
    assert (await device.hello())["type"] == "hello"
    await device.close()


async def test_a_rejected_code_is_gone_and_the_device_gets_a_new_one(
    client: httpx.AsyncClient,
) -> None:
    headers = firmware_headers(new_mac(), str(uuid.uuid4()))
    code = (await setup_call(client, headers))["activation"]["code"]
    rejected = await client.post("/api/v1/activations/reject", headers=WRITE, json={"code": code})
    assert rejected.status_code == 200, rejected.text
    assert (await client.post("/xiaozhi/ota/activate", headers=headers, json={})).status_code == 404
    again = (await setup_call(client, headers))["activation"]
    assert again["code"].isdigit()


async def test_operators_approve_with_a_bridge_request(
    client: httpx.AsyncClient, running_hub: RunningHub, watcher: Recorder
) -> None:
    topics = running_hub.service.topics
    mac, client_id = new_mac(), str(uuid.uuid4())
    headers = firmware_headers(mac, client_id)
    code = (await setup_call(client, headers))["activation"]["code"]

    async def request(path: str, payload: dict[str, Any]) -> dict[str, Any]:
        start = watcher.mark()
        await watcher.publish(topics.bridge_request(path), payload)
        return await watcher.expect(
            topics.bridge_response(path),
            lambda m: m.get("transaction") == payload.get("transaction"),
            after=start,
        )

    pending = await request("device/pending", {"transaction": "p1"})
    assert pending["status"] == "ok"
    assert code in [p["code"] for p in pending["data"]["pending"]]

    missing = await request("device/approve", {"transaction": "a0"})
    assert missing["status"] == "error"
    assert "code" in missing["error"]
    approved = await request("device/approve", {"code": code, "transaction": "a1"})
    assert approved["status"] == "ok", approved
    assert approved["data"]["id"] == mac.replace(":", "").lower()
    assert approved["data"]["client_id"] == client_id
    assert (await client.post("/xiaozhi/ota/activate", headers=headers, json={})).status_code == 200
    assert "websocket" in await setup_call(client, headers)


async def test_pending_activations_survive_a_hub_restart(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    headers = firmware_headers(new_mac(), str(uuid.uuid4()))
    async with (
        run_hub(hub_settings, home=engine.home, engine=engine) as first,
        httpx.AsyncClient(base_url=first.url, timeout=10) as http,
    ):
        code = (await setup_call(http, headers))["activation"]["code"]
    async with (
        run_hub(hub_settings, home=engine.home, engine=engine) as second,
        httpx.AsyncClient(base_url=second.url, timeout=10) as http,
    ):
        listed = (await http.get("/api/v1/activations", headers=READ)).json()["data"]
        assert code in [p["code"] for p in listed]
        assert (await setup_call(http, headers))["activation"]["code"] == code
        poll = await http.post("/xiaozhi/ota/activate", headers=headers, json={})
        assert poll.status_code == 202


async def test_a_board_with_a_known_efuse_key_proves_itself_and_a_wrong_hmac_is_refused(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    key = bytes(range(32))
    settings = hub_settings.model_copy(
        update={"activation_hmac_keys": SecretStr(f"SN-1234={key.hex()}")}
    )
    headers = firmware_headers(new_mac(), str(uuid.uuid4()), **{"Activation-Version": "2"})
    headers["Serial-Number"] = "SN-1234"
    async with (
        run_hub(settings, home=engine.home, engine=engine) as hub,
        httpx.AsyncClient(base_url=hub.url, timeout=10) as http,
    ):
        challenge = (await setup_call(http, headers))["activation"]["challenge"]

        def payload(mac: str) -> dict[str, str]:  # `Ota::GetActivationPayload`
            return {
                "algorithm": "hmac-sha256",
                "serial_number": "SN-1234",
                "challenge": challenge,
                "hmac": mac,
            }

        forged = await http.post(
            "/xiaozhi/ota/activate", headers=headers, json=payload(activation_hmac(b"x", challenge))
        )
        assert forged.status_code == 403
        assert "HMAC" in forged.json()["error"]
        genuine = await http.post(
            "/xiaozhi/ota/activate", headers=headers, json=payload(activation_hmac(key, challenge))
        )
        assert genuine.status_code == 202  # proven hardware, still waiting for the operator
        listed = (await http.get("/api/v1/activations", headers=READ)).json()["data"]
        entry = next(p for p in listed if p["serial_number"] == "SN-1234")
        assert entry["hmac_verified"] is True


# -- 4. edges verify, they do not mint ----------------------------------------------------------


async def test_an_edge_holds_nothing_that_mints_a_token(
    client: httpx.AsyncClient, start_edge: StartEdge, hub_settings: HubSettings
) -> None:
    """On main every edge held XIAOZHI_SECRET (or the hub's secret file) and a token is its
    HMAC: whoever held an edge could sign in as any device. Now the edge has a public key."""
    # wired as `xiaozhi up` wired it on main: the hub's secret handed to the edge (now ignored)
    edge = await start_edge(device_auth="token", secret=SECRET)
    mac, client_id = new_mac(), str(uuid.uuid4())
    now = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{client_id}|{mac}|{now}".encode(), hashlib.sha256)
    forged = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() + f".{now}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Device.connect(
            edge.port,
            device_id=mac,
            headers={"Client-Id": client_id, "Authorization": f"Bearer {forged}"},
        )
    assert refused.value.response.status_code == 401
    assert not hasattr(edge.settings, "secret")
    # the hub's own token for that device still works: the edge verifies, it just cannot mint
    token = await approved_token(client, firmware_headers(mac, client_id))
    device = await Device.connect(
        edge.port,
        device_id=mac,
        headers={"Client-Id": client_id, "Authorization": f"Bearer {token}"},
    )
    await device.hello()
    await device.close()
    # the key file the hub signs with is private to the hub's user
    key_file = hub_settings.state_dir / "device_token_key"
    assert key_file.stat().st_mode & 0o777 == 0o600


# -- the simulator behaves as firmware, so QA can test the flow ---------------------------------


async def test_a_simulated_device_shows_its_code_polls_and_connects_once_approved(
    hub_settings: HubSettings,
    engine: IntentEngine,
    watcher: Recorder,
    start_edge: StartEdge,
) -> None:
    # the edge first: the hub's setup answer names its port (as `xiaozhi up` wires them)
    resolve_device_token_key(hub_settings)
    edge = await start_edge(device_auth="token")
    settings = hub_settings.model_copy(update={"edge_port": edge.port})
    async with (
        run_hub(settings, home=engine.home, engine=engine) as hub,
        httpx.AsyncClient(base_url=hub.url, timeout=10) as http,
    ):
        sim = SimSettings(
            sim_ota_url=f"{hub.url}/xiaozhi/ota/",
            sim_ws_url="ws://127.0.0.1:9/nowhere/",  # only the setup answer names the edge
            sim_token="",
            sim_activation_poll_seconds=0.2,
            sim_seed=0,
        )
        device = WsDevice(make_identity(name=f"activation-{uuid.uuid4().hex[:8]}"), sim)
        try:
            await device.start()
            assert not device.activated
            shown = next(r.payload for r in device.inbox if r.kind == "activation")
            code = shown["code"]
            assert code.isdigit()
            assert code in shown["message"]
            with pytest.raises(ChannelError, match=f"waiting for activation: approve code {code}"):
                await device.wake()

            approved = await http.post(
                "/api/v1/activations/approve", headers=WRITE, json={"code": code}
            )
            assert approved.status_code == 200, approved.text
            assert await device.wait_until(lambda: device.activated, within=10)
            await device.wake()  # with the token from its second setup call
            assert device.connected
            assert edge.by_device[device.device_id].session.identity is not None
        finally:
            await device.stop()
