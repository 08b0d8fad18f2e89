"""Who a simulated device is: MAC, client UUID, board, firmware, hardware (seed 003).

Real firmware identifies itself by its Wi-Fi STA MAC (``Device-Id``, lower-case
``aa:bb:cc:dd:ee:ff``) and a UUID generated once and kept in NVS (``Client-Id``)
(reference section 1.2). The topic tree wants ids of ``[a-z0-9_-]``, so the MAC becomes
``aabbccddeeff`` there (:func:`xiaozhi.topics.normalize_device_id`).

Identities are derived from a seed and an index (or a name), never from the clock, so a fleet
of N devices is the same N devices on every run: retained topics are overwritten, not piled up.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from xiaozhi import __version__
from xiaozhi.messages import HardwareInfo
from xiaozhi.payloads import SIMULATOR_PRODUCT
from xiaozhi.topics import normalize_device_id, validate_device_id

__all__ = [
    "CHIP_MODEL",
    "CPU_FREQ_MHZ",
    "ESPRESSIF_OUI",
    "FLASH_SIZE_BYTES",
    "PSRAM_SIZE_BYTES",
    "DeviceIdentity",
    "make_identity",
]

ESPRESSIF_OUI: Final = (0xF4, 0x12, 0xFA)
"""An Espressif OUI used by ESP32-S3 modules; the simulated MACs live under it."""

CHIP_MODEL: Final = "ESP32-S3"
CPU_FREQ_MHZ: Final = 240
FLASH_SIZE_BYTES: Final = 16 * 1024 * 1024
PSRAM_SIZE_BYTES: Final = 8 * 1024 * 1024
"""Seed 003 ``device_register`` ``hardware_info``: ESP32-S3, 240 MHz, 16 MB flash, 8 MB PSRAM."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The fixed facts of one device.

    Attributes:
        mac: ``aa:bb:cc:dd:ee:ff`` as the firmware sends it in ``Device-Id``.
        client_id: the board UUID (``Client-Id``).
        device_id: the topic-tree id; by default the MAC without separators.
        board: ``BOARD_NAME`` (the ``User-Agent`` is ``board/firmware_version``).
        firmware_version: application version (OTA body, MCP ``serverInfo``).
        language: ``Accept-Language`` and the language of voice commands.
        name: a human label (fleet index or scenario name).
    """

    mac: str
    client_id: str
    device_id: str
    board: str = "bread-compact-wifi"
    firmware_version: str = "1.8.2"
    language: str = "en-US"
    name: str = ""
    hardware: HardwareInfo = field(
        default_factory=lambda: HardwareInfo(
            chip_model=CHIP_MODEL,
            chip_revision="0",
            cpu_freq=CPU_FREQ_MHZ,
            flash_size=FLASH_SIZE_BYTES,
            psram_size=PSRAM_SIZE_BYTES,
        )
    )

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)

    @property
    def header_device_id(self) -> str:
        """What goes in ``Device-Id``: the MAC, as real firmware sends it (reference 1.2), or
        the id this device was given instead of its MAC (the demo's ``demo_kitchen``), so
        the edge and the hub know it by that id."""
        if self.device_id == normalize_device_id(self.mac):
            return self.mac
        return self.device_id

    @property
    def user_agent(self) -> str:
        """``<BOARD_NAME>/<fw version>`` (reference section 3.1), then our product token
        (``xiaozhi-sim/<version>``, :data:`~xiaozhi.payloads.SIMULATOR_PRODUCT`): the edge
        marks the device ``simulated``, so the hub keeps it out of Home Assistant."""
        return f"{self.board}/{self.firmware_version} {SIMULATOR_PRODUCT}/{__version__}"

    @property
    def language_code(self) -> str:
        """``en`` out of ``en-US``: what seed 003's ``voice_command.language`` carries."""
        return self.language.split("-", 1)[0]

    def system_info(self) -> dict[str, Any]:
        """The setup POST body, ``Board::GetSystemInfoJson`` (reference section 3.1).

        ``board`` is free-form per board in firmware; ours adds seed 003's hardware facts.
        """
        return {
            "version": 2,
            "language": self.language,
            "flash_size": FLASH_SIZE_BYTES,
            "minimum_free_heap_size": "152340",
            "mac_address": self.mac,
            "uuid": self.client_id,
            "chip_model_name": "esp32s3",
            "chip_info": {"model": 9, "cores": 2, "revision": 0, "features": 18},
            "application": {
                "name": "xiaozhi",
                "version": self.firmware_version,
                "compile_time": "2026-08-01T00:00:00Z",
                "idf_version": "v5.4.1",
                "elf_sha256": hashlib.sha256(self.firmware_version.encode()).hexdigest(),
            },
            "partition_table": [
                {"label": "nvs", "type": 1, "subtype": 2, "address": 0x9000, "size": 0x4000},
                {"label": "otadata", "type": 1, "subtype": 0, "address": 0xD000, "size": 0x2000},
                {"label": "ota_0", "type": 0, "subtype": 16, "address": 0x20000, "size": 0x3F0000},
                {"label": "ota_1", "type": 0, "subtype": 17, "address": 0x410000, "size": 0x3F0000},
            ],
            "ota": {"label": "ota_0"},
            "display": {"monochrome": False, "width": 240, "height": 240},
            "board": {
                "type": self.board,
                "name": self.board,
                "mac": self.mac,
                "chip_model": CHIP_MODEL,
                "cpu_freq_mhz": CPU_FREQ_MHZ,
                "psram_size": PSRAM_SIZE_BYTES,
            },
        }


def _rng_for(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_identity(
    *,
    seed: int = 0,
    index: int | None = None,
    name: str | None = None,
    device_id: str | None = None,
    board: str = "bread-compact-wifi",
    firmware_version: str = "1.8.2",
    language: str = "en-US",
) -> DeviceIdentity:
    """A deterministic identity for fleet member ``index`` or for a named device.

    With an ``index``, the last three MAC bytes are a seed-derived base plus the index, so the
    devices of one fleet never collide (up to 16 million of them). With a ``name``, they are a
    hash of it.

    Raises:
        ValueError: neither or both of ``index`` and ``name``.
        InvalidTopic: ``device_id`` does not fit the topic grammar.
    """
    if (index is None) == (name is None):
        raise ValueError("give exactly one of index and name")
    key = f"index:{index}" if index is not None else f"name:{name}"
    rng = _rng_for(seed, key)
    if index is not None:
        base = _rng_for(seed, "fleet").getrandbits(24)
        tail = (base + index) % (1 << 24)
    else:
        tail = rng.getrandbits(24)
    octets = (*ESPRESSIF_OUI, tail >> 16, (tail >> 8) & 0xFF, tail & 0xFF)
    mac = ":".join(f"{b:02x}" for b in octets)
    client_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return DeviceIdentity(
        mac=mac,
        client_id=client_id,
        device_id=device_id if device_id is not None else normalize_device_id(mac),
        board=board,
        firmware_version=firmware_version,
        language=language,
        name=name if name is not None else f"sim-{index}",
    )
