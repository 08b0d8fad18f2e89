"""A device can only be itself, on the production broker (issue 13, points 1 and 2).

mosquitto/production.conf runs for real (tests/production_broker.py: both listeners, the ACL
files, password files made with `mosquitto_passwd`, TLS on the public listener), with a real
edge and a real hub on its private listener. The attacker holds one MQTT device's credential
(`demo_kitchen`, a device of the demo home), and an integrator's.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.conftest import StartEdge
from tests.edge.devices import Device
from tests.production_broker import ProductionBroker, production_broker
from tests.support import record
from xiaozhi.payloads import VoiceCommandEvent
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings

pytestmark = pytest.mark.integration  # a real Mosquitto

PRIVATE_USERS = ("xiaozhi-edge", "xiaozhi-hub")
ATTACKER = "demo_kitchen"  # an MQTT device's credential: user name = device id
PUBLIC_USERS = (ATTACKER, "integrator")
VICTIM = "demo_office"


@pytest.fixture
def prod(tmp_path: Path) -> contextlib.AbstractContextManager[ProductionBroker]:
    return production_broker(tmp_path / "broker", private=PRIVATE_USERS, public=PUBLIC_USERS)


@contextlib.asynccontextmanager
async def running_hub(
    broker: ProductionBroker, hub_settings: HubSettings, engine: IntentEngine
) -> AsyncIterator[HubService]:
    """A real hub logged in as `xiaozhi-hub`, on the topic tree the ACL files name."""
    settings = hub_settings.model_copy(
        update={
            "mqtt_url": broker.private_url("xiaozhi-hub"),
            "base_topic": "xiaozhi",
            "discovery_prefix": "homeassistant",
        }
    )
    hub = HubService(settings, home=engine.home, engine=engine)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


def as_device(broker: ProductionBroker, user: str, **options: Any) -> aiomqtt.Client:
    """An MQTT client with `user`'s credential on the public (TLS) listener."""
    return aiomqtt.Client(
        "127.0.0.1",
        broker.public_port,
        username=user,
        password=f"pw-{user}",
        tls_context=broker.tls,
        **options,
    )


async def test_a_device_or_integrator_credential_cannot_take_the_edge_or_hub_client_id(
    prod: contextlib.AbstractContextManager[ProductionBroker],
    start_edge: StartEdge,
    hub_settings: HubSettings,
    engine: IntentEngine,
) -> None:
    """Client ids are broker-wide: connecting with one in use disconnects its holder, whose
    last will then says the edge (or hub) is offline and the hub marks the edge's devices
    disconnected. Here the edge's and the hub's ids are tried with a device's and an
    integrator's credential, on both listeners: neither is disconnected."""
    with prod as broker:
        async with contextlib.AsyncExitStack() as stack:
            watch = await stack.enter_async_context(
                record(broker.private_url("xiaozhi-hub"), "xiaozhi/#", name="watch")
            )
            edge = await start_edge(mqtt_url=broker.private_url("xiaozhi-edge"), edge_id="edge-a")
            hub = await stack.enter_async_context(running_hub(broker, hub_settings, engine))
            device = await Device.connect(edge.port, device_id="demo_living_room")
            stack.push_async_callback(device.close)
            await device.hello()
            await watch.expect(
                "xiaozhi/status/demo_living_room", lambda s: s["status"] == "connected"
            )
            # The hub's group summaries follow the device: once they say it is there, any
            # later "disconnected" can only come from a takeover.
            for group in ("downstairs", "all_speakers"):
                await watch.expect(
                    f"xiaozhi/status/group/{group}",
                    lambda s: "demo_living_room" in s.get("connected", ()),
                )
            start = watch.mark()

            victims = {"edge": edge.owner.client_id, "hub": hub.owner.client_id}
            assert victims == {"edge": "xiaozhi-edge-a", "hub": hub_settings.hub_id}

            def offline() -> list[tuple[str, dict[str, Any]]]:
                return [
                    (m.topic, m.obj)
                    for m in watch.messages[start:]
                    if m.obj.get("state") == "offline" or m.obj.get("status") == "disconnected"
                ]

            for user in PUBLIC_USERS:
                for victim_id in victims.values():
                    # Accepted, but as itself: the client id is the user name.
                    async with as_device(broker, user, identifier=victim_id) as attacker:
                        topic = "xiaozhi/events/demo_kitchen"
                        if user == "integrator":
                            topic = "xiaozhi/commands/demo_kitchen"
                        await attacker.publish(topic, f'{{"probe": "{victim_id}"}}', qos=1)
                    # Mosquitto delivers in order: a will fired by a takeover comes first.
                    await watch.first(lambda m, v=victim_id: m.obj.get("probe") == v, after=start)
                    assert not offline(), f"{user} as {victim_id} disconnected it: {offline()}"
                    # The private listener does not know the user at all.
                    with pytest.raises(aiomqtt.MqttError, match="authori"):
                        async with aiomqtt.Client(
                            "127.0.0.1",
                            broker.private_port,
                            username=user,
                            password=f"pw-{user}",
                            identifier=victim_id,
                        ):
                            pass

            # Commands still reach the edge's devices, over the edge's first connection.
            await watch.publish("xiaozhi/commands/demo_living_room", _alert("still here"))
            await device.expect("alert", message="still here")
            assert not offline(), f"a takeover disconnected a service: {offline()}"
            assert (edge.owner.stats.connects, hub.owner.stats.connects) == (1, 1)


