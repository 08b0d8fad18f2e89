"""The unit that fans group and broadcast commands out to one command per member.

Consumed through shared subscriptions (``$share/<XIAOZHI_HUB_SHARE_GROUP>/…``): with N
replicas each group command is fanned out exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import structlog

from xiaozhi.errors import WireError
from xiaozhi.payloads import CommandPayload, DeviceTransport
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.executors import fan_out
from xiaozhi_hub.registry import RegistryError
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route, new_id, now_wire

__all__ = ["FanOutUnit"]

log = structlog.get_logger("xiaozhi.hub")


class FanOutUnit:
    """Group and broadcast commands → one command per member on its own topic.

    Broadcast goes to WebSocket devices only: MQTT devices subscribe to the broadcast topic
    themselves (:meth:`~xiaozhi_hub.registry.Registry.broadcast_members`).
    """

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self.routes: Mapping[TopicKind, Route] = {
            TopicKind.GROUP_COMMAND: self._on_command,
            TopicKind.BROADCAST_COMMAND: self._on_command,
        }

    @property
    def filters(self) -> list[str]:
        topics, group = self._ctx.topics, self._ctx.settings.hub_share_group
        return [
            topics.shared(group, topics.all_group_commands()),
            topics.shared(group, topics.broadcast_command()),
        ]

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
        if parsed.kind is TopicKind.GROUP_COMMAND:
            try:
                members = ctx.registry.members_of(cast(str, parsed.group_id))
            except RegistryError as err:
                ctx.invalid("command", topic, err)
                return
            kind = "group"
        else:
            members = ctx.registry.broadcast_members(transports={DeviceTransport.WEBSOCKET})
            kind = "broadcast"
        command = command.model_copy(
            update={
                "message_id": command.message_id or new_id(),
                "timestamp": command.timestamp or now_wire(),
            }
        )
        for effect in fan_out(command, members, topics=ctx.topics):
            ctx.publish(effect.topic, effect.wire(), qos=effect.qos)
        ctx.metrics.fan_out.labels(kind).inc(len(members))
        log.info("fan_out", kind=kind, topic=topic, command=command.command, members=len(members))
