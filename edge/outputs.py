"""The effects a :class:`~xiaozhi_edge.session.DeviceSession` asks the I/O layer to perform.

The session is sans-I/O (style.md §1, §3): each ``on_*`` call returns a list of these values
and the asyncio layer executes them **in list order**. They are frozen, slotted dataclasses
checked when built, like wsproto's events::

    SendText      write one WebSocket text frame to the device
    SendBinary    write one WebSocket binary frame to the device
    Publish       enqueue one MQTT publish (never awaited per message, design.md §8)
    Subscribe     add MQTT subscriptions that route commands to this session
    Unsubscribe   remove them (for this session only: see below)
    PlayAudio     send TTS frames paced at frame duration, then run ``then``
    StopAudio     cut the playback at once (abort)
    Close         close the WebSocket with a code and reason; the session accepts no more input

Subscriptions are per session, and several sessions ask for the same filter (every session
wants ``xiaozhi/commands/broadcast``; a reconnecting device briefly has two sessions). The I/O
layer must reference-count filters: subscribe at the broker on the first ``Subscribe`` of a
filter, unsubscribe on the last ``Unsubscribe``, and route each message to every session that
holds a matching filter.

Playback rules the I/O layer must keep (reference §1.7, §5.2, §6.4):

* :class:`PlayAudio` sends ``prebuffer_frames`` frames at once, then one frame every
  ``frame_duration_ms`` (the device's decode queue holds 2.4 s and drops the rest). When the
  last frame has been sent, the outputs in ``then`` run (the ``tts stop`` that returns the
  device to listening).
* A playback that is **cut** never runs its ``then``: cut by :class:`StopAudio`, by a newer
  :class:`PlayAudio` (which replaces the current one: the newest answer wins), or by
  :class:`Close`. Whoever cuts it sends what must follow itself: the session answers
  ``abort`` with ``[StopAudio(), SendText(tts stop), ...]``, so the device gets exactly one
  ``tts stop`` per abort whether or not audio was still playing. The session cannot know
  whether playback is still running; this rule makes the count exact anyway.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from xiaozhi.topics import TopicKind, publish_options

__all__ = [
    "MAX_CLOSE_REASON_BYTES",
    "Close",
    "CloseCode",
    "Output",
    "PlayAudio",
    "Publish",
    "SendBinary",
    "SendText",
    "StopAudio",
    "Subscribe",
    "Unsubscribe",
]

MAX_CLOSE_REASON_BYTES = 123
"""RFC 6455 §5.5: a control frame payload is at most 125 bytes, 2 of them the close code."""


class CloseCode(enum.IntEnum):
    """WebSocket close codes the session uses (RFC 6455 §7.4.1)."""

    NORMAL = 1000  # goodbye
    GOING_AWAY = 1001  # idle timeout (firmware's 120 s, reference §1.1)
    POLICY_VIOLATION = 1008  # flood, repeated garbage, hello timeout, identity refused
    MESSAGE_TOO_BIG = 1009  # a frame over max_frame_bytes


@dataclass(frozen=True, slots=True)
class SendText:
    """One WebSocket text frame to the device (a JSON message)."""

    text: str


@dataclass(frozen=True, slots=True)
class SendBinary:
    """One WebSocket binary frame to the device, already in its binary protocol version."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    """One MQTT publish. Build it with :meth:`of` so QoS and retain come from design.md §5."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError(f"qos {self.qos} is not 0 or 1 (QoS 2 is never used)")

    @classmethod
    def of(cls, kind: TopicKind, topic: str, payload: bytes) -> Publish:
        """A publish on ``topic`` of ``kind``, with :func:`~xiaozhi.topics.publish_options`."""
        options = publish_options(kind)
        return cls(topic, payload, int(options.qos), options.retain)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Route MQTT messages matching ``filters`` to this session's ``on_command``.

    The I/O layer performs the outputs after it only once the broker has acknowledged the
    subscription (bounded; at once while the broker is away), so a reply that follows it,
    such as the server hello, promises the device its commands reach it.
    """

    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Stop routing ``filters`` to this session (other sessions may still want them)."""

    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """TTS audio for the device, paced by the I/O layer (see the module docstring).

    Attributes:
        frames: Binary frames already encoded in the device's protocol version
            (:func:`xiaozhi.binary.encode_opus`), one per WebSocket message.
        frame_duration_ms: Audio per frame; the pacing interval after the pre-buffer.
        prebuffer_frames: Frames sent at once before pacing starts (the reference server
            sends 5, reference §5.2).
        then: Outputs to run once the last frame is sent; never run if the playback is cut.
    """

    frames: tuple[bytes, ...]
    frame_duration_ms: int
    prebuffer_frames: int
    then: tuple[Output, ...] = ()

    def __post_init__(self) -> None:
        if self.frame_duration_ms <= 0:
            raise ValueError(f"frame_duration_ms {self.frame_duration_ms} must be positive")
        if self.prebuffer_frames < 0:
            raise ValueError(f"prebuffer_frames {self.prebuffer_frames} must not be negative")

    @property
    def duration_ms(self) -> int:
        """Playing time of all frames."""
        return len(self.frames) * self.frame_duration_ms


@dataclass(frozen=True, slots=True)
class StopAudio:
    """Cut the current playback now: drop its unsent frames and its ``then``."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket. The session has moved to CLOSING or ERROR and ignores further input.

    The I/O layer still calls ``on_close`` when the socket is gone, which publishes the
    ``disconnected`` status.
    """

    code: int
    reason: str

    def __post_init__(self) -> None:
        if len(self.reason.encode("utf-8")) > MAX_CLOSE_REASON_BYTES:
            raise ValueError(f"close reason over {MAX_CLOSE_REASON_BYTES} bytes: {self.reason!r}")


Output: TypeAlias = (
    SendText | SendBinary | Publish | Subscribe | Unsubscribe | PlayAudio | StopAudio | Close
)
"""Everything a session can ask for; dispatch with ``match`` and ``assert_never``."""
