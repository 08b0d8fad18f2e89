"""Carrying out actions (xiaozhi_hub.execution): typed outcomes, and the action_result fields
they publish, without a broker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson
import pytest

from xiaozhi.payloads import Action
from xiaozhi.topics import TopicTree
from xiaozhi_hub.execution import ActionOutcome, ActionRunner, Failure
from xiaozhi_hub.home import HomeAssistantBinding, MqttBinding, VirtualBinding, XiaozhiBinding


def test_outcomes_are_built_by_their_constructors() -> None:
    ok = ActionOutcome.succeeded({"topic": "t"})
    assert (ok.ok, ok.status, ok.result, ok.error) == (True, "ok", {"topic": "t"}, None)
    assert ok.event_fields() == {"result": {"topic": "t"}}
    failed = ActionOutcome.failed("no token")
    assert (failed.ok, failed.status, failed.result, failed.error) == (
        False,
        "error",
        None,
        "no token",
    )
    assert failed.failure is Failure.ERROR
    assert failed.event_fields() == {"error": "no token", "failure": "error"}
    with pytest.raises(ValueError, match="a result when ok"):
        ActionOutcome(ok=False, error="no failure kind")
    with pytest.raises(ValueError, match="a result when ok"):
        ActionOutcome(ok=True, error="both")
    with pytest.raises(ValueError, match="a result when ok"):
        ActionOutcome(ok=False)


class Runner:
    """An ActionRunner publishing into a list, with a queue that can be full."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []
        self.queue_full = False
        self.states: dict[str, dict[str, Any]] = {}
        self.client = httpx.AsyncClient(transport=transport)
        self.runner = ActionRunner(
            topics=TopicTree(base="site1/xiaozhi"),
            publish=self._publish,
            states=self.states,
            environ=environ or {},
            http=lambda: self.client,
            now=lambda: "2024-01-01T00:00:00.000Z",
        )

    def _publish(self, topic: str, payload: bytes, **options: Any) -> bool:
        if self.queue_full:
            return False
        self.sent.append((topic, payload, options))
        return True


def act(action: str, entity_id: str = "light.x", **parameters: Any) -> Action:
    return Action(action=action, entity_id=entity_id, parameters=parameters)


async def test_a_device_command_goes_to_the_configured_base() -> None:
    runner = Runner()
    outcome = await runner.runner.execute(
        act("turn_on"), XiaozhiBinding(device_id="d1", command="led"), message_id="m-1"
    )
    assert outcome == ActionOutcome.succeeded(
        {"topic": "site1/xiaozhi/commands/d1", "command": "led", "parameters": {"on": True}}
    )
    [(topic, payload, _)] = runner.sent
    assert topic == "site1/xiaozhi/commands/d1"
    sent = orjson.loads(payload)
    assert (sent["message_id"], sent["timestamp"]) == ("m-1", "2024-01-01T00:00:00.000Z")


async def test_a_full_queue_is_a_failed_outcome() -> None:
    runner = Runner()
    runner.queue_full = True
    device = await runner.runner.execute(
        act("turn_on"), XiaozhiBinding(device_id="d1", command="led"), message_id="m"
    )
    assert device == ActionOutcome.failed("MQTT queue full: command dropped")
    binding = MqttBinding(topic="z2m/x/set", payloads={"turn_on": {"state": "ON"}})
    mqtt = await runner.runner.execute(act("turn_on"), binding, message_id="m")
    assert mqtt == ActionOutcome.failed("MQTT queue full: message dropped")


async def test_virtual_state_is_updated() -> None:
    runner = Runner()
    outcome = await runner.runner.execute(act("turn_on"), VirtualBinding(), message_id="m")
    assert outcome == ActionOutcome.succeeded({"state": {"state": "on"}})
    assert runner.states == {"light.x": {"state": "on"}}


async def test_an_action_the_binding_cannot_run_is_a_failed_outcome() -> None:
    outcome = await Runner().runner.execute(
        act("set_temperature"), VirtualBinding(), message_id="m"
    )
    assert not outcome.ok
    assert "cannot run 'set_temperature'" in (outcome.error or "")


async def test_home_assistant_outcomes() -> None:
    binding = HomeAssistantBinding(base_url="http://ha.local:8123", token_env="HA_TOKEN")
    no_token = await Runner().runner.execute(act("turn_on"), binding, message_id="m")
    assert no_token == ActionOutcome.failed(
        "environment variable HA_TOKEN (the HA token) is not set"
    )

    def answer(status: int) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(status, json=[]))

    ok = await Runner(environ={"HA_TOKEN": "t"}, transport=answer(200)).runner.execute(
        act("turn_on"), binding, message_id="m"
    )
    assert ok == ActionOutcome.succeeded({"status_code": 200})
    refused = await Runner(environ={"HA_TOKEN": "t"}, transport=answer(401)).runner.execute(
        act("turn_on"), binding, message_id="m"
    )
    assert refused == ActionOutcome.failed("Home Assistant answered HTTP 401")
