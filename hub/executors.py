"""Action + the target's binding → an effect description; pure, no I/O (design.md §6).

The hub's runner performs the effects; this module only says what they are:

==================  ==========================================================================
binding             effect
==================  ==========================================================================
``xiaozhi``         :class:`XiaozhiCommandEffect`: a :class:`~xiaozhi.payloads.CommandPayload` on
                    ``xiaozhi/commands/{device_id}`` (QoS 1, never retained); the command
                    vocabulary of :mod:`xiaozhi.commands` (``led``, ``set_volume``, ``get_status``)
``mqtt``            :class:`MqttEffect`: the binding's payload template for the action, rendered
``homeassistant``   :class:`HomeAssistantEffect`: ``POST <base_url>/api/services/<domain>/<svc>``
                    (service = the action), body ``{"entity_id": ..., **parameters}``; the
                    token is *not* in the effect, only the name of the variable holding it
``virtual``         :class:`VirtualEffect`: the state attributes to merge into the in-memory store
==================  ==========================================================================

Payload templates (see :mod:`xiaozhi_hub.home`): a string that is exactly ``"{name}"`` becomes
the typed value (and a dict key whose value is absent is left out, so one ``turn_on`` template
serves "turn on" and "set to 50%"); ``{name}`` inside a longer string is text substitution;
``{{``/``}}`` are literal braces. The variables are :func:`template_variables`.

Every refusal is an :class:`ExecutorError` naming the action and the binding; the runner
reports it as a failed ``action_result`` event.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xiaozhi import jsonutil
from xiaozhi.commands import COMMAND_PARAMETERS, DeviceCommand, RespondParameters
from xiaozhi.errors import InvalidMessage, OperationFailed
from xiaozhi.payloads import Action, AudioClip, CommandPayload, validate_model
from xiaozhi.topics import TopicTree
from xiaozhi_hub.home import (
    Binding,
    HomeAssistantBinding,
    MqttBinding,
    VirtualBinding,
    XiaozhiBinding,
)

__all__ = [
    "Effect",
    "ExecutorError",
    "HomeAssistantEffect",
    "MqttEffect",
    "VirtualEffect",
    "XiaozhiCommandEffect",
    "effect_for",
    "fan_out",
    "render_template",
    "respond_effect",
    "template_variables",
]


class ExecutorError(OperationFailed):
    """An action the target's binding cannot carry out."""

    def __init__(self, message: str, *, action: str, binding: str) -> None:
        super().__init__(f"{binding} binding cannot run {action!r}: {message}")
        self.action, self.binding = action, binding


@dataclass(frozen=True, slots=True)
class XiaozhiCommandEffect:
    """Publish ``payload`` on ``topic`` (QoS 1, never retained: design.md §5)."""

    device_id: str
    topic: str
    payload: CommandPayload
    qos: int = 1
    retain: bool = False

    def wire(self) -> bytes:
        return self.payload.to_wire()


@dataclass(frozen=True, slots=True)
class MqttEffect:
    """Publish ``payload`` on any ``topic`` (a zigbee2mqtt ``…/set``)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class HomeAssistantEffect:
    """One Home Assistant REST call. ``headers`` hold no secret: add
    :meth:`authorization` with the token read from the environment variable ``token_env``.
    """

    method: str
    url: str
    json: Mapping[str, Any]
    token_env: str
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    @staticmethod
    def authorization(token: str) -> dict[str, str]:
        """The header carrying a long-lived access token."""
        return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True)
class VirtualEffect:
    """Merge ``new_state`` into the in-memory state of ``entity_id``."""

    entity_id: str
    new_state: Mapping[str, Any]

    def apply(self, old: Mapping[str, Any] | None) -> dict[str, Any]:
        """The entity's state after the effect."""
        return {**(old or {}), **self.new_state}


Effect = XiaozhiCommandEffect | MqttEffect | HomeAssistantEffect | VirtualEffect

_STATE_WORD = {
    "turn_on": "ON",
    "turn_off": "OFF",
    "lock": "LOCK",
    "unlock": "UNLOCK",
    "open_cover": "OPEN",
    "close_cover": "CLOSE",
}
_VIRTUAL_STATE = {
    "turn_on": "on",
    "turn_off": "off",
    "lock": "locked",
    "unlock": "unlocked",
    "open_cover": "open",
    "close_cover": "closed",
}
_DEFAULT_COMMAND = {
    "turn_on": DeviceCommand.LED,
    "turn_off": DeviceCommand.LED,
    "volume_set": DeviceCommand.SET_VOLUME,
    "update_entity": DeviceCommand.GET_STATUS,
}
_ABSENT = object()