def _alert(message: str) -> dict[str, Any]:
    return {
        "command": "alert",
        "parameters": {"status": "info", "message": message},
        "message_id": uuid.uuid4().hex,
    }


def _voice(device_id: str, command: str, message_id: str) -> bytes:
    return VoiceCommandEvent(
        device_id=device_id,
        command=command,
        confidence=0.95,
        language="en",
        message_id=message_id,
        transport="mqtt",
    ).to_wire()


async def test_a_device_cannot_speak_for_another_device(
    prod: contextlib.AbstractContextManager[ProductionBroker],
    hub_settings: HubSettings,
    engine: IntentEngine,
) -> None:
    """`demo_kitchen` says "turn off the light" in `demo_office`'s name, on the fleet-wide
    topic and on its own one: nothing happens in the office, the hub tells the device why,
    and what it says in its own name is done."""
    with prod as broker:
        async with contextlib.AsyncExitStack() as stack:
            watch = await stack.enter_async_context(
                record(broker.private_url("xiaozhi-hub"), "xiaozhi/#", name="watch")
            )
            await stack.enter_async_context(running_hub(broker, hub_settings, engine))
            own_topic = f"xiaozhi/events/voice_command/{ATTACKER}"
            async with as_device(broker, ATTACKER) as attacker:
                forged = _voice(VICTIM, "turn off the light", "forged-shared")
                await attacker.publish("xiaozhi/events/voice_command", forged, qos=1)
                forged = _voice(VICTIM, "turn off the light", "forged-own")
                await attacker.publish(own_topic, forged, qos=1)
                own = _voice(ATTACKER, "turn on the living room light", "own")
                await attacker.publish(own_topic, own, qos=1)

            def as_victim() -> list[dict[str, Any]]:
                return [
                    e
                    for e in watch.json(f"xiaozhi/events/{VICTIM}")
                    + watch.json(f"xiaozhi/commands/{VICTIM}")
                    if str(e.get("message_id", "")).startswith("forged")
                ]

            def answered() -> list[dict[str, Any]]:
                return [
                    e
                    for e in watch.json(f"xiaozhi/events/{ATTACKER}")
                    if e.get("event_type") == "response" and e.get("message_id") == "own"
                ]

            await watch.wait_for(lambda: as_victim() or answered(), within=20)
            assert not as_victim(), f"executed in {VICTIM}'s name: {as_victim()}"
            assert answered()[0]["actions"][0]["entity_id"] == "light.living_room"
            refused = await watch.expect(
                f"xiaozhi/events/{ATTACKER}",
                lambda e: e.get("event_type") == "error" and e.get("message_id") == "forged-own",
            )
            assert VICTIM in refused["error_message"]
            assert not as_victim()


async def test_a_retained_voice_command_is_not_executed_again_by_each_hub_that_starts(
    prod: contextlib.AbstractContextManager[ProductionBroker],
    hub_settings: HubSettings,
    engine: IntentEngine,
) -> None:
    """The ACL cannot refuse the retain flag, and Mosquitto hands retained messages to shared
    subscriptions too: a device's retained "turn off the light" would run again at every hub
    (re)start. The hub drops it; what the device says afterwards is done."""
    with prod as broker:
        own_topic = f"xiaozhi/events/voice_command/{ATTACKER}"
        async with as_device(broker, ATTACKER) as device:
            stale = _voice(ATTACKER, "turn off the light", "retained")
            await device.publish(own_topic, stale, qos=1, retain=True)
        async with contextlib.AsyncExitStack() as stack:
            watch = await stack.enter_async_context(
                record(broker.private_url("xiaozhi-hub"), "xiaozhi/#", name="watch")
            )
            await watch.first(lambda m: m.topic == own_topic and m.retain)  # the broker has it
            hub = await stack.enter_async_context(running_hub(broker, hub_settings, engine))
            async with as_device(broker, ATTACKER) as device:
                fresh = _voice(ATTACKER, "turn on the living room light", "fresh")
                await device.publish(own_topic, fresh, qos=1)
            answered = await watch.expect(
                f"xiaozhi/events/{ATTACKER}",
                lambda e: e.get("event_type") == "response" and e.get("message_id") == "fresh",
            )
            assert answered["executed"] is True
            executed = [
                e for e in watch.json(f"xiaozhi/events/{ATTACKER}") if e["message_id"] == "retained"
            ]
            assert not executed, f"the retained voice command ran: {executed}"
            assert hub.counters["voice_commands_executed"] == 1
