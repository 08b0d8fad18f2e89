"""The home file as a newcomer's editor and eyes see it: docs/home.schema.json (generated from
the models, so it cannot drift), docs/home.md (every field, described), and "did you mean"."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from xiaozhi_hub.home import (
    DEMO_HOME_PATH,
    Area,
    Device,
    Entity,
    Floor,
    Group,
    Home,
    HomeAssistantBinding,
    HomeConfigError,
    MqttBinding,
    VirtualBinding,
    XiaozhiBinding,
    home_json_schema,
    parse_home,
)

DOCS = Path(__file__).parents[2] / "docs"
MODELS: tuple[type[BaseModel], ...] = (
    Home,
    Floor,
    Area,
    Entity,
    Device,
    Group,
    XiaozhiBinding,
    MqttBinding,
    HomeAssistantBinding,
    VirtualBinding,
)


def test_the_shipped_schema_is_the_models() -> None:
    shipped = json.loads((DOCS / "home.schema.json").read_text(encoding="utf-8"))
    assert shipped == home_json_schema(), "run: xiaozhi hub --home-schema > docs/home.schema.json"


def test_the_demo_home_passes_the_schema_and_typos_do_not() -> None:
    validator = jsonschema.Draft202012Validator(home_json_schema())
    demo = yaml.safe_load(DEMO_HOME_PATH.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(demo)) == []
    demo["areas"][0]["nme"] = "Lounge"
    demo["entities"][0]["binding"]["type"] = "virtul"
    assert len(list(validator.iter_errors(demo))) >= 2


def test_every_field_is_described_in_docs_home_md() -> None:
    text = (DOCS / "home.md").read_text(encoding="utf-8")
    for model in MODELS:
        for name, field in model.model_fields.items():
            if name == "token":
                continue  # refused, not documented as a field (docs say why)
            assert field.description, f"{model.__name__}.{name} has no description"
            assert f"| `{name}` |" in text, f"docs/home.md lacks {model.__name__}.{name}"
            assert field.description in text, f"docs/home.md: {model.__name__}.{name} differs"


def test_unknown_references_suggest_the_close_name() -> None:
    with pytest.raises(HomeConfigError) as caught:
        parse_home(
            {
                "floors": [{"id": "ground", "name": "Ground"}],
                "areas": [{"id": "kitchen", "name": "Kitchen", "floor": "groud"}],
                "devices": [{"id": "dev1", "name": "Dev", "area": "kitchn"}],
                "entities": [{"entity_id": "light.a", "name": "a", "binding": {"type": "virtul"}}],
            },
            source="my_home.yaml",
        )
    message = str(caught.value)
    assert "unknown floor 'groud' (did you mean 'ground'?" in message
    assert "unknown area 'kitchn' (did you mean 'kitchen'?" in message
    assert "unknown binding type 'virtul' (did you mean 'virtual'?" in message
    for internal in ("xiaozhi_hub", "ValidationError", "pydantic", "Traceback", "_validate"):
        assert internal not in message, internal
