"""Per-connection limits of the edge, and the pure rate-keeping they need.

Every limit is a named field with its unit in the name and a documented default (style.md:
"Limits are named, documented parameters"). The edge's settings map onto
:class:`EdgeLimits`; the session reads nothing else. Nothing here reads a clock: every
method takes ``now``, monotonic seconds, from the caller.

Worst-case memory per connection that these limits allow (beyond the socket's own buffers):
one utterance of ``max_utterance_seconds`` of 16 kHz 16-bit PCM (15 s = 480 KB, only while
the device is talking), ``max_reassembly_bytes`` of seed audio chunks (1 MiB, only for
seed-style clients uploading audio), an Opus decoder (about 18 KB, created on the first
``listen start``) and at most ``max_pending_mcp_calls`` small call records. An idle device
holds none of these.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields

__all__ = ["EdgeLimits", "EventWindow", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """Limits applied to each device connection; defaults are the shipped values.

    Attributes:
        max_frame_bytes: Largest WebSocket message (text or binary) accepted, in bytes
            (64 KiB). A larger one gets an error and close 1009. The I/O layer lets frames up
            to twice this through so the session can answer instead of the socket dying. A
            seed ``audio_data`` message must fit too: 1.5 s of 16 kHz WAV is about 64 KB of
            base64, so seed clients send longer audio in chunks.
        max_messages_per_second: Sustained rate of messages (text and binary together) per
            connection (50). 20 ms Opus frames alone are 50 per second, so this is the
            floor for firmware built with 20 ms frames; 60 ms frames are about 17 per second.
        burst_messages: Token-bucket depth (100): messages accepted at once above the rate.
        flood_close_after_violations: Messages refused by the rate limit within
            ``flood_window_seconds`` after which the connection is closed 1008 "flood" (20).
        flood_window_seconds: The window for the previous count, in seconds (10).
        garbage_close_after_errors: Malformed messages within ``garbage_window_seconds``
            after which the connection is closed 1008 (10).
        garbage_window_seconds: The window for the previous count, in seconds (10).
        hello_timeout_seconds: Time from connect to ``hello``/``device_register`` before the
            connection is closed (10 s, as the firmware waits for ours, reference §1.1).
        idle_timeout_seconds: Time without any frame in either direction before the
            connection is closed 1001 (120 s, the firmware's ``kTimeoutSeconds``).
        max_utterance_seconds: Longest utterance buffered as PCM (15 s); see
            :class:`~xiaozhi_edge.utterances.UtteranceBuffer` for what happens beyond.
        silence_rms_threshold: Frame RMS (16-bit sample units) under which a frame counts as
            silence for auto-mode segmentation (500, about -36 dBFS).
        silence_ms: Silence after speech that ends an auto/realtime-mode utterance (600 ms).
        max_reassembly_bytes: Bytes of seed ``audio_data`` chunks held per connection while
            a stream is incomplete (1 MiB); also the largest WAV decoded.
        max_reassembly_streams: Incomplete chunked streams held per connection (4); a new
            one beyond evicts the oldest.
        max_chunks_per_stream: Largest ``total_chunks`` accepted (1024).
        mcp_call_timeout_seconds: How long an MCP request may wait for the device (10 s);
            the device may never answer (reference §6.6).
        max_pending_mcp_calls: MCP requests in flight per connection (32); more are refused
            with a failed command result.
        max_mcp_tools: Tools kept from ``tools/list`` (256); pagination stops beyond.
        max_mcp_pages: ``tools/list`` pages followed (32); a device that never stops
            paginating is cut off there.

    Raises:
        ValueError: listing *every* field that is not positive (caller misuse).
    """

    max_frame_bytes: int = 64 * 1024
    max_messages_per_second: float = 50.0
    burst_messages: int = 100
    flood_close_after_violations: int = 20
    flood_window_seconds: float = 10.0
    garbage_close_after_errors: int = 10
    garbage_window_seconds: float = 10.0
    hello_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 120.0
    max_utterance_seconds: float = 15.0
    silence_rms_threshold: float = 500.0
    silence_ms: int = 600
    max_reassembly_bytes: int = 1024 * 1024
    max_reassembly_streams: int = 4
    max_chunks_per_stream: int = 1024
    mcp_call_timeout_seconds: float = 10.0
    max_pending_mcp_calls: int = 32
    max_mcp_tools: int = 256
    max_mcp_pages: int = 32

    def __post_init__(self) -> None:
        bad = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if isinstance(getattr(self, f.name), bool) or not getattr(self, f.name) > 0
        ]
        if bad:
            raise ValueError(f"EdgeLimits fields must be positive numbers: {', '.join(bad)}")


class TokenBucket:
    """A token bucket: ``rate_per_second`` tokens refill, at most ``burst`` held.

    Pure: the caller passes ``now`` (monotonic seconds). A clock that steps back refills
    nothing rather than raising.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate_per_second")

    def __init__(self, rate_per_second: float, burst: float, now: float) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate_per_second}, {burst}")
        self.rate_per_second = float(rate_per_second)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (refills, takes nothing)."""
        self._refill(now)
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if available.

        Returns:
            True if taken; False if the bucket is short (nothing is taken then).
        """
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_second)
            self._last = now


class EventWindow:
    """Says when ``threshold`` events happened within ``window_seconds``.

    Keeps at most ``threshold`` timestamps, so memory is bounded whatever the peer does; the
    deque holding them is made by the first event (a well-behaved device never records one,
    and an empty deque costs 760 B on each of 10,000 idle connections).
    """

    __slots__ = ("_times", "threshold", "window_seconds")

    def __init__(self, threshold: int, window_seconds: float) -> None:
        if threshold < 1 or window_seconds <= 0:
            raise ValueError(
                f"need threshold >= 1 and window > 0, got {threshold}, {window_seconds}"
            )
        self.threshold = threshold
        self.window_seconds = window_seconds
        self._times: deque[float] | None = None

    def record(self, now: float) -> bool:
        """Record one event at ``now``.

        Returns:
            True when this event is the ``threshold``-th within the window (time to act).
        """
        times = self._times
        if times is None:
            times = self._times = deque(maxlen=self.threshold)
        times.append(now)
        return len(times) == self.threshold and now - times[0] <= self.window_seconds

    def count(self, now: float) -> int:
        """Events recorded within the window ending at ``now`` (at most ``threshold``)."""
        if self._times is None:
            return 0
        return sum(1 for t in self._times if now - t <= self.window_seconds)
