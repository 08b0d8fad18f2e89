"""The unit that answers zigbee2mqtt-style requests on ``bridge/request/<path>``; the table of
handlers is :class:`~xiaozhi_hub.bridge_api.BridgeApi`.

Not shared: every replica applies each edit so their registries agree, and each answers it
(an integrator with N replicas gets N identical responses; ``transaction`` correlates them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import structlog

from xiaozhi.errors import InvalidTopic
from xiaozhi.payloads import BridgeResponse
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.bridge_api import CHANGED_DEVICES, CHANGED_GROUPS, CHANGED_INFO, BridgeApi
from xiaozhi_hub.registry import DeviceRecord
from xiaozhi_hub.registry_feed import clear_retained
from xiaozhi_hub.snapshots import Snapshots
from xiaozhi_hub.unit import HubContext, Route, UnitTasks

__all__ = ["BridgeRequestsUnit"]

log = structlog.get_logger("xiaozhi.hub")


class BridgeRequestsUnit:
    """zigbee2mqtt-style requests: the table is :class:`~xiaozhi_hub.bridge_api.BridgeApi`.

    Each request is answered by a task of its own, created in arrival order; the registry
    edits are plain handlers that run in the task's first step, so they apply in that order,
    while ``intent/test`` waits for the voice pipeline without holding anything up.
    """

    def __init__(
        self,
        ctx: HubContext,
        api: BridgeApi,
        snapshots: Snapshots,
        on_discovery: Callable[[str], None],
        *,
        on_edit: Callable[[], None] = lambda: None,
        on_forget: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._ctx = ctx
        self.api = api
        self._snapshots = snapshots
        self._on_discovery = on_discovery
        self._on_edit = on_edit  # saves the registry's edits (renames, groups, removals)
        self._on_forget = on_forget  # a removed device's MCP tools go too
        api.on_forget = self._forget
        self._tasks = UnitTasks("bridge_request")
        self.routes: Mapping[TopicKind, Route] = {TopicKind.BRIDGE_REQUEST: self._on_request}

    def _forget(self, record: DeviceRecord) -> None:
        clear_retained(self._ctx, record)
        self._on_forget(record.device_id)

    @property
    def prefix(self) -> str:
        return self._ctx.topics.bridge_requests().removesuffix("#")

    async def start(self) -> None:
        await self._ctx.owner.subscribe([self._ctx.topics.bridge_requests()])

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe([self._ctx.topics.bridge_requests()])
        await self._tasks.drain()

    def _on_request(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        self.answer(cast(str, parsed.path), payload)

    def on_bad_path(self, topic: str, payload: bytes) -> None:
        """A request topic whose path is outside the id grammar: answer if we can."""
        path = topic.removeprefix(self.prefix)
        try:
            self._ctx.topics.bridge_response(path)
        except InvalidTopic as err:
            self._ctx.metrics.bridge_requests.labels("unanswerable").inc()
            self._ctx.invalid("bridge_request", topic, f"cannot answer: {err}")
            return
        self.answer(path, payload)

    def answer(self, path: str, payload: bytes) -> None:
        """Answer one request on ``bridge/response/<path>`` (in a task of its own)."""
        self._tasks.spawn(self._answer(path, payload), name=f"bridge-request-{path}", path=path)

    async def _answer(self, path: str, payload: bytes) -> None:
        ctx = self._ctx
        response = await self.apply(path, payload)
        ctx.publish(ctx.topics.bridge_response(path), response.to_wire())

    async def apply(self, path: str, payload: bytes) -> BridgeResponse:
        """Handle one request and publish what it changed; the REST API's equivalents of
        the bridge requests come here too. Returns the response (not published here)."""
        ctx = self._ctx
        response, changed = await self.api.handle(path, payload)
        ctx.metrics.bridge_requests.labels(response.status.value).inc()
        log.info("bridge_request", path=path, status=response.status.value, error=response.error)
        if changed & {CHANGED_DEVICES, CHANGED_GROUPS, CHANGED_INFO}:
            self._on_edit()
            self._snapshots.mark()
        for item in changed:
            if item.startswith("discovery/"):
                self._on_discovery(item.removeprefix("discovery/"))
        return response
