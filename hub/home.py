"""The home model: floors, areas, entities with bindings, xiaozhi devices and groups (design.md §6).

One YAML file (``XIAOZHI_CONFIG``, default :data:`DEMO_HOME_PATH`) describes the home::

    floors:   [{id: ground, name: ground floor, aliases: [downstairs]}]
    areas:    [{id: kitchen, name: Kitchen, floor: ground}]
    entities: [{entity_id: light.kitchen, name: kitchen light, area: kitchen,
                binding: {type: mqtt, topic: zigbee2mqtt/kitchen_light/set,
                          payloads: {turn_on: {state: "ON"}, turn_off: {state: "OFF"}}}}]
    devices:  [{id: demo_kitchen, name: Kitchen speaker, area: kitchen, groups: [downstairs]},
               {id: nainai, name: Grandma's speaker, area: bedroom, language: zh-CN}]
    groups:   [{id: downstairs, name: Downstairs, members: [demo_living_room]}]

An entity's **binding** says which executor acts on it (:mod:`xiaozhi_hub.executors`):

* ``xiaozhi``: a function of a xiaozhi device (its LED, its speaker volume): a command on
  ``xiaozhi/commands/{device_id}``; ``command`` defaults from the action (``turn_on``/``turn_off``
  → ``led``, ``volume_set`` → ``set_volume``, ``update_entity`` → ``get_status``), and
  ``parameters`` is a template merged over the built-in parameters;
* ``mqtt``: any topic with one payload template per action (a zigbee2mqtt ``…/set``);
* ``homeassistant``: a Home Assistant REST API; the long-lived token is read from the environment
  variable named by ``token_env``, never written in the YAML;
* ``virtual`` (the default): in-memory state only, for the demo.

Payload templates (``mqtt.payloads`` values, ``xiaozhi.parameters``) are plain JSON with
``{name}`` placeholders, no Jinja: a string that is exactly one placeholder is replaced by the
typed value (and its key left out when the value is absent); placeholders inside longer strings
are substituted as text; ``{{``/``}}`` are literal braces. :data:`TEMPLATE_VARIABLES` lists the
names; an unknown one is refused when the file is loaded.

:func:`load_home` validates the whole file and raises one :class:`HomeConfigError` listing
*every* problem with the file, its path (``entities[2].binding.topic``) and the field, as Home
Assistant's config check and zigbee2mqtt's settings validation do.

Devices met at runtime but absent from the YAML (WebSocket devices named by their MAC) are
still valid: the registry learns them, and their area is ``None``.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from xiaozhi._validation import field_path
from xiaozhi.commands import DeviceCommand
from xiaozhi.errors import ConfigurationError
from xiaozhi.topics import validate_device_id, validate_id
from xiaozhi_hub.languages import intent_language

__all__ = [
    "ACTION_NAMES",
    "DEMO_HOME_PATH",
    "TEMPLATE_VARIABLES",
    "Area",
    "Binding",
    "ConfigProblem",
    "Device",
    "DeviceFunction",
    "Entity",
    "Floor",
    "Group",
    "Home",
    "HomeAssistantBinding",
    "HomeConfigError",
    "MqttBinding",
    "VirtualBinding",
    "XiaozhiBinding",
    "entity_slug",
    "home_json_schema",
    "load_home",
    "parse_home",
    "template_placeholders",
]

DEMO_HOME_PATH = Path(__file__).with_name("demo_home.yaml")
"""The shipped demo home (design.md §6), used when ``XIAOZHI_CONFIG`` is unset."""

ACTION_NAMES = frozenset(
    {
        "turn_on",
        "turn_off",
        "lock",
        "unlock",
        "open_cover",
        "close_cover",
        "set_temperature",
        "volume_set",
        "update_entity",
    }
)
"""Every ``action`` the planner emits (Home Assistant service names); ``payloads`` keys."""

TEMPLATE_VARIABLES = frozenset(
    {
        "action",  # the action name: turn_on, lock, set_temperature...
        "entity_id",  # our entity id
        "state",  # "ON"/"OFF" for turn_on/turn_off, "LOCK"/"UNLOCK" for lock/unlock
        "brightness_pct",  # 0-100 (HassLightSet)
        "brightness",  # 0-255, Home Assistant's scale
        "brightness_254",  # 0-254, zigbee2mqtt's scale
        "brightness_step_pct",  # -100-100, a relative change ("dim the light")
        "brightness_step_254",  # the same on zigbee2mqtt's scale (its brightness_step)
        "color_name",  # "red"...
        "temperature",  # target temperature in °C
        "volume",  # 0-100
        "volume_level",  # 0.0-1.0, Home Assistant's scale
    }
)
"""Names a payload template may use (module docstring)."""

_ENTITY_ID_RE = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_NAME_CHARS = 100


# -- errors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a home file: where it is and what is wrong."""

    path: str  # "entities[2].binding.topic"; "" for the file as a whole
    message: str

    @property
    def field(self) -> str | None:
        """The last field name of :attr:`path` (``topic``), or None for the whole file."""
        names = [part for part in re.split(r"[.\[\]]", self.path) if part and not part.isdigit()]
        return names[-1] if names else None


