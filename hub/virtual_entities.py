"""The unit that shows the hub's own entities on MQTT and takes commands for them.

An entity with a ``virtual`` binding exists only in the hub (the demo's lights, a lock kept
for a lab): without this unit, "turn on the living room light" changed a value nobody could
see. Here its state is published retained on ``xiaozhi/entities/{entity_id}`` whenever it
changes (by voice, by REST, by a command), Home Assistant discovers it (:mod:`xiaozhi_hub.
discovery`), and a command on ``xiaozhi/entities/{entity_id}/set`` runs through the same
executor as a voice command, so both paths agree.

The payload of both topics is the entity's state object, in our words (lower case, as Home
Assistant's states are): ``{"state": "on", "brightness": 128}`` for a light, ``{"state":
"locked"}`` for a lock, ``{"temperature": 22}`` for a thermostat. A command may also be a bare
word (``ON``, ``OFF``, ``LOCK``, ``UNLOCK``, ``OPEN``, ``CLOSE``), as Node-RED flows and
zigbee2mqtt users write them. Entities bound to anything else (a zigbee2mqtt bulb, Home
Assistant itself, a xiaozhi device) are not published here: they have their own state topics
and owners, and re-discovering them would duplicate them in Home Assistant.

The subscription is not shared: each hub replica keeps its own virtual state (in memory), so
each applies every command.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from xiaozhi import jsonutil
from xiaozhi.errors import WireError
from xiaozhi.payloads import Action
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.execution import ActionOutcome
from xiaozhi_hub.home import Binding, VirtualBinding
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route, UnitTasks

__all__ = ["VirtualEntitiesUnit", "action_for_command"]

log = structlog.get_logger("xiaozhi.hub")

Execute = Callable[[Action, Binding], Coroutine[Any, Any, ActionOutcome]]
"""Runs one action on an entity (the voice pipeline's runner, with a message id of its own)."""

_WORDS = {
    "on": "turn_on",
    "off": "turn_off",
    "lock": "lock",
    "locked": "lock",
    "unlock": "unlock",
    "unlocked": "unlock",
    "open": "open_cover",
    "close": "close_cover",
    "closed": "close_cover",
}
"""A command's ``state`` (or bare word), lower-cased → the action."""


class CommandError(ValueError):
    """A command on ``…/set`` that names no action we can run; the message says why."""


def action_for_command(entity_id: str, payload: bytes) -> Action:
    """The action a ``xiaozhi/entities/{entity_id}/set`` payload asks for.

    Raises:
        CommandError: not a state object or word we know, or a bad value.
    """
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            command = jsonutil.loads_object(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            raise CommandError(str(err)) from err
    else:
        command = {"state": text}
    if "temperature" in command and "state" not in command:
        temperature = command["temperature"]
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            raise CommandError(f"temperature must be a number, not {temperature!r}")
        return Action(
            action="set_temperature", entity_id=entity_id, parameters={"temperature": temperature}
        )
    state = command.get("state")
    name = _WORDS.get(state.lower()) if isinstance(state, str) else None
    if name is None:
        known = ", ".join(sorted(_WORDS))
        raise CommandError(f"unknown state {state!r} (one of: {known}, or a temperature)")
    parameters: dict[str, Any] = {}
    brightness = command.get("brightness")
    if name == "turn_on" and brightness is not None:
        if not isinstance(brightness, int | float) or not 0 <= brightness <= 255:
            raise CommandError(f"brightness must be 0-255, not {brightness!r}")
        parameters["brightness_pct"] = round(brightness * 100 / 255)
    return Action(action=name, entity_id=entity_id, parameters=parameters)


class VirtualEntitiesUnit:
    """Publishes the hub's own entities' states and runs commands sent to them."""

    def __init__(self, ctx: HubContext, states: Mapping[str, Mapping[str, Any]]) -> None:
        self._ctx = ctx
        self._states = states
        self.entities = {
            e.entity_id: e.binding
            for e in ctx.registry.home.entities
            if isinstance(e.binding, VirtualBinding)
        }
        self.execute: Execute | None = None  # set by the service once its runner exists
        self._tasks = UnitTasks("entity_command")
        self.routes: Mapping[TopicKind, Route] = {TopicKind.ENTITY_SET: self._on_set}

    async def start(self) -> None:
        for entity_id in self.entities:
            self.state_changed(entity_id)
        if self.entities:
            await self._ctx.owner.subscribe([self._ctx.topics.all_entity_sets()])

    async def stop(self) -> None:
        if self.entities:
            await self._ctx.owner.unsubscribe([self._ctx.topics.all_entity_sets()])
        await self._tasks.drain()

    def state_changed(self, entity_id: str) -> None:
        """Publish the entity's state (retained), if it is one of ours; called after every
        action on a virtual entity, whoever asked for it."""
        if entity_id in self.entities:
            state = self._states.get(entity_id, {})
            topic = self._ctx.topics.entity_state(entity_id)
            self._ctx.retained.publish(topic, jsonutil.dumps(dict(state)))

    def _on_set(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        entity_id = str(parsed.entity_id)
        binding = self.entities.get(entity_id)
        if binding is None:
            self._ctx.invalid("entity_command", topic, f"{entity_id} is not an entity of ours")
            return
        try:
            action = action_for_command(entity_id, payload)
        except CommandError as err:
            self._ctx.invalid("entity_command", topic, err)
            return
        self._tasks.spawn(self._run(action, binding), name=f"entity-{entity_id}")

    async def _run(self, action: Action, binding: Binding) -> None:
        assert self.execute is not None, "the service sets execute before it starts units"
        outcome = await self.execute(action, binding)
        if outcome.ok:
            log.info("entity_command", entity_id=action.entity_id, action=action.action)
        else:
            log.warning(
                "entity_command_failed",
                entity_id=action.entity_id,
                action=action.action,
                error=outcome.error,
            )
