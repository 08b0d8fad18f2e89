"""An utterance streamed to one speech worker while the user speaks, sans-I/O.

Why: a whole utterance sent at its end can only be decoded after it; the time from the end of
speech to the action is then the whole decode (docs/benchmarks.md, Speech). Streamed, the
worker decodes as the user speaks and only the tail remains. The protocol
(docs/topics.md §2.12, docs/speech.md "Streaming"):

1. The utterance's first frame: :meth:`UtteranceStreamer.begin` publishes an
   :class:`~xiaozhi.payloads.UtteranceStart` on ``xiaozhi/utterances/{device_id}/start``,
   which the speech workers share (one of them gets it).
2. A worker that can decode it answers ``claimed`` on ``…/claim``, naming itself; the frames
   so far, then every :data:`BATCH_MS` of frames, go to ``…/stream/{worker_id}`` as numbered
   :class:`~xiaozhi.payloads.UtteranceChunk` s, only to that worker (one device's frames are
   never split across a shared group).
3. The end: the last frames with ``final``. The worker answers ``received``; then the edge
   forgets the audio.

Nothing is lost on the way: the edge keeps every frame until ``received``. No claim by the
end (no streaming worker: another engine, every stream busy, an older hub), ``refused`` (a
batch lost, the worker's decoder died), or no ``received`` within
:data:`RECEIVED_TIMEOUT_SECONDS` of the end (the worker died): the whole utterance goes on
``xiaozhi/utterances/{device_id}`` as without streaming, with the same ``message_id`` (a
worker that did get it drops the copy as a duplicate).

The streamer never reads a clock or touches the broker: the session hands it ``now`` and
executes the :class:`~xiaozhi_edge.outputs.Publish` es it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from xiaozhi.payloads import (
    MAX_CHUNK_FRAMES,
    ClaimState,
    UtteranceChunk,
    UtteranceClaim,
    UtterancePayload,
    UtteranceStart,
)
from xiaozhi.topics import TopicKind, TopicTree
from xiaozhi_edge.outputs import Publish

__all__ = ["BATCH_MS", "RECEIVED_TIMEOUT_SECONDS", "UtteranceStreamer"]

BATCH_MS: Final = 240
"""Audio per batch sent to the worker: four 60 ms frames. Smaller batches cost more
messages; larger ones leave more audio to decode after the end."""

RECEIVED_TIMEOUT_SECONDS: Final = 2.0
"""From the final batch to the worker's ``received``: past it, the worker is taken for dead
and the utterance is sent whole. A live worker answers in milliseconds (before decoding)."""

MAX_PENDING: Final = 4
"""Utterances ended and awaiting ``received`` at once (auto mode may end one and begin the
next at once); past it, the oldest is sent whole."""


@dataclass(slots=True)
class _Active:
    """The utterance being spoken: offered, then (once claimed) streamed."""

    start: UtteranceStart
    worker_id: str | None = None  # who claimed it
    refused: bool = False  # refused, or a claim that came too late: sent whole at the end
    sent: int = 0  # frames sent
    seq: int = 0  # next batch number


@dataclass(slots=True)
class _Ended:
    """A streamed utterance whose final batch went out: kept until ``received``."""

    whole: UtterancePayload
    deadline: float


@dataclass(slots=True)
class UtteranceStreamer:
    """One device's streamed utterances (module docstring).

    Args:
        topics: the topic tree.
        device_id: the device.
        frame_duration_ms: the device's Opus frame duration (sets the batch size).
    """

    topics: TopicTree
    device_id: str
    frame_duration_ms: int
    _active: _Active | None = None
    _ended: dict[str, _Ended] = field(default_factory=dict)

    @property
    def message_id(self) -> str | None:
        """The ``message_id`` of the utterance being spoken, once :meth:`begin` ran."""
        return self._active.start.message_id if self._active is not None else None

    def begin(self, start: UtteranceStart) -> Publish:
        """The utterance's first frame came: offer it to the speech workers."""
        self._active = _Active(start)
        topic = self.topics.utterance_start(self.device_id)
        return Publish.of(TopicKind.UTTERANCE_START, topic, start.to_wire())

    def frames(self, packets: tuple[bytes, ...] | list[bytes]) -> list[Publish]:
        """The utterance's frames so far (all of them, in order): the batches now due."""
        active = self._active
        if active is None or active.worker_id is None or active.refused:
            return []
        if (len(packets) - active.sent) * self.frame_duration_ms < BATCH_MS:
            return []
        return self._batches(active, packets, final=False)

    def on_claim(
        self, claim: UtteranceClaim, packets: tuple[bytes, ...] | list[bytes], now: float
    ) -> list[Publish]:
        """A worker's answer. ``packets``: the frames of the utterance being spoken so far.

        Returns:
            The frames so far for a worker that claimed the utterance being spoken; the
            whole utterance for an ended one the worker refused; nothing otherwise.
        """
        active = self._active
        if active is not None and claim.message_id == active.start.message_id:
            if claim.state is ClaimState.CLAIMED and active.worker_id is None:
                active.worker_id = claim.worker_id
                return self._batches(active, packets, final=False)
            if claim.state is ClaimState.REFUSED and claim.worker_id == active.worker_id:
                active.refused = True
            return []
        ended = self._ended.get(claim.message_id)
        if ended is None:
            return []  # a late claim of an utterance sent whole: the worker lets it expire
        del self._ended[claim.message_id]
        if claim.state is ClaimState.RECEIVED:
            return []
        return [self._whole(ended.whole)]  # refused (or claimed again): send it whole

    def end(self, whole: UtterancePayload, now: float) -> list[Publish]:
        """The utterance ended: its final batch to the worker that claimed it (kept until
        ``received``), or the whole utterance when none did."""
        active, self._active = self._active, None
        if active is None or active.worker_id is None or active.refused:
            return [self._whole(whole)]
        packets = whole.opus_packets()
        out = self._batches(active, packets, final=True, reason=whole.reason)
        out += self._keep(whole, now + RECEIVED_TIMEOUT_SECONDS)
        return out

    def cancel(self) -> list[Publish]:
        """The connection is gone: the utterance being spoken is dropped (as without
        streaming), the ended ones not yet ``received`` are sent whole."""
        self._active = None
        ended, self._ended = self._ended, {}
        return [self._whole(e.whole) for e in ended.values()]

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work."""
        return min((e.deadline for e in self._ended.values()), default=None)

    def expire(self, now: float) -> list[Publish]:
        """Ended utterances whose worker never said ``received``: sent whole."""
        late = [m for m, e in self._ended.items() if e.deadline <= now]
        return [self._whole(self._ended.pop(m).whole) for m in late]

    def _keep(self, whole: UtterancePayload, deadline: float) -> list[Publish]:
        out: list[Publish] = []
        while len(self._ended) >= MAX_PENDING:
            oldest = next(iter(self._ended))
            out.append(self._whole(self._ended.pop(oldest).whole))
        self._ended[whole.message_id] = _Ended(whole, deadline)
        return out

    def _batches(
        self,
        active: _Active,
        packets: tuple[bytes, ...] | list[bytes],
        *,
        final: bool,
        reason: str | None = None,
    ) -> list[Publish]:
        assert active.worker_id is not None
        topic = self.topics.utterance_stream(self.device_id, active.worker_id)
        out: list[Publish] = []
        while active.sent < len(packets) or (final and not out):
            batch = list(packets[active.sent : active.sent + MAX_CHUNK_FRAMES])
            active.sent += len(batch)
            last = final and active.sent >= len(packets)
            chunk = UtteranceChunk.from_opus(
                batch,
                sample_rate=active.start.sample_rate,
                frame_duration_ms=self.frame_duration_ms,
                device_id=self.device_id,
                message_id=active.start.message_id,
                seq=active.seq,
                final=last,
                reason=reason if last else None,
            )
            active.seq += 1
            out.append(Publish.of(TopicKind.UTTERANCE_STREAM, topic, chunk.to_wire()))
        return out

    def _whole(self, whole: UtterancePayload) -> Publish:
        topic = self.topics.utterance(self.device_id)
        return Publish.of(TopicKind.UTTERANCE, topic, whole.to_wire())