class HomeConfigError(ConfigurationError):
    """A home file that does not validate; :attr:`problems` holds every problem found.

    The message lists one line per problem, each naming the file and the path, e.g.
    ``home.yaml: entities[2].binding.topic: missing required field``.
    """

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        lines = [
            f"{source}: {p.path}: {p.message}" if p.path else f"{source}: {p.message}"
            for p in problems
        ]
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"invalid home file {source} ({count}):\n  " + "\n  ".join(lines))
        self.source, self.problems = source, problems


# -- field types ---------------------------------------------------------------------------


def _entity_id(value: str) -> str:
    if _ENTITY_ID_RE.fullmatch(value) is None:
        raise ValueError(
            f"invalid entity id {value!r}: expected '<domain>.<object_id>' of a-z, 0-9 and '_' "
            "(like 'light.living_room')"
        )
    return value


def _name(value: str) -> str:
    value = value.strip()
    if not value or len(value) > _MAX_NAME_CHARS:
        raise ValueError(f"expected a name of 1-{_MAX_NAME_CHARS} characters")
    return value


Name = Annotated[str, AfterValidator(_name)]
AreaId = Annotated[str, AfterValidator(partial(validate_id, what="area id"))]
FloorId = Annotated[str, AfterValidator(partial(validate_id, what="floor id"))]
GroupId = Annotated[str, AfterValidator(partial(validate_id, what="group id"))]
DeviceId = Annotated[str, AfterValidator(validate_device_id)]
EntityId = Annotated[str, AfterValidator(_entity_id)]
Language = Annotated[str, AfterValidator(intent_language)]


def template_placeholders(template: Any) -> set[str]:
    """Every ``{name}`` placeholder in a template (a JSON value or a string).

    Raises:
        ValueError: a placeholder that is not a plain name (``{a.b}``, ``{0}``, ``{x:>3}``)
            or unbalanced braces.
    """
    found: set[str] = set()
    if isinstance(template, str):
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ValueError(f"placeholder {{{name}}} must be a plain name like {{brightness}}")
            found.add(name)
    elif isinstance(template, dict):
        for key, value in template.items():
            found |= template_placeholders(key) | template_placeholders(value)
    elif isinstance(template, list):
        for value in template:
            found |= template_placeholders(value)
    return found


def _check_template(template: Any) -> Any:
    names = template_placeholders(template)
    unknown = sorted(names - TEMPLATE_VARIABLES)
    if unknown:
        known = ", ".join(sorted(TEMPLATE_VARIABLES))
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {known})")
    return template


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# -- bindings ------------------------------------------------------------------------------


