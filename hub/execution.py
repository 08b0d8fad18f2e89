"""Carrying out one action: its effect (:mod:`xiaozhi_hub.executors`) performed, an outcome back.

:func:`~xiaozhi_hub.executors.effect_for` decides *what* an action does on its target's
binding, as data; :class:`ActionRunner` does it (publishes the command or message, calls Home
Assistant, updates the virtual state) and answers with an :class:`ActionOutcome`, which the
voice unit publishes as the ``action_result`` event:

    {"event_type": "action_result", ..., "status": "ok", ..., "result": {...}}
    {"event_type": "action_result", ..., "status": "error", ..., "error": "...",
     "failure": "no_answer"}

A failure is an outcome, never an exception: one action that fails does not stop the next.

A command to a xiaozhi device succeeds only when the device says so: the runner waits,
bounded, for its ``command_result`` (:mod:`xiaozhi_hub.command_results`), so the spoken
answer is true ("Sorry, the office speaker did not answer."). A device the registry knows
to be offline fails at once, without a command queued for it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from xiaozhi.commands import CommandResult
from xiaozhi.payloads import Action, ResponseStatus
from xiaozhi.topics import TopicTree
from xiaozhi_hub.executors import (
    ExecutorError,
    HomeAssistantEffect,
    MqttEffect,
    VirtualEffect,
    XiaozhiCommandEffect,
    effect_for,
)
from xiaozhi_hub.home import Binding

__all__ = ["ActionOutcome", "ActionRunner", "DeviceAnswers", "Failure", "Publish"]

Publish = Callable[..., bool]
"""``publish(topic, payload, *, qos, retain=False) -> bool``: False when the queue dropped it
(:meth:`~xiaozhi_hub.unit.HubContext.publish`)."""


class Failure(enum.StrEnum):
    """Why an action failed, in the words its spoken answer needs."""

    ERROR = "error"  # the executor could not do it (HA refused, queue full, no token...)
    OFFLINE = "offline"  # the target device is known to be disconnected
    NO_ANSWER = "no_answer"  # the device did not answer the command in time
    REFUSED = "refused"  # the device answered that it could not do it


class DeviceAnswers(Protocol):
    """Where device ``command_result`` events are awaited
    (:class:`~xiaozhi_hub.command_results.CommandResultsUnit`)."""

    async def watch(self, device_id: str) -> None: ...

    def expect(self, message_id: str) -> asyncio.Future[CommandResult]: ...

    def forget(self, message_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """How one action ended: ``ok`` with a ``result``, or not ok with an ``error`` sentence.

    Build it with :meth:`succeeded` or :meth:`failed`; the invariant (exactly one of
    ``result`` and ``error``) is checked when built.
    """

    ok: bool
    result: Mapping[str, Any] | None = None
    error: str | None = None
    failure: Failure | None = None

    def __post_init__(self) -> None:
        if (
            self.ok != (self.error is None)
            or self.ok != (self.result is not None)
            or self.ok != (self.failure is None)
        ):
            raise ValueError(
                f"an outcome has a result when ok, an error and a failure otherwise; got "
                f"ok={self.ok}, result={self.result!r}, error={self.error!r}, "
                f"failure={self.failure!r}"
            )

    @classmethod
    def succeeded(cls, result: Mapping[str, Any]) -> ActionOutcome:
        return cls(ok=True, result=result)

    @classmethod
    def failed(cls, error: str, failure: Failure = Failure.ERROR) -> ActionOutcome:
        return cls(ok=False, error=error, failure=failure)

    @property
    def status(self) -> Literal["ok", "error"]:
        """The ``status`` of the ``action_result`` event (and the metrics' label)."""
        return "ok" if self.ok else "error"

    def event_fields(self) -> dict[str, Any]:
        """``{"result": ...}`` or ``{"error": ..., "failure": ...}``, the detail of the
        ``action_result``."""
        if self.ok:
            return {"result": dict(self.result or {})}
        return {"error": self.error, "failure": str(self.failure)}


class ActionRunner:
    """Performs actions' effects for the hub.

    Args:
        topics: the configured topic tree (commands go to its device topics).
        publish: the hub's non-blocking publish (:data:`Publish`).
        states: the virtual entities' state, updated in place by virtual actions.
        environ: where Home Assistant tokens are read (a binding's ``token_env``).
        http: returns the shared HTTP client for Home Assistant calls (created on first use).
        now: the wire timestamp put in commands.
        answers: where devices' ``command_result`` events are awaited; None: a command
            counts as done once queued for the broker (nothing listens for answers).
        answer_timeout: seconds to wait for a device's ``command_result``.
        device_online: the registry's view of a device: False when known to be
            disconnected (the command is not sent), True or None (never heard of) otherwise.
        on_state: told the entity id after a virtual entity's state changed (published on
            ``xiaozhi/entities/{entity_id}``, whoever asked for the change).
    """

    def __init__(
        self,
        *,
        topics: TopicTree,
        publish: Publish,
        states: MutableMapping[str, dict[str, Any]],
        environ: Mapping[str, str],
        http: Callable[[], httpx.AsyncClient],
        now: Callable[[], str],
        answers: DeviceAnswers | None = None,
        answer_timeout: float = 5.0,
        device_online: Callable[[str], bool | None] = lambda _device_id: None,
        on_state: Callable[[str], None] = lambda _entity_id: None,
    ) -> None:
        self._topics = topics
        self._on_state = on_state
        self._answers = answers
        self._answer_timeout = answer_timeout
        self._device_online = device_online
        self._publish = publish
        self.states = states
        self._environ = environ
        self._http = http
        self._now = now

    async def execute(self, action: Action, binding: Binding, *, message_id: str) -> ActionOutcome:
        """Carry out one action on an entity with ``binding``; never raises for a failure."""
        try:
            effect = effect_for(
                action, binding, topics=self._topics, message_id=message_id, timestamp=self._now()
            )
        except ExecutorError as err:
            return ActionOutcome.failed(str(err))
        if isinstance(effect, XiaozhiCommandEffect):
            return await self._command_device(effect)
        if isinstance(effect, MqttEffect):
            sent = self._publish(effect.topic, effect.payload, qos=effect.qos, retain=effect.retain)
            if not sent:
                return ActionOutcome.failed("MQTT queue full: message dropped")
            return ActionOutcome.succeeded({"topic": effect.topic})
        if isinstance(effect, HomeAssistantEffect):
            return await self._call_home_assistant(effect)
        assert isinstance(effect, VirtualEffect)
        new = effect.apply(self.states.get(effect.entity_id))
        self.states[effect.entity_id] = new
        self._on_state(effect.entity_id)
        return ActionOutcome.succeeded({"state": new})

    async def _command_device(self, effect: XiaozhiCommandEffect) -> ActionOutcome:
        """Send the command; with :attr:`_answers`, the device's ``command_result`` decides."""
        device_id = effect.device_id
        done = {
            "topic": effect.topic,
            "command": effect.payload.command,
            "parameters": dict(effect.payload.parameters),
        }
        if self._device_online(device_id) is False:
            return ActionOutcome.failed(f"device {device_id} is offline", Failure.OFFLINE)
        message_id = effect.payload.message_id
        if self._answers is None or message_id is None:
            if not self._publish(effect.topic, effect.wire(), qos=effect.qos):
                return ActionOutcome.failed("MQTT queue full: command dropped")
            return ActionOutcome.succeeded(done)
        await self._answers.watch(device_id)
        answer = self._answers.expect(message_id)
        try:
            if not self._publish(effect.topic, effect.wire(), qos=effect.qos):
                return ActionOutcome.failed("MQTT queue full: command dropped")
            try:
                result = await asyncio.wait_for(answer, self._answer_timeout)
            except TimeoutError:
                return ActionOutcome.failed(
                    f"device {device_id} did not answer within {self._answer_timeout:g} s",
                    Failure.NO_ANSWER,
                )
        finally:
            self._answers.forget(message_id)
        if result.status is ResponseStatus.OK:
            return ActionOutcome.succeeded({**done, "device_result": result.result})
        return ActionOutcome.failed(
            f"device {device_id}: {result.error or 'failed'}", Failure.REFUSED
        )

    async def _call_home_assistant(self, effect: HomeAssistantEffect) -> ActionOutcome:
        token = self._environ.get(effect.token_env)
        if not token:
            return ActionOutcome.failed(
                f"environment variable {effect.token_env} (the HA token) is not set"
            )
        headers = {**effect.headers, **effect.authorization(token)}
        try:
            response = await self._http().request(
                effect.method, effect.url, json=dict(effect.json), headers=headers
            )
        except httpx.HTTPError as err:
            return ActionOutcome.failed(
                f"Home Assistant unreachable: {str(err) or type(err).__name__}"
            )
        if response.status_code >= 400:
            return ActionOutcome.failed(f"Home Assistant answered HTTP {response.status_code}")
        return ActionOutcome.succeeded({"status_code": response.status_code})
