"""docs/home-assistant.md says what a Home Assistant user will find: the entities the hub
discovers, the broker rights the integrator block grants, and home-file snippets that load."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

from xiaozhi.payloads import SensorPayload, StatusPayload
from xiaozhi.topics import TopicTree
from xiaozhi_hub.discovery import DEVICE_EVENT_TYPES, device_configs
from xiaozhi_hub.home import parse_home
from xiaozhi_hub.registry import Registry

REPO = Path(__file__).resolve().parents[2]
GUIDE = (REPO / "docs" / "home-assistant.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    """The guide's code blocks in ``language`` ("" for none), list indentation removed."""
    blocks: list[str] = []
    inside: str | None = None  # the open block's language
    body: list[str] = []
    for line in GUIDE.splitlines():
        if not line.strip().startswith("```"):
            body.append(line)
        elif inside is None:
            inside, body = line.strip()[3:], []
        else:
            if inside == language:
                blocks.append(textwrap.dedent("\n".join(body)))
            inside = None
    return blocks


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def test_the_entity_table_lists_what_discovery_publishes(registry: Registry) -> None:
    registry.apply_status(
        StatusPayload.model_validate(
            {
                "status": "connected",
                "device_id": "demo_kitchen",
                **dict.fromkeys(("uptime", "wifi_signal", "free_heap"), 1),
                **dict.fromkeys(("memory_usage", "cpu_usage"), 1.5),
            }
        ),
        now=1.0,
    )
    registry.apply_sensor(
        SensorPayload(
            sensor_type="temperature", value=21.5, unit="celsius", device_id="demo_kitchen"
        ),
        now=1.0,
    )
    record = registry.device("demo_kitchen")
    assert record is not None
    assert record.name == "Kitchen speaker"  # the guide's example device
    configs = device_configs(record, topics=TopicTree())
    discovered = {
        f"{topic.split('/')[1]}.{_slug(record.name)}_{_slug(payload['name'])}"
        for topic, payload in configs
    }
    rows = [line for line in GUIDE.splitlines() if line.startswith("| ") and "`" in line]
    table = {
        entity_id
        for row in rows
        for entity_id in re.findall(r"`((?:binary_sensor|sensor|number|button|event)\.\w+)`", row)
    }
    assert table, "the guide's entity table"
    assert table <= discovered, f"in the guide, not discovered: {table - discovered}"
    names = {payload["name"] for _, payload in configs}
    listed = re.search(r"\| Uptime, (.*?) \(sensors", GUIDE)
    assert listed is not None
    assert {"Uptime", *listed.group(1).split(", ")} <= names
    # The Voice entity's event types, as the guide lists them.
    voice_row = next(row for row in rows if row.startswith("| Voice (event)"))
    assert set(re.findall(r"`(\w+)`", voice_row.split("|")[3])) == set(DEVICE_EVENT_TYPES)


def test_the_homeassistant_user_gets_the_integrators_rights() -> None:
    acl = (REPO / "mosquitto" / "acl-public").read_text(encoding="utf-8")
    integrator = re.search(r"^user integrator\n(.*?)\n\n", acl, flags=re.DOTALL | re.MULTILINE)
    assert integrator is not None
    rights = [line for line in integrator.group(1).splitlines() if line.startswith("topic ")]
    guide_block = next(block for block in _blocks("") if block.startswith("user homeassistant"))
    assert guide_block.splitlines()[1:] == rights


def test_the_guides_bindings_load_as_a_home() -> None:
    (snippet,) = [block for block in _blocks("yaml") if block.lstrip().startswith("entities:")]
    data = yaml.safe_load(snippet)
    areas = sorted({entity["area"] for entity in data["entities"]})
    home = parse_home({"areas": [{"id": a, "name": a} for a in areas], **data}, source="guide")
    bindings = [entity.binding for entity in home.entities]
    assert [b.type for b in bindings] == ["homeassistant", "homeassistant"]
    assert {b.token_env for b in bindings} == {"HA_TOKEN"}  # type: ignore[union-attr]
