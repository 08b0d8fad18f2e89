"""TLS end to end on mosquitto/production.conf (issue 13, point 5): an edge and a hub on
another host reach the broker with `mqtts://` on its private TLS listener, verifying its
certificate against the CA they are given; devices reach the edge with `wss://`;
integrators use the public TLS listener. Certificates are made with openssl in the test.
"""

from __future__ import annotations

import contextlib
import ssl
import uuid
from pathlib import Path

import aiomqtt
import pytest
import websockets

from tests.conftest import StartEdge
from tests.edge.devices import Device
from tests.production_broker import ProductionBroker, production_broker
from tests.support import record
from xiaozhi.payloads import CommandPayload
from xiaozhi_edge.settings import load_edge_settings
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.service import HubService
from xiaozhi_hub.settings import HubSettings

pytestmark = pytest.mark.integration  # a real Mosquitto

PRIVATE_USERS = ("xiaozhi-edge", "xiaozhi-hub")
PUBLIC_USERS = ("integrator",)
DEVICE = "demo_living_room"


@pytest.fixture
def prod(tmp_path: Path) -> contextlib.AbstractContextManager[ProductionBroker]:
    return production_broker(tmp_path / "broker", private=PRIVATE_USERS, public=PUBLIC_USERS)


async def test_edge_hub_devices_and_integrators_all_over_tls(
    prod: contextlib.AbstractContextManager[ProductionBroker],
    start_edge: StartEdge,
    hub_settings: HubSettings,
    engine: IntentEngine,
    tmp_path: Path,
) -> None:
    """Every hop encrypted: device -wss-> edge -mqtts-> broker <-mqtts- hub, and an integrator
    on the public TLS listener commands the device."""
    with prod as broker:
        certs = tmp_path / "broker"  # the broker's certificate (CN and SAN 127.0.0.1)
        async with contextlib.AsyncExitStack() as stack:
            integrator = await stack.enter_async_context(
                record(broker.public_url("integrator"), "xiaozhi/#", tls=broker.tls)
            )
            settings = hub_settings.model_copy(
                update={
                    "mqtt_url": broker.private_tls_url("xiaozhi-hub"),
                    "mqtt_ca_file": broker.ca_file,
                    "base_topic": "xiaozhi",
                    "discovery_prefix": "homeassistant",
                }
            )
            hub = HubService(settings, home=engine.home, engine=engine)
            await hub.start()
            stack.push_async_callback(hub.stop)
            edge = await start_edge(
                mqtt_url=broker.private_tls_url("xiaozhi-edge"),
                mqtt_ca_file=broker.ca_file,
                edge_tls_cert_file=certs / "server.crt",
                edge_tls_key_file=certs / "server.key",
                edge_id="edge-tls",
            )
            await integrator.expect("xiaozhi/bridge/state", lambda s: s.get("state") == "online")
            await integrator.expect(
                "xiaozhi/bridge/edges/edge-tls", lambda s: s["state"] == "online"
            )

            device = await Device.connect(edge.port, device_id=DEVICE, tls=broker.tls)
            stack.push_async_callback(device.close)
            await device.hello()
            await integrator.expect(
                f"xiaozhi/status/{DEVICE}", lambda s: s["status"] == "connected"
            )
            command = CommandPayload(
                command="alert",
                parameters={"status": "info", "message": "encrypted all the way"},
                message_id=uuid.uuid4().hex,
            )
            await integrator.publish(f"xiaozhi/commands/{DEVICE}", command.to_wire())
            alert = await device.expect("alert")
            assert alert["message"] == "encrypted all the way"

            # The device port speaks TLS only: a plain ws:// client gets no WebSocket.
            with pytest.raises((websockets.InvalidMessage, ConnectionError, OSError)):
                await websockets.connect(f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/")


async def test_the_brokers_certificate_is_verified_by_default(
    prod: contextlib.AbstractContextManager[ProductionBroker],
) -> None:
    """An edge given `mqtts://` and no CA file trusts the system's store only: a broker with a
    certificate from an unknown CA (here self-signed) is refused, not silently trusted; with
    the CA named (XIAOZHI_MQTT_CA_FILE) the same broker is accepted."""
    with prod as broker:
        url = broker.private_tls_url("xiaozhi-edge")
        unverified = load_edge_settings(mqtt_url=url, device_auth="open").mqtt_tls()
        assert unverified is not None
        assert unverified.verify_mode is ssl.CERT_REQUIRED
        assert unverified.check_hostname
        user = "xiaozhi-edge"
        with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED"):
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.private_tls_port,
                username=user,
                password=f"pw-{user}",
                tls_context=unverified,
            ):
                pass
        trusted = load_edge_settings(
            mqtt_url=url, mqtt_ca_file=broker.ca_file, device_auth="open"
        ).mqtt_tls()
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.private_tls_port,
            username=user,
            password=f"pw-{user}",
            tls_context=trusted,
        ):
            pass
