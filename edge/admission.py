"""Admission: whether one device message is taken at all, before it is parsed.

Every WebSocket message of a connection passes :meth:`Admission.admit` first: its size
against ``max_frame_bytes`` and the connection's token bucket (``max_messages_per_second``,
``burst_messages``). A refusal is a :class:`Refusal`: the typed error the device is answered
with and, when the connection must end, the close. Rules (docs/edge.md "Limits"):

* a message over ``max_frame_bytes``: ``MESSAGE_TOO_LARGE``, close 1009 "message too big";
* a message over the rate: ``RATE_LIMITED`` naming the observed rate (the greater of this
  second's and the last second's count), and when ``flood_close_after_violations`` such
  refusals fall within ``flood_window_seconds``, close 1008 "flood";
* a malformed message (found later, by the parser) is reported with :meth:`Admission.garbage`;
  ``garbage_close_after_errors`` of them within ``garbage_window_seconds`` close 1008.

Pure and slotted: every method takes ``now`` (monotonic seconds), nothing is allocated for
an admitted message, and the flood and garbage windows are made by the first refusal (a
well-behaved device never has one; an idle edge holds 10,000 of these).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from xiaozhi.errors import PayloadTooLarge, RateLimited, WireError
from xiaozhi_edge.limits import EdgeLimits, EventWindow, TokenBucket
from xiaozhi_edge.outputs import CloseCode

__all__ = ["FLOOD", "MALFORMED_STREAK", "TOO_BIG", "Admission", "Refusal"]

TOO_BIG: Final = (CloseCode.MESSAGE_TOO_BIG, "message too big")
FLOOD: Final = (CloseCode.POLICY_VIOLATION, "flood")
MALFORMED_STREAK: Final = (CloseCode.POLICY_VIOLATION, "too many malformed frames")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message that was not admitted.

    Attributes:
        error: What the device is answered with (``PayloadTooLarge`` or ``RateLimited``).
        close: The close code and reason when the connection must end, else None.
    """

    error: WireError
    close: tuple[CloseCode, str] | None


class Admission:
    """The size, rate, flood and garbage rules of one connection.

    Args:
        limits: The connection's limits.
        now: Monotonic seconds at connect (the bucket starts full).
    """

    __slots__ = (
        "_bucket",
        "_flood",
        "_garbage",
        "_rate_count",
        "_rate_previous",
        "_rate_window_start",
        "limits",
    )

    def __init__(self, limits: EdgeLimits, now: float) -> None:
        self.limits = limits
        self._bucket = TokenBucket(limits.max_messages_per_second, limits.burst_messages, now)
        self._flood: EventWindow | None = None  # made by the first rate refusal
        self._garbage: EventWindow | None = None  # made by the first malformed message
        self._rate_window_start = now
        self._rate_count = 0
        self._rate_previous = 0

    def admit(self, size: int, now: float) -> Refusal | None:
        """Take one message of ``size`` bytes at ``now``.

        Returns:
            None when the message is admitted; else the refusal to answer (and close with).
        """
        if now - self._rate_window_start >= 1.0:
            self._rate_previous, self._rate_count = self._rate_count, 0
            self._rate_window_start = now
        self._rate_count += 1
        limits = self.limits
        if size > limits.max_frame_bytes:
            too_big = PayloadTooLarge(size=size, limit=limits.max_frame_bytes, what="message")
            return Refusal(too_big, TOO_BIG)
        if self._bucket.take(now):
            return None
        observed = max(self._rate_count, self._rate_previous)
        rate_limited = RateLimited(rate=observed, limit=limits.max_messages_per_second)
        flood = self._flood
        if flood is None:
            flood = self._flood = EventWindow(
                limits.flood_close_after_violations, limits.flood_window_seconds
            )
        return Refusal(rate_limited, FLOOD if flood.record(now) else None)

    def garbage(self, now: float) -> bool:
        """One malformed message at ``now``.

        Returns:
            True when it completes a streak: close the connection with
            :data:`MALFORMED_STREAK`.
        """
        garbage = self._garbage
        if garbage is None:
            limits = self.limits
            garbage = self._garbage = EventWindow(
                limits.garbage_close_after_errors, limits.garbage_window_seconds
            )
        return garbage.record(now)