def template_variables(action: Action) -> dict[str, Any]:
    """The names a payload template may use for ``action`` (home.TEMPLATE_VARIABLES)."""
    variables: dict[str, Any] = {
        "action": action.action,
        "entity_id": action.entity_id,
        **action.parameters,
    }
    if action.action in _STATE_WORD:
        variables["state"] = _STATE_WORD[action.action]
    pct = action.parameters.get("brightness_pct")
    if isinstance(pct, int | float):
        variables["brightness"] = round(pct * 255 / 100)
        variables["brightness_254"] = round(pct * 254 / 100)
    step = action.parameters.get("brightness_step_pct")
    if isinstance(step, int | float):
        variables["brightness_step_254"] = round(step * 254 / 100)
    level = action.parameters.get("volume_level")
    if isinstance(level, int | float):
        variables["volume"] = round(level * 100)
    return variables


def render_template(template: Any, variables: Mapping[str, Any]) -> Any:
    """Fill a payload template (module docstring).

    Raises:
        KeyError: a placeholder inside a longer string, or a whole-string template, names a
            variable that has no value for this action.
    """
    rendered = _render(template, variables)
    if rendered is _ABSENT:
        raise KeyError(str(template).strip("{}"))
    return rendered


@functools.lru_cache(maxsize=4096)
def _whole_placeholder(template: str) -> str | None:
    """``name`` when ``template`` is exactly ``"{name}"`` (the value keeps its type), else
    None. Cached: a home's templates are few, and parsing one per action was measurable."""
    parsed = list(string.Formatter().parse(template))
    if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1]:
        return parsed[0][1]
    return None


