"""The voice unit: voice commands → plan (:mod:`xiaozhi_hub.pipeline`) → actions carried out
(:mod:`xiaozhi_hub.execution`) → the speaking device's answer and the events.

Consumed through shared subscriptions (``$share/<XIAOZHI_HUB_SHARE_GROUP>/…``), so N
replicas handle each voice command exactly once; QoS 1 may still deliver one twice, so the
last :data:`VOICE_DEDUP_IDS` message ids (per device) are remembered and a repeat is skipped.

Who spoke comes from what the broker enforces, never from the payload alone (design.md §9):

* ``xiaozhi/events/voice_command/{device_id}``: an MQTT device's own topic, which the
  production ACL lets only that device's credential write. The topic names the speaker; a
  payload naming another device is refused, counted, and answered with an ``error`` event on
  the topic's device's events.
* ``xiaozhi/events/voice_command``: trusted publishers only (edges vouch for the WebSocket
  devices they authenticated; the hub's speech unit), so the payload's ``device_id`` is taken.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import structlog

from xiaozhi.dedup import RecentIds
from xiaozhi.errors import InvalidTopic, WireError
from xiaozhi.payloads import Action, EventType, VoiceCommandEvent
from xiaozhi.topics import ParsedTopic, TopicKind, validate_device_id
from xiaozhi_hub.actions import Plan
from xiaozhi_hub.execution import ActionOutcome, ActionRunner, Failure
from xiaozhi_hub.executors import respond_effect
from xiaozhi_hub.home import XiaozhiBinding
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.responses import own_sentence
from xiaozhi_hub.spoken_answers import SpokenAnswers
from xiaozhi_hub.unit import (
    MAX_PAYLOAD_BYTES,
    HubContext,
    Route,
    UnitTasks,
    new_id,
    now_wire,
)

__all__ = ["VOICE_DEDUP_IDS", "VoiceUnit"]

log = structlog.get_logger("xiaozhi.hub")

VOICE_DEDUP_IDS = 4096
"""Voice command message ids remembered against QoS 1 redelivery."""


class VoiceUnit:
    """Voice commands → intent → actions → executors → the speaking device's answer.

    Args:
        ctx: what the units share.
        pipeline: recognise → resolve → plan (shared with the REST and bridge voice tests);
            :meth:`start` loads its intents before subscribing.
        runner: carries out each planned action.
        spoken: turns answers into audio for the device; None: text only.
    """

    def __init__(
        self,
        ctx: HubContext,
        *,
        pipeline: VoicePipeline,
        runner: ActionRunner,
        spoken: SpokenAnswers | None = None,
    ) -> None:
        self._ctx = ctx
        self.spoken = spoken
        self.pipeline = pipeline
        self.runner = runner
        self._tasks = UnitTasks("voice_command", ctx.settings.max_concurrent_voice_commands)
        self._recent = RecentIds(VOICE_DEDUP_IDS)
        self.routes: Mapping[TopicKind, Route] = {
            TopicKind.VOICE_COMMAND_EVENTS: self._on_voice,
            TopicKind.DEVICE_VOICE_COMMAND: self._on_voice,
        }

    @property
    def filters(self) -> list[str]:
        """The fleet-wide topic (trusted publishers) and every device's own topic, shared."""
        topics, group = self._ctx.topics, self._ctx.settings.hub_share_group
        return [
            topics.shared_voice_commands(group),
            topics.shared(group, topics.all_device_voice_commands()),
        ]

    async def start(self) -> None:
        await self.pipeline.start()
        await self._ctx.owner.subscribe(self.filters)

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe(self.filters)
        await self._tasks.drain()

    def _on_voice(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        ctx = self._ctx
        try:
            event = VoiceCommandEvent.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
            validate_device_id(event.device_id)
        except (WireError, InvalidTopic) as err:
            ctx.metrics.voice_commands.labels("invalid").inc()
            ctx.invalid("voice_command", topic, err)
            return
        speaker = parsed.device_id  # None on the fleet-wide topic of trusted publishers
        if speaker is not None and event.device_id != speaker:
            self._refuse_impersonation(topic, speaker, event)
            return
        # Per device: another device's message ids must not make this one's look repeated.
        key = None if event.message_id is None else f"{event.device_id}/{event.message_id}"
        if self._recent.seen(key):
            ctx.metrics.voice_commands.labels("duplicate").inc()
            return
        self._tasks.spawn(
            self._run(event), name=f"voice-{event.device_id}", device_id=event.device_id
        )

    def _refuse_impersonation(self, topic: str, speaker: str, event: VoiceCommandEvent) -> None:
        """A device spoke on its own topic in another device's name: nothing is executed.

        Counted (``invalid``), logged, and answered on the speaker's own events topic, so its
        firmware (or whoever watches it) sees why nothing happened; the named device hears
        nothing of it.
        """
        ctx = self._ctx
        ctx.metrics.voice_commands.labels("invalid").inc()
        ctx.invalid("voice_command", topic, f"device_id {event.device_id!r} is not the topic's")
        ctx.event(
            speaker,
            EventType.ERROR.value,
            source="voice_command",
            message_id=event.message_id,
            error_message=(
                f"voice command refused: device_id {event.device_id!r} differs from the "
                f"topic's {speaker!r}; a device speaks only for itself"
            ),
        )

    def _area_of(self, event: VoiceCommandEvent) -> str | None:
        registry = self._ctx.registry
        area = registry.area_of(event.device_id)
        if area is None and event.area and registry.home.area(event.area) is not None:
            area = event.area
        return area

    async def answer(
        self,
        device_id: str,
        text: str,
        *,
        stt: str | None = None,
        actions: Iterable[Action] = (),
        session_id: str | None = None,
        message_id: str | None = None,
        error: str | None = None,
        language: str | None = None,
    ) -> None:
        """Answer the speaking device: the ``respond`` command (with the answer spoken in
        ``language``, None: the home's), and, when nothing was planned (``error``), the
        ``response`` event saying why."""
        ctx = self._ctx
        spoken = self.spoken
        audio = await spoken.clip(text, language=language) if spoken is not None else None
        respond = respond_effect(
            device_id,
            text,
            stt=stt,
            actions=actions,
            session_id=session_id,
            topics=ctx.topics,
            message_id=message_id,
            timestamp=now_wire(),
            audio=audio,
        )
        ctx.publish(respond.topic, respond.wire(), qos=respond.qos)
        if error is not None:
            ctx.event(
                device_id,
                EventType.RESPONSE.value,
                message_id=message_id,
                text=text,
                stt=stt,
                intent=None,
                executed=False,
                actions=[],
                error=error,
            )

    def _name_of(self, entity_id: str) -> str:
        entity = self._ctx.registry.home.entity(entity_id)
        return entity.name.lower() if entity is not None else entity_id

    async def _run(self, event: VoiceCommandEvent) -> None:
        ctx = self._ctx
        device_id = event.device_id
        base_id = event.message_id or new_id()
        started = time.perf_counter()
        result = await self.pipeline.plan_text(
            event.command, device_id=device_id, area=self._area_of(event)
        )
        intent_ms = round((time.perf_counter() - started) * 1000, 1)  # the intent step's time
        # debug: the response event on MQTT says the same for every command; a line per
        # command (rendered, handed to the live stream's log listener, written) was a tenth
        # of the hub's loop at 1,000 commands/s (docs/benchmarks.md).
        log.debug(
            "voice_command",
            device_id=device_id,
            text=event.command[:100],
            intent=result.intent,
            actions=len(result.actions),
            error=result.error,
        )
        failed: list[tuple[str, ActionOutcome]] = []
        for index, action in enumerate(result.actions, start=1):
            binding = result.bindings[action.entity_id]
            common = {"message_id": base_id, "index": index, "executor": binding.type}
            ctx.event(device_id, EventType.ACTION.value, action=action.to_json_dict(), **common)
            if isinstance(binding, XiaozhiBinding):
                # What is left is a wait for the device's answer (bounded by
                # command_answer_timeout_seconds): it must not hold one of the places of
                # max_concurrent_voice_commands, or 64 silent devices stop every command.
                self._tasks.give_back()
            outcome = await self.runner.execute(action, binding, message_id=f"{base_id}-{index}")
            ctx.metrics.actions.labels(binding.type, outcome.status).inc()
            ctx.counters[f"actions_{outcome.status}"] += 1
            ctx.event(
                device_id,
                EventType.ACTION_RESULT.value,
                action=action.to_json_dict(),
                status=outcome.status,
                **common,
                **outcome.event_fields(),
            )
            if not outcome.ok:
                failed.append((self._name_of(action.entity_id), outcome))
            elif isinstance(binding, XiaozhiBinding) and outcome.result is not None:
                ctx.registry.apply_confirmed_command(
                    binding.device_id,
                    outcome.result["command"],
                    outcome.result.get("parameters", {}),
                )
        text = _answer(result, failed)
        await self.answer(
            device_id,
            text,
            stt=event.command,
            actions=result.actions,
            session_id=event.session_id,
            message_id=base_id,
            language=result.language,
        )
        ctx.event(
            device_id,
            EventType.RESPONSE.value,
            message_id=base_id,
            text=text,
            stt=event.command,
            intent=result.intent,
            intent_ms=intent_ms,
            executed=result.executed,
            actions=[a.to_json_dict() for a in result.actions],
            **({"error": result.error} if result.error else {}),
        )
        verdict = "executed" if result.executed else "not_executed"
        ctx.metrics.voice_commands.labels(verdict).inc()
        ctx.counters[f"voice_commands_{verdict}"] += 1


_FAILURE_SENTENCES = {
    Failure.OFFLINE: "Sorry, the {name} is offline.",
    Failure.NO_ANSWER: "Sorry, the {name} did not answer.",
    Failure.REFUSED: "Sorry, the {name} couldn't do that.",
    Failure.ERROR: "Sorry, that didn't work for the {name}.",
}


def _answer(result: Plan, failed: list[tuple[str, ActionOutcome]]) -> str:
    """The sentence to say: the plan's when everything was done; otherwise what went wrong,
    per target (in the plan's language where we have the sentence), after the plan's
    sentence when some of it was done."""
    if not failed:
        return result.response_text
    sentences: list[str] = []
    for name, outcome in failed:
        failure = outcome.failure or Failure.ERROR
        sentence = own_sentence(result.language, failure.value, name=name)
        if sentence is None:
            sentence = _FAILURE_SENTENCES[failure].format(name=name)
        if sentence not in sentences:
            sentences.append(sentence)
    if len(failed) == len(result.actions):
        return " ".join(sentences)
    return " ".join([result.response_text, *sentences])
