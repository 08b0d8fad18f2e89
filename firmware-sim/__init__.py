"""Firmware simulator: an ESP32-S3 over WebSocket and MQTT, one device or thousands.

Speaks only the wire protocols (it imports :mod:`xiaozhi`, never the edge or the hub, and
:mod:`xiaozhi_runtime.runner` for signals). The pure parts - :mod:`~xiaozhi_sim.state`,
:mod:`~xiaozhi_sim.firmware_protocol` (the device side of the firmware's WebSocket protocol),
:mod:`~xiaozhi_sim.mcp_server`, :mod:`~xiaozhi_sim.executor`, :mod:`~xiaozhi_sim.serial`,
:mod:`~xiaozhi_sim.model`, :mod:`~xiaozhi.backoff` - hold the behaviour; the transports
(:class:`WsDevice`, :class:`MqttDevice`) only move bytes.

For ``xiaozhi up``::

    from xiaozhi_sim import SimSettings, demo_fleet

    fleet = demo_fleet(SimSettings(mqtt_url=broker_url))   # WS v1, WS v3, MQTT; talk every 20 s
    await fleet.start()
    ...
    await fleet.stop()

For ``xiaozhi sim``: :func:`xiaozhi_sim.cli.add_sim_parser`.
"""

from xiaozhi_sim.device import (
    ChannelError,
    Fault,
    FaultNotApplicable,
    FaultResult,
    Received,
    SimError,
    SimulatedDevice,
)
from xiaozhi_sim.fleet import (
    DEMO_PHRASES,
    DeviceSpec,
    Fleet,
    build_device,
    demo_fleet,
    demo_specs,
    fleet_specs,
)
from xiaozhi_sim.identity import DeviceIdentity, make_identity
from xiaozhi_sim.integrator import Integrator
from xiaozhi_sim.mqtt_device import MqttDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.settings import SimSettings, SimSettingsError, load_sim_settings
from xiaozhi_sim.state import DeviceState
from xiaozhi_sim.stats import SimStats
from xiaozhi_sim.ws_device import WsDevice

__all__ = [
    "DEMO_PHRASES",
    "ChannelError",
    "DeviceIdentity",
    "DeviceSpec",
    "DeviceState",
    "Fault",
    "FaultNotApplicable",
    "FaultResult",
    "Fleet",
    "Integrator",
    "MqttDevice",
    "PahoAsyncio",
    "Received",
    "SimError",
    "SimSettings",
    "SimSettingsError",
    "SimStats",
    "SimulatedDevice",
    "WsDevice",
    "build_device",
    "demo_fleet",
    "demo_specs",
    "fleet_specs",
    "load_sim_settings",
    "make_identity",
]