def _render(template: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        name = _whole_placeholder(template)
        if name is not None:
            return variables.get(name, _ABSENT)  # exactly "{name}": typed value
        if "{" not in template and "}" not in template:
            return template  # nothing to fill
        return template.format_map(_Strict(variables))
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            rendered = _render(value, variables)
            if rendered is not _ABSENT:
                out[_render(key, variables)] = rendered
        return out
    if isinstance(template, list):
        return [v for v in (_render(item, variables) for item in template) if v is not _ABSENT]
    return template


class _Strict(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)


def effect_for(
    action: Action,
    binding: Binding,
    *,
    topics: TopicTree,
    message_id: str | None = None,
    timestamp: str | None = None,
) -> Effect:
    """The effect that carries out ``action`` on an entity with ``binding``.

    Args:
        topics: the topic tree of the configured base topic (required: a default would
            silently ignore ``XIAOZHI_BASE_TOPIC``).
        message_id, timestamp: put in a xiaozhi command so its ``command_result`` names it.

    Raises:
        ExecutorError: the binding cannot carry out this action (no payload template for it,
            a template variable without a value, parameters a device command refuses).
    """
    try:
        if isinstance(binding, XiaozhiBinding):
            return _xiaozhi(action, binding, topics, message_id, timestamp)
        if isinstance(binding, MqttBinding):
            return _mqtt(action, binding)
        if isinstance(binding, HomeAssistantBinding):
            return _homeassistant(action, binding)
        return _virtual(action, binding)
    except KeyError as err:
        raise ExecutorError(
            f"template variable {{{err.args[0]}}} has no value for this action",
            action=action.action,
            binding=binding.type,
        ) from err


def _xiaozhi(
    action: Action,
    binding: XiaozhiBinding,
    topics: TopicTree,
    message_id: str | None,
    timestamp: str | None,
) -> XiaozhiCommandEffect:
    def refuse(message: str) -> ExecutorError:
        return ExecutorError(message, action=action.action, binding=binding.type)

    command = binding.command or _DEFAULT_COMMAND.get(action.action)
    if command is None:
        raise refuse("no device command for this action; set the binding's 'command'")
    variables = template_variables(action)
    parameters: dict[str, Any] = {}
    if command == DeviceCommand.LED:
        if action.action not in ("turn_on", "turn_off"):
            raise refuse("the led command only turns on or off")
        parameters["on"] = action.action == "turn_on"
        if "brightness_step_pct" in variables:  # the device's LED only takes a level
            raise refuse("the led command needs a brightness level, not a step")
        if parameters["on"] and "brightness" in variables:
            parameters["brightness"] = variables["brightness"]
    elif command == DeviceCommand.SET_VOLUME:
        if "volume" not in variables:
            raise refuse("set_volume needs a volume_level")
        parameters["volume"] = variables["volume"]
    parameters.update(render_template(binding.parameters, variables))
    known = command if isinstance(command, DeviceCommand) else _known_command(command)
    if known is not None:  # a command of the vocabulary: its parameters must fit
        try:
            validate_model(COMMAND_PARAMETERS[known], parameters, path_prefix="parameters")
        except InvalidMessage as err:
            raise refuse(str(err)) from err
    payload = CommandPayload(
        command=str(command),
        parameters=parameters,
        message_id=message_id,
        timestamp=timestamp,
        device_id=binding.device_id,
    )
    return XiaozhiCommandEffect(binding.device_id, topics.command(binding.device_id), payload)


def _known_command(command: str) -> DeviceCommand | None:
    try:
        return DeviceCommand(command)
    except ValueError:
        return None


def _mqtt(action: Action, binding: MqttBinding) -> MqttEffect:
    template = binding.payloads.get(action.action)
    if template is None:
        known = ", ".join(sorted(binding.payloads))
        raise ExecutorError(
            f"no payload for it (the binding has: {known})",
            action=action.action,
            binding=binding.type,
        )
    rendered = render_template(template, template_variables(action))
    payload = rendered.encode("utf-8") if isinstance(rendered, str) else jsonutil.dumps(rendered)
    return MqttEffect(binding.topic, payload, qos=binding.qos, retain=binding.retain)


def _homeassistant(action: Action, binding: HomeAssistantBinding) -> HomeAssistantEffect:
    entity_id = binding.entity_id or action.entity_id
    domain = entity_id.split(".", 1)[0]
    if action.action == "update_entity":
        domain = "homeassistant"  # homeassistant.update_entity refreshes any entity
    return HomeAssistantEffect(
        method="POST",
        url=f"{binding.base_url}/api/services/{domain}/{action.action}",
        json={"entity_id": entity_id, **action.parameters},
        token_env=binding.token_env,
    )


def _virtual(action: Action, binding: VirtualBinding) -> VirtualEffect:
    parameters = action.parameters
    name = action.action
    state: dict[str, Any]
    if name in _VIRTUAL_STATE:
        state = {"state": _VIRTUAL_STATE[name]}
        if name == "turn_on":
            variables = template_variables(action)
            if "brightness_step_pct" in variables:  # the planner knows a virtual level
                raise ExecutorError(
                    "a relative brightness needs a known level", action=name, binding=binding.type
                )
            if "brightness" in variables:
                state["brightness"] = variables["brightness"]
            if "color_name" in parameters:
                state["color_name"] = parameters["color_name"]
    elif name == "set_temperature" and "temperature" in parameters:
        state = {"temperature": parameters["temperature"]}
    elif name == "volume_set" and "volume_level" in parameters:
        state = {"volume_level": parameters["volume_level"]}
    elif name == "update_entity":
        state = {}
    else:
        raise ExecutorError(
            "unknown action or missing parameters", action=name, binding=binding.type
        )
    return VirtualEffect(action.entity_id, state)


def respond_effect(
    device_id: str,
    text: str,
    *,
    stt: str | None = None,
    actions: Iterable[Action] = (),
    session_id: str | None = None,
    topics: TopicTree,
    message_id: str | None = None,
    timestamp: str | None = None,
    audio: AudioClip | None = None,
) -> XiaozhiCommandEffect:
    """The ``respond`` command answering the speaking device (stt echo, tts sentence and its
    audio, actions)."""
    parameters = RespondParameters(
        text=text, stt=stt, actions=list(actions), session_id=session_id, audio=audio
    )
    payload = CommandPayload(
        command=DeviceCommand.RESPOND.value,
        parameters=parameters.to_json_dict(),
        message_id=message_id,
        timestamp=timestamp,
        device_id=device_id,
    )
    return XiaozhiCommandEffect(device_id, topics.command(device_id), payload)


def fan_out(
    payload: CommandPayload, device_ids: Iterable[str], *, topics: TopicTree
) -> list[XiaozhiCommandEffect]:
    """A group or broadcast command as one command per member, on each device's own topic,
    with ``device_id`` set to the member (design.md §5: the hub fans out group membership).
    """
    return [
        XiaozhiCommandEffect(
            device_id,
            topics.command(device_id),
            payload.model_copy(update={"device_id": device_id}),
        )
        for device_id in device_ids
    ]
