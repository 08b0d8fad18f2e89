"""The unit that keeps ``bridge/state`` online while this replica runs (design.md §5)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from xiaozhi.errors import WireError
from xiaozhi.payloads import Availability, BridgeState
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, HubState, Route

__all__ = ["BridgeStateUnit"]

log = structlog.get_logger("xiaozhi.hub")


class BridgeStateUnit:
    """Keeps ``bridge/state`` online while this replica runs.

    The will (and a clean stop) of *one* replica sets it offline although others still run;
    any live replica that sees ``offline`` publishes ``online`` again. It also subscribes to
    every replica's own state (``bridge/hubs/+/state``, published by each hub's monitor
    connection) for the stream alone: the Bridge page shows one row per hub.
    """

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self.routes: Mapping[TopicKind, Route] = {TopicKind.BRIDGE_STATE: self._on_state}

    @property
    def _topics(self) -> list[str]:
        return [self._ctx.topics.bridge_state(), self._ctx.topics.all_hub_states()]

    async def start(self) -> None:
        await self._ctx.owner.subscribe(self._topics)

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe(self._topics)

    def online(self) -> None:
        ctx = self._ctx
        payload = BridgeState(state=Availability.ONLINE).to_wire()
        ctx.publish(ctx.topics.bridge_state(), payload, retain=True)

    def _on_state(self, topic: str, _: ParsedTopic, payload: bytes) -> None:
        if not payload:
            return
        try:
            state = BridgeState.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            self._ctx.invalid("bridge_state", topic, err)
            return
        running = self._ctx.state in (HubState.STARTING, HubState.ONLINE)
        if state.state is Availability.OFFLINE and running:
            log.info("bridge_state_reasserted", hub_id=self._ctx.settings.hub_id)
            self.online()
