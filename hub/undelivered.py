"""The unit that answers commands nobody will deliver: never a silent loss (issue 13, point 7).

A command published on ``xiaozhi/commands/{device_id}`` for a device that is not connected
reaches no one: a WebSocket device's edge subscribes to its topic only while it holds the
device, and the broker drops a QoS 1 message that no session subscribes to. Whoever sent it
(an integrator, Node-RED, a script) would wait forever. The hub knows the registry (each
device's status, each edge's liveness through its will), so it answers:

* it reads every device command through the shared subscription
  (``$share/<XIAOZHI_HUB_SHARE_GROUP>/xiaozhi/commands/+``): with N replicas one answers;
* every command with a ``message_id`` is waited for, bounded
  (``XIAOZHI_COMMAND_ANSWER_TIMEOUT_SECONDS``): a device that comes back meanwhile may still
  get it (an edge that only lost the broker for a moment keeps its session, and the command
  waits there for it) and answer;
* no ``command_result`` naming its ``message_id`` within that time, and the device was absent
  when the command came (disconnected, or never heard of), or its connection ended since
  (its edge died with the command: an edge acknowledges a command to the broker before the
  device has it): the hub publishes a ``command_result`` with ``status: error`` on
  ``xiaozhi/events/{device_id}``, as the device would have, and counts it
  (``xiaozhi_hub_undelivered_commands_total{reason}``). A device still connected through the
  same edge is left to that edge, which answers every command it receives.

The hub's own commands never get here disconnected: :class:`~xiaozhi_hub.execution.ActionRunner`
refuses them before publishing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import structlog

from xiaozhi.errors import WireError
from xiaozhi.payloads import CommandPayload, ResponseStatus
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.command_results import CommandResultsUnit
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route, UnitTasks

__all__ = ["MAX_WAITING_COMMANDS", "UndeliveredUnit"]

log = structlog.get_logger("xiaozhi.hub")

MAX_WAITING_COMMANDS = 10_000
"""Commands for absent devices waited for at once; past it, answered without waiting."""


class UndeliveredUnit:
    """Failed ``command_result`` for commands to absent devices that nobody answered."""

    def __init__(self, ctx: HubContext, answers: CommandResultsUnit) -> None:
        self._ctx = ctx
        self._answers = answers
        self._tasks = UnitTasks("undelivered_command")
        self._waiting = 0
        # Each wait's own wake-up, woken at stop: no task per wait, and nothing shared that
        # thousands of waits would add and remove a callback to (asyncio.wait on one stop
        # future was a fifth of the loop at 1,000 commands/s).
        self._wakes: set[asyncio.Future[None]] = set()
        self._stopping = False
        self.routes: Mapping[TopicKind, Route] = {TopicKind.COMMAND: self._on_command}

    @property
    def filters(self) -> list[str]:
        topics, group = self._ctx.topics, self._ctx.settings.hub_share_group
        return [topics.shared(group, f"{topics.base}/commands/+")]

    async def start(self) -> None:
        await self._ctx.owner.subscribe(self.filters)

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe(self.filters)
        # Nobody else will answer what this replica took from the shared group: cut the
        # waits short and answer now for devices still away, rather than hold the stop.
        self._stopping = True
        for wake in self._wakes:
            _wake(wake)
        await self._tasks.drain()

    def _connection(self, device_id: str) -> tuple[str, int] | None:
        """Which connection the device has now: where (its edge, or ``mqtt``) and which one
        (an edge restarted under the same id is a new connection, and what the old one held
        died with it); None when absent."""
        record = self._ctx.registry.device(device_id)
        if record is None or not record.connected:
            return None
        return record.edge_id or "mqtt", record.connections

    def _on_command(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        device_id = cast(str, parsed.device_id)
        record = self._ctx.registry.device(device_id)
        connection = self._connection(device_id)
        if connection is not None and self._waiting >= MAX_WAITING_COMMANDS:
            return  # too many to follow: the connected device's edge answers it
        try:
            command = CommandPayload.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError:
            return  # the device's edge answers a bad command; nobody may, if it is absent
        if command.message_id is not None and self._answers.awaits(command.message_id):
            return  # this hub's own command: its action reports the failure itself
        if connection is None:
            reason = "unknown" if record is None or record.status is None else "offline"
        elif command.message_id is None:
            return  # nothing to match an answer with: its edge answers it
        else:
            reason = "disconnected"
        # The answer is expected from here, not from the task: the device's result can come
        # in the same read as the command and be dispatched before the task first runs.
        answer = None
        if command.message_id is not None and self._waiting < MAX_WAITING_COMMANDS:
            self._waiting += 1
            answer = self._answers.expect(command.message_id)
        self._tasks.spawn(
            self._answer(device_id, command, reason, connection, answer),
            name="undelivered",
            device_id=device_id,
        )

    async def _wait(self, answer: asyncio.Future[Any]) -> None:
        """Until ``answer`` is done, the wait is over, or the unit stops."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()

        def done(_: object = None) -> None:
            _wake(wake)

        answer.add_done_callback(done)
        timer = loop.call_later(self._ctx.settings.command_answer_timeout_seconds, done)
        self._wakes.add(wake)
        try:
            await wake
        finally:
            timer.cancel()
            answer.remove_done_callback(done)
            self._wakes.discard(wake)

    async def _answer(
        self,
        device_id: str,
        command: CommandPayload,
        reason: str,
        connection: tuple[str, int] | None,
        answer: asyncio.Future[Any] | None,
    ) -> None:
        """Wait for the device's own ``answer`` (None: too many followed already), bounded;
        none came and the device was or went away: answer for it."""
        message_id = command.message_id
        if answer is not None and message_id is not None:
            try:
                await self._answers.watch(device_id)
                if not self._stopping:
                    await self._wait(answer)
                if answer.done():
                    return  # delivered after all: the device (its edge) answered
            finally:
                self._answers.forget(message_id)
                self._waiting -= 1
        if connection is not None and self._connection(device_id) == connection:
            return  # still connected where it was: its edge answers (or has answered)
        state = {
            "unknown": "never seen",
            "offline": "not connected",
            "disconnected": "disconnected before it answered",
        }[reason]
        self._ctx.event(
            device_id,
            "command_result",
            command=command.command,
            status=ResponseStatus.ERROR.value,
            message_id=message_id,
            error=f"device {device_id} is {state}: the command was not delivered",
            reason=f"device_{reason}",
        )
        self._ctx.metrics.undelivered_commands.labels(reason).inc()
        log.info("command_undelivered", device_id=device_id, command=command.command, reason=reason)


def _wake(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)