class XiaozhiBinding(_Model):
    """The entity is a function of a xiaozhi device (its LED, its speaker)."""

    type: Literal["xiaozhi"] = Field(default="xiaozhi", description="A xiaozhi device's function.")
    device_id: DeviceId = Field(description="The device (its id, as in `devices`).")
    command: str | None = Field(
        default=None,
        description="The command to send (set_volume, led, reboot, ... or a custom one); "
        "unset: chosen by the action (turn_on/turn_off -> led, volume_set -> set_volume, "
        "update_entity -> get_status).",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="A payload template merged over the command's built-in parameters.",
    )

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_template(value)


class MqttBinding(_Model):
    """Any MQTT topic, one payload template per action (e.g. a zigbee2mqtt ``…/set``)."""

    type: Literal["mqtt"] = Field(default="mqtt", description="Any MQTT topic.")
    topic: str = Field(
        description="The topic to publish on, without wildcards (zigbee2mqtt/kitchen_light/set)."
    )
    payloads: dict[str, Any] = Field(
        description="One payload template per action (turn_on, turn_off, toggle, "
        "volume_set, ...): a JSON object or a text string with {placeholders}."
    )
    qos: Literal[0, 1] = Field(default=1, description="MQTT QoS of the publish.")
    retain: bool = Field(default=False, description="Publish retained.")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not value or any(c in value for c in "+#\x00") or value.startswith("$"):
            raise ValueError(
                f"invalid topic {value!r}: expected a concrete topic without '+', '#' or a "
                "leading '$' (like 'zigbee2mqtt/kitchen_light/set')"
            )
        return value

    @field_validator("payloads")
    @classmethod
    def _payloads(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("expected at least one action, like {turn_on: {state: 'ON'}}")
        for action, template in value.items():
            if action not in ACTION_NAMES:
                known = ", ".join(sorted(ACTION_NAMES))
                raise ValueError(f"unknown action {action!r} (known: {known})")
            if not isinstance(template, dict | str):
                hint = " (quote ON/OFF: YAML reads them as true/false)" * isinstance(template, bool)
                raise ValueError(f"payload of {action!r} must be a JSON object or a string{hint}")
            _check_template(template)
        return value


class HomeAssistantBinding(_Model):
    """An entity of a Home Assistant instance, driven through its REST API."""

    type: Literal["homeassistant"] = Field(
        default="homeassistant", description="An entity of a Home Assistant instance."
    )
    base_url: str = Field(description="Home Assistant's URL (http://homeassistant.local:8123).")
    token_env: str = Field(
        description="The environment variable holding a long-lived access token (HA_TOKEN); "
        "the token itself never goes in this file."
    )
    entity_id: EntityId | None = Field(
        default=None, description="Home Assistant's entity id, when it differs from ours."
    )

    # Refused, only here to say why; left out of the JSON Schema.
    token: SkipJsonSchema[str | None] = Field(default=None, exclude=True)

    @field_validator("token")
    @classmethod
    def _no_token(cls, value: str | None) -> None:
        raise ValueError(
            "a token must not be written in the home file: put it in an environment "
            "variable and name that variable in 'token_env'"
        )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(
                f"invalid base_url {value!r}: expected http(s)://host[:port], "
                "like 'http://homeassistant.local:8123'"
            )
        return value.rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if _ENV_NAME_RE.fullmatch(value) is None:
            raise ValueError(
                f"invalid token_env {value!r}: expected an environment variable name "
                "like 'HA_TOKEN'"
            )
        return value


class VirtualBinding(_Model):
    """In-memory state only (the demo); ``state`` is the initial state."""

    type: Literal["virtual"] = Field(
        default="virtual", description="In-memory state only (demos, tests)."
    )
    state: dict[str, Any] = Field(
        default_factory=dict, description="The initial state ({state: 'off', brightness: 0})."
    )


Binding = Annotated[
    XiaozhiBinding | MqttBinding | HomeAssistantBinding | VirtualBinding,
    Field(discriminator="type"),
]
_BINDING_TYPES = ("xiaozhi", "mqtt", "homeassistant", "virtual")


# -- home items ----------------------------------------------------------------------------


_ID_TEXT = "a-z, 0-9, '_' or '-'"


class Floor(_Model):
    """A floor of the home ("upstairs"): areas name it, voice commands may too."""

    id: FloorId = Field(description=f"Its id ({_ID_TEXT}).")
    name: Name = Field(description="What people call it.")
    aliases: list[Name] = Field(default_factory=list, description="Other names for it.")
    level: int | None = Field(default=None, description="0 ground floor, 1 first floor, ...")


class Area(_Model):
    """A room or zone ("kitchen"): where entities and devices are."""

    id: AreaId = Field(description=f"Its id ({_ID_TEXT}).")
    name: Name = Field(description="What people call it.")
    aliases: list[Name] = Field(default_factory=list, description="Other names for it.")
    floor: FloorId | None = Field(default=None, description="The floor it is on (a floor id).")


class Entity(_Model):
    """A thing that can be acted on, Home Assistant style (``light.living_room``)."""

    entity_id: EntityId = Field(
        description="<domain>.<object_id> of a-z, 0-9 and '_' (light.living_room); the "
        "domain (light, switch, lock, cover, climate, media_player, sensor, ...) says what "
        "can be done to it."
    )
    name: Name = Field(description='What people call it ("living room light").')
    aliases: list[Name] = Field(default_factory=list, description="Other names for it.")
    area: AreaId | None = Field(default=None, description="Where it is (an area id).")
    binding: Binding = Field(
        default_factory=VirtualBinding,
        description="What acts on it: type xiaozhi, mqtt, homeassistant or virtual (default).",
    )

    @property
    def domain(self) -> str:
        """``light`` for ``light.living_room``."""
        return self.entity_id.split(".", 1)[0]

    @property
    def names(self) -> list[str]:
        """The name, then the aliases: everything the entity may be called."""
        return [self.name, *self.aliases]


class Device(_Model):
    """A xiaozhi device known in advance (others are learnt at runtime)."""

    id: DeviceId = Field(
        description="The device id as it connects: its MAC in lower case without ':' "
        f"(aabbccddeeff), or any id of {_ID_TEXT}."
    )
    name: Name = Field(description="Its display name (in Home Assistant too).")
    area: AreaId | None = Field(
        default=None, description='Where it is: "turn on the light" said to it means this area\'s.'
    )
    groups: list[GroupId] = Field(
        default_factory=list, description="Groups it belongs to (group ids)."
    )
    model: str | None = Field(default=None, description="Shown as the model in Home Assistant.")
    language: Language | None = Field(
        default=None,
        description="What its people speak when it differs from the home's (XIAOZHI_LANGUAGE), "
        "like zh-CN: its commands are understood and answered in it.",
    )
    transport: Literal["websocket", "mqtt-udp"] | None = Field(
        default=None,
        description="How its firmware connects, given in the setup (OTA) answer: the edge's "
        "WebSocket or MQTT + UDP. Unset: the fleet's XIAOZHI_DEVICE_TRANSPORT.",
    )


class Group(_Model):
    """Devices commanded together on xiaozhi/commands/group/{id}."""

    id: GroupId = Field(description=f"Its id ({_ID_TEXT}).")
    name: Name = Field(description="Its display name.")
    members: list[DeviceId] = Field(default_factory=list, description="Device ids in it.")


class DeviceFunction(enum.StrEnum):
    """What a xiaozhi device offers as an entity (:meth:`Home.device_entity`)."""

    SPEAKER = "speaker"  # media_player: volume_set, update_entity (status)
    LED = "led"  # light: turn_on / turn_off


_FUNCTION_DOMAIN = {DeviceFunction.SPEAKER: "media_player", DeviceFunction.LED: "light"}
_FUNCTION_COMMAND = {DeviceFunction.SPEAKER: DeviceCommand.SET_VOLUME, DeviceFunction.LED: "led"}


def entity_slug(device_id: str) -> str:
    """A device id as an entity object id: ``demo-1`` → ``demo_1`` (entity ids have no '-')."""
    return device_id.replace("-", "_")


class Home(_Model):
    """The validated home; build it with :func:`load_home` or :func:`parse_home`."""

    floors: list[Floor] = Field(default_factory=list, description="The home's floors.")
    areas: list[Area] = Field(default_factory=list, description="Its rooms and zones.")
    entities: list[Entity] = Field(default_factory=list, description="What voice commands act on.")
    devices: list[Device] = Field(
        default_factory=list,
        description="xiaozhi devices known in advance (others are learnt when they connect).",
    )
    groups: list[Group] = Field(default_factory=list, description="Device groups.")

    _floors: dict[str, Floor] = PrivateAttr(default_factory=dict)
    _areas: dict[str, Area] = PrivateAttr(default_factory=dict)
    _entities: dict[str, Entity] = PrivateAttr(default_factory=dict)
    _devices: dict[str, Device] = PrivateAttr(default_factory=dict)
    _groups: dict[str, Group] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._floors = {f.id: f for f in self.floors}
        self._areas = {a.id: a for a in self.areas}
        self._entities = {e.entity_id: e for e in self.entities}
        self._devices = {d.id: d for d in self.devices}
        self._groups = {g.id: g for g in self.groups}

    def floor(self, floor_id: str | None) -> Floor | None:
        return self._floors.get(floor_id) if floor_id else None

    def area(self, area_id: str | None) -> Area | None:
        return self._areas.get(area_id) if area_id else None

    def sandboxed(self) -> Home:
        """This home with every entity's binding made ``virtual``: the demo home on a real
        installation's broker acts on nothing real (its kitchen light is otherwise bound to
        ``zigbee2mqtt/kitchen_light/set``, which may well be somebody's bulb)."""
        entities = [
            e
            if isinstance(e.binding, VirtualBinding)
            else e.model_copy(update={"binding": VirtualBinding(state=_sandbox_state(e))})
            for e in self.entities
        ]
        return Home(
            floors=self.floors,
            areas=self.areas,
            entities=entities,
            devices=self.devices,
            groups=self.groups,
        )

    def area_name(self, area_id: str | None) -> str | None:
        """The area's display name (``Living Room``) for ``suggested_area``, or None."""
        area = self.area(area_id)
        return area.name if area else None

    def entity(self, entity_id: str) -> Entity | None:
        return self._entities.get(entity_id)

    def device(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def group(self, group_id: str) -> Group | None:
        return self._groups.get(group_id)

    def areas_on_floor(self, floor_id: str) -> list[Area]:
        return [a for a in self.areas if a.floor == floor_id]

    def entities_in(
        self, *, domain: str | None = None, areas: Iterable[str] | None = None
    ) -> list[Entity]:
        """Entities of ``domain`` (any when None) in ``areas`` (anywhere when None), in order."""
        wanted = None if areas is None else set(areas)
        return [
            e
            for e in self.entities
            if (domain is None or e.domain == domain) and (wanted is None or e.area in wanted)
        ]

    def group_members(self) -> dict[str, list[str]]:
        """Group id → device ids: a group's ``members`` plus devices naming it in ``groups``."""
        members = {g.id: list(g.members) for g in self.groups}
        for device in self.devices:
            for group_id in device.groups:
                if device.id not in members[group_id]:
                    members[group_id].append(device.id)
        return members

    def device_entity(self, device_id: str, function: DeviceFunction) -> Entity:
        """The entity through which a xiaozhi device's ``function`` is acted on.

        A YAML entity bound to that device for that function wins (a ``light`` bound with
        command ``led``); otherwise one is made up: ``media_player.xiaozhi_<id>`` named like
        the device for the speaker, ``light.xiaozhi_<id>_led`` ("<device name> LED") for the
        LED, in the device's area (None for a device absent from the YAML).
        """
        domain = _FUNCTION_DOMAIN[function]
        for entity in self.entities:
            binding = entity.binding
            if isinstance(binding, XiaozhiBinding) and binding.device_id == device_id:
                by_command = binding.command == _FUNCTION_COMMAND[function]
                if by_command or (binding.command is None and entity.domain == domain):
                    return entity
        device = self.device(device_id)
        label = device.name if device else device_id
        suffix = "_led" if function is DeviceFunction.LED else ""
        return Entity(
            entity_id=f"{domain}.xiaozhi_{entity_slug(device_id)}{suffix}",
            name=f"{label} LED" if function is DeviceFunction.LED else label,
            area=device.area if device else None,
            binding=XiaozhiBinding(device_id=device_id),
        )

    def binding_for(self, entity_id: str, *, device_ids: Iterable[str] = ()) -> Binding | None:
        """The binding acting on ``entity_id``: a YAML entity, or a device function entity of
        a YAML device or of one of ``device_ids`` (devices learnt at runtime); None if unknown.
        """
        entity = self.entity(entity_id)
        if entity is not None:
            return entity.binding
        for device_id in (*self._devices, *device_ids):
            for function in DeviceFunction:
                candidate = self.device_entity(device_id, function)
                if candidate.entity_id == entity_id:
                    return candidate.binding
        return None


# -- loading -------------------------------------------------------------------------------

_SECTIONS: dict[str, type[_Model]] = {
    "floors": Floor,
    "areas": Area,
    "entities": Entity,
    "devices": Device,
    "groups": Group,
}

_BINDING_MODELS: tuple[type[BaseModel], ...] = (XiaozhiBinding, MqttBinding, HomeAssistantBinding)

_ALL_FIELD_NAMES = sorted(
    {
        name
        for model in (
            *_SECTIONS.values(),
            *_BINDING_MODELS,
        )
        for name in model.model_fields
    }
    | {"state"}
)


def home_json_schema() -> dict[str, Any]:
    """The home file's JSON Schema, from the models: editors (VS Code's YAML extension, with
    ``# yaml-language-server: $schema=<path to docs/home.schema.json>``) complete and check
    fields as you type. ``docs/home.schema.json`` is this, kept equal by a test."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **Home.model_json_schema(),
        "title": "xiaozhi hub home file",
    }


def _sandbox_state(entity: Entity) -> dict[str, Any]:
    """The initial state of an entity made virtual (a lock starts locked, anything else off)."""
    return {"state": "locked" if entity.domain == "lock" else "off"}


def load_home(path: str | os.PathLike[str] = DEMO_HOME_PATH) -> Home:
    """Read and validate a home file.

    Raises:
        HomeConfigError: the file cannot be read, is not YAML, or has problems; all of them
            are listed at once, each naming the file and the path.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise HomeConfigError(source, [ConfigProblem("", f"cannot read the file: {err}")]) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise HomeConfigError(
            source, [ConfigProblem("", f"{where}invalid YAML: {problem}")]
        ) from err
    return parse_home(data, source=source)


def parse_home(data: Any, *, source: str = "<home>") -> Home:
    """Validate an already parsed home document (see :func:`load_home`).

    Raises:
        HomeConfigError: listing every problem.
    """
    problems: list[ConfigProblem] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise HomeConfigError(
            source,
            [ConfigProblem("", f"expected a mapping with {', '.join(_SECTIONS)}, got {kind}")],
        )
    for key in data:
        if key not in _SECTIONS:
            problems.append(ConfigProblem(str(key), _unknown_field(str(key), list(_SECTIONS))))
    items: dict[str, list[tuple[int, Any]]] = {}
    for section, model in _SECTIONS.items():
        raw = data.get(section)
        items[section] = []
        if raw is None:
            continue
        if not isinstance(raw, list):
            problems.append(ConfigProblem(section, f"expected a list, got {type(raw).__name__}"))
            continue
        for index, item in enumerate(raw):
            try:
                items[section].append((index, model.model_validate(item)))
            except ValidationError as err:
                problems.extend(_problems_from(err, (section, index)))
    problems.extend(_cross_check(items))
    if problems:
        raise HomeConfigError(source, problems)
    return Home(**{section: [item for _, item in pairs] for section, pairs in items.items()})


def _unknown_field(name: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field {name!r}{hint}"


def _problems_from(err: ValidationError, prefix: tuple[str | int, ...]) -> Iterator[ConfigProblem]:
    for error in err.errors(include_url=False):
        loc = list(error["loc"])
        # A discriminated union adds its tag to the location: binding.mqtt.topic -> binding.topic.
        loc = [
            part
            for i, part in enumerate(loc)
            if not (i > 0 and loc[i - 1] == "binding" and part in _BINDING_TYPES)
        ]
        kind = error["type"]
        message = error["msg"].removeprefix("Value error, ")
        if kind == "missing":
            message = "missing required field"
        elif kind == "extra_forbidden":
            message = _unknown_field(str(loc[-1]), _ALL_FIELD_NAMES)
        elif kind == "union_tag_not_found":
            loc.append("type")
            message = f"missing binding type (one of: {', '.join(_BINDING_TYPES)})"
        elif kind == "union_tag_invalid":
            loc.append("type")
            given = str(error["input"].get("type"))
            close = difflib.get_close_matches(given, _BINDING_TYPES, n=1)
            hint = f"did you mean {close[0]!r}?; " if close else ""
            message = f"unknown binding type {given!r} ({hint}one of: {', '.join(_BINDING_TYPES)})"
        elif kind not in ("value_error", "assertion_error"):
            message = f"{message}, got {error['input']!r}"[:200]
        yield ConfigProblem(field_path((*prefix, *loc)), message)


def _cross_check(items: dict[str, list[tuple[int, Any]]]) -> list[ConfigProblem]:
    """References between sections, unique ids and unique spoken names."""
    problems: list[ConfigProblem] = []

    def unique(section: str, key: str) -> set[str]:
        seen: dict[str, int] = {}
        for index, item in items[section]:
            value = getattr(item, key)
            if value in seen:
                problems.append(
                    ConfigProblem(
                        f"{section}[{index}].{key}",
                        f"duplicate id {value!r} (first at {section}[{seen[value]}])",
                    )
                )
            else:
                seen[value] = index
        return set(seen)

    floors = unique("floors", "id")
    areas = unique("areas", "id")
    unique("entities", "entity_id")
    devices = unique("devices", "id")
    groups = unique("groups", "id")

    def exists(path: str, value: str | None, known: set[str], what: str, section: str) -> None:
        if value is not None and value not in known:
            listed = ", ".join(sorted(known)) or "none defined"
            close = difflib.get_close_matches(value, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?; " if close else ""
            problems.append(
                ConfigProblem(path, f"unknown {what} {value!r} ({hint}known {section}: {listed})")
            )

    for index, area in items["areas"]:
        exists(f"areas[{index}].floor", area.floor, floors, "floor", "floors")
    for index, entity in items["entities"]:
        exists(f"entities[{index}].area", entity.area, areas, "area", "areas")
    for index, device in items["devices"]:
        exists(f"devices[{index}].area", device.area, areas, "area", "areas")
        for g_index, group_id in enumerate(device.groups):
            exists(f"devices[{index}].groups[{g_index}]", group_id, groups, "group", "groups")
    for index, group in items["groups"]:
        for m_index, member in enumerate(group.members):
            exists(f"groups[{index}].members[{m_index}]", member, devices, "device", "devices")

    # Spoken names feed hassil's slot lists: one phrase must mean one thing.
    for section in ("floors", "areas", "entities"):
        spoken: dict[str, str] = {}
        for index, item in items[section]:
            for n_index, name in enumerate([item.name, *item.aliases]):
                path = f"{section}[{index}]." + (
                    "name" if n_index == 0 else f"aliases[{n_index - 1}]"
                )
                folded = name.casefold()
                if folded in spoken:
                    problems.append(
                        ConfigProblem(path, f"name {name!r} is already used by {spoken[folded]}")
                    )
                else:
                    spoken[folded] = f"{section}[{index}]"
    return problems
