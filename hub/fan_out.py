"""The unit that fans group commands out to one command per member.

Consumed through a shared subscription (``$share/<XIAOZHI_HUB_SHARE_GROUP>/…``): with N
replicas each group command is fanned out exactly once.

Broadcasts are not fanned out: every device already reads ``xiaozhi/commands/broadcast``
(MQTT devices subscribe to it, edges subscribe for their WebSocket devices). A hub copy on
each device's own topic reached WebSocket devices a second time, and with a fresh
``message_id``, so nothing could drop the repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import structlog

from xiaozhi.errors import WireError
from xiaozhi.payloads import CommandPayload
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.executors import fan_out
from xiaozhi_hub.registry import RegistryError
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route, new_id, now_wire

__all__ = ["FanOutUnit"]

log = structlog.get_logger("xiaozhi.hub")


class FanOutUnit:
    """Group commands → one command per member on its own topic."""

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self.routes: Mapping[TopicKind, Route] = {
            TopicKind.GROUP_COMMAND: self._on_command,
        }

    @property
    def filters(self) -> list[str]:
        topics, group = self._ctx.topics, self._ctx.settings.hub_share_group
        return [topics.shared(group, topics.all_group_commands())]

    async def start(self) -> None:
        await self._ctx.owner.subscribe(self.filters)

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe(self.filters)

    def _on_command(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        ctx = self._ctx
        try:
            command = CommandPayload.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            ctx.invalid("command", topic, err)
            return
        try:
            members = ctx.registry.members_of(cast(str, parsed.group_id))
        except RegistryError as err:
            ctx.invalid("command", topic, err)
            return
        command = command.model_copy(
            update={
                "message_id": command.message_id or new_id(),
                "timestamp": command.timestamp or now_wire(),
            }
        )
        for effect in fan_out(command, members, topics=ctx.topics):
            ctx.publish(effect.topic, effect.wire(), qos=effect.qos)
        ctx.metrics.fan_out.labels("group").inc(len(members))
        log.info(
            "fan_out", kind="group", topic=topic, command=command.command, members=len(members)
        )
