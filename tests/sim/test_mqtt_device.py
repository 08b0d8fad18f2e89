"""MQTT devices against a real Mosquitto: seed 003's device client on the topic tree.

Observed with an independent client (aiomqtt); every wait is for an expected message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import record, refused_port
from xiaozhi.topics import TopicTree
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_sim.device import ChannelError, Fault, FaultNotApplicable
from xiaozhi_sim.identity import make_identity
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings
from xiaozhi_sim.state import DeviceState

pytestmark = pytest.mark.integration
T = TopicTree()


@contextlib.asynccontextmanager
async def running(
    settings: SimSettings, name: str, groups: tuple[str, ...] = ()
) -> AsyncIterator[MqttDevice]:
    paho = PahoAsyncio()
    device = MqttDevice(make_identity(name=name), settings, paho=paho, groups=groups)
    try:
        await device.start()
        assert await device.wait_connected(10), "device did not connect to the broker"
        # The device subscribes to its command topics, then publishes its retained
        # `connected` status, on one connection: once the broker holds that status it holds
        # the subscriptions too, so a command published from now on reaches the device.
        async with record(settings.mqtt_url, T.status(device.device_id), name="ready") as ready:
            await ready.first(lambda m: m.obj.get("status") == "connected")
        yield device
    finally:
        await device.stop()
        await paho.close()


async def test_a_device_comes_up_with_a_retained_status_and_sensors(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    async with running(sim_settings, device_name) as device:
        did = device.device_id
        assert device.state is DeviceState.IDLE
        # A subscriber arriving later gets what the broker retained.
        async with record(mosquitto.url, T.status(did), T.device_sensors(did)) as late:
            status = await late.first(lambda m: m.topic == T.status(did))
            assert status.retain
            assert status.obj["status"] == "connected"
            assert status.obj["transport"] == "mqtt"
            for field in ("uptime", "memory_usage", "cpu_usage", "wifi_signal", "free_heap"):
                assert field in status.obj
            for sensor, unit in (("temperature", "celsius"), ("humidity", "percent")):
                reading = await late.first(lambda m, s=sensor: m.topic == T.sensor(did, s))
                assert reading.retain
                assert reading.obj["unit"] == unit
                assert reading.obj["device_id"] == did


async def test_commands_on_its_topic_its_group_and_broadcast_get_command_results(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    async with running(sim_settings, device_name, groups=("kitchen",)) as device:
        did = device.device_id
        async with record(mosquitto.url, T.device_events(did), T.status(did)) as obs:
            await obs.publish(
                T.command(did),
                {"command": "set_volume", "parameters": {"volume": 80}, "message_id": "own"},
            )
            await obs.publish(
                T.group_command("kitchen"),
                {"command": "led", "parameters": {"on": True}, "message_id": "group"},
            )
            await obs.publish(T.broadcast_command(), {"command": "get_status", "message_id": "all"})
            for message_id, command in (
                ("own", "set_volume"),
                ("group", "led"),
                ("all", "get_status"),
            ):
                result = await obs.first(lambda m, i=message_id: m.obj.get("message_id") == i)
                assert result.topic == T.device_events(did)
                assert result.obj["event_type"] == "command_result"
                assert result.obj["command"] == command
                assert result.obj["status"] == "ok"
            # The effect is in the status the device publishes next.
            await obs.first(lambda m: m.obj.get("volume") == 80 and m.obj.get("light") == "on")
            await obs.publish(T.command(did), {"command": "dance", "message_id": "bad"})
            refused = await obs.first(lambda m: m.obj.get("message_id") == "bad")
            assert refused.obj["status"] == "error"
            assert "unknown command" in refused.obj["error"]
        assert device.model.volume == 80
        assert [r.payload.get("message_id") for r in device.inbox if r.kind == "command"] == [
            "own",
            "group",
            "all",
            "bad",
        ]


async def test_say_publishes_a_voice_command_and_respond_is_spoken(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    async with running(sim_settings, device_name) as device:
        did = device.device_id
        # Its own topic, as a firmware under the production ACL must (who spoke is the topic).
        async with record(mosquitto.url, T.device_voice_command(did)) as obs:
            await device.say("turn on the living room light")
            voice = await obs.first(lambda m: m.obj.get("device_id") == did)
        assert voice.obj["event_type"] == "voice_command"
        assert voice.obj["command"] == "turn on the living room light"
        assert voice.obj["language"] == "en"
        assert device.state is DeviceState.LISTENING
        async with record(mosquitto.url, T.device_events(did)) as obs:
            await obs.publish(
                T.command(did), {"command": "respond", "parameters": {"text": "It is on."}}
            )
            await obs.first(lambda m: m.obj.get("command") == "respond")
        assert device.model.last_response == "It is on."
        assert device.state is DeviceState.IDLE
        assert len(device.stats.voice_latency) == 1
        with pytest.raises(FaultNotApplicable, match="no audio path"):
            await device.speak(Path("x.wav"))


async def test_an_abrupt_disconnect_fires_the_will_and_the_device_comes_back(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    async with running(sim_settings, device_name) as device:
        did = device.device_id
        async with record(mosquitto.url, T.status(did)) as obs:
            await obs.first(lambda m: m.obj.get("status") == "connected")
            result = await device.inject(Fault.ABRUPT_DISCONNECT)
            assert "without DISCONNECT" in result.detail
            lwt = await obs.first(lambda m: m.obj.get("status") == "disconnected")
            assert lwt.obj == {"status": "disconnected", "device_id": did, "simulated": True}
            assert await device.wait_until(lambda: device.stats.connects == 2, 10)
            assert await device.wait_connected(5)
        async with record(mosquitto.url, T.status(did)) as late:
            retained = await late.first(lambda m: m.retain)
            assert retained.obj["status"] == "connected"


async def test_a_reboot_command_goes_offline_and_back(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    async with running(sim_settings, device_name) as device:
        did = device.device_id
        gone = T.device_disconnected()
        async with record(mosquitto.url, T.status(did), T.device_events(did), gone) as obs:
            await obs.publish(T.command(did), {"command": "reboot", "message_id": "r"})
            await obs.first(lambda m: m.obj.get("message_id") == "r")
            await obs.first(lambda m: m.obj.get("status") == "disconnected")
            await obs.first(lambda m: m.topic == gone and m.obj.get("device_id") == did)
            back = await obs.first(lambda m: m.obj.get("status") == "connected" and not m.retain)
            assert back.obj["uptime"] == 0
            # A fence: one connection, in order, so whatever the rebooted device still sends
            # of its life before (paho resends unacknowledged QoS 1 after a reconnect) comes
            # before the answer to a command sent now.
            await obs.publish(T.command(did), {"command": "get_status", "message_id": "fence"})
            await obs.first(lambda m: m.obj.get("message_id") == "fence")
            since = obs.messages[obs.messages.index(back) :]
            assert [m.obj for m in since if m.obj.get("status") == "disconnected"] == []
            # The goodbye came whole (no will: the broker had the DISCONNECT).
            assert [m.obj.get("status") for m in obs.messages if m.topic == T.status(did)][:3] == [
                "connected",
                "disconnected",
                "connected",
            ]
            assert len([m for m in obs.messages if m.obj.get("message_id") == "r"]) == 1
        async with record(mosquitto.url, T.status(did)) as late:
            retained = await late.first(lambda m: m.retain)
            assert retained.obj["status"] == "connected"
        assert device.model.reboots == 1


async def test_faults_on_mqtt(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    async with running(sim_settings, device_name) as device:
        did = device.device_id
        voice = T.device_voice_command(did)
        async with record(mosquitto.url, voice, T.status(did)) as obs:
            await device.inject(Fault.MALFORMED)
            await obs.first(lambda m: m.topic == voice and not m.obj)
            flood = await device.inject(Fault.FLOOD, count=50)
            assert flood.sent == 50
            # Over the broker's max_packet_size: the broker cuts the device off; it returns.
            await device.inject(Fault.OVERSIZE, size=2_200_000)
            await obs.first(lambda m: m.obj.get("status") == "disconnected")
            assert await device.wait_until(lambda: device.stats.connects == 2, 10)
        for fault in (Fault.TRUNCATED, Fault.BAD_TOKEN, Fault.WRONG_VERSION):
            with pytest.raises(FaultNotApplicable):
                await device.inject(fault)
        assert [r.payload["fault"] for r in device.inbox if r.kind == "fault"] == [
            "malformed",
            "flood",
            "oversize",
        ]


async def test_reconnect_with_backoff_then_give_up(tmp_path: Path, device_name: str) -> None:
    broker = ManagedMosquitto(tmp_path / "broker")
    broker.start()
    # 4 attempts over ~3 s: wide enough that a broker restart on a loaded machine fits in
    # the window, short enough that giving up after the second kill is quick.
    settings = SimSettings(
        mqtt_url=broker.url,
        sim_reconnect_delay_seconds=0.3,
        sim_reconnect_max_delay_seconds=1.0,
        sim_reconnect_attempts=4,
    )
    paho = PahoAsyncio()
    device = MqttDevice(make_identity(name=device_name), settings, paho=paho)
    try:
        await device.start()
        assert await device.wait_connected(10)
        broker.kill()
        assert await device.wait_until(lambda: not device.connected, 10)
        broker.start()  # same port
        assert await device.wait_connected(10), "did not reconnect after the broker came back"
        broker.kill()
        assert await device.wait_until(lambda: device.state is DeviceState.FATAL_ERROR, 10)
        assert device.stats.errors["gave_up"] == 1
        with pytest.raises(ChannelError):
            await device.say("anyone?")
    finally:
        await device.stop()
        await paho.close()
        broker.stop()


async def test_a_device_started_without_a_broker_keeps_trying(
    sim_settings: SimSettings, device_name: str
) -> None:
    with refused_port() as port:
        settings = sim_settings.model_copy(
            update={"mqtt_url": f"mqtt://127.0.0.1:{port}", "sim_reconnect_attempts": 2}
        )
        paho = PahoAsyncio()
        device = MqttDevice(make_identity(name=device_name), settings, paho=paho)
        await device.start()
        assert await device.wait_until(lambda: device.state is DeviceState.FATAL_ERROR, 10)
        assert device.stats.errors["connect"] == 3
        await device.stop()
        await paho.close()


async def test_a_device_announces_its_connect_and_its_clean_disconnect(
    mosquitto: ManagedMosquitto, sim_settings: SimSettings, device_name: str
) -> None:
    """An MQTT device has no edge to publish device_connected/disconnected for it."""
    async with record(mosquitto.url, T.device_connected(), T.device_disconnected()) as seen:
        async with running(sim_settings, device_name) as device:
            did = device.device_id
            came = await seen.first(
                lambda m: m.topic == T.device_connected() and m.obj.get("device_id") == did
            )
            assert came.obj["transport"] == "mqtt"
            assert "edge_id" not in came.obj
        went = await seen.first(
            lambda m: m.topic == T.device_disconnected() and m.obj.get("device_id") == did
        )
        assert went.obj["event_type"] == "device_disconnected"
