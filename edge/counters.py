"""The counters every session of an edge process adds to (``/stats``, ``/metrics``).

One :class:`EdgeCounters` per process, shared by its sessions and mutated in place: a plain
attribute increment on the hot path, no lock (one event loop), no object per message. The
I/O layer reads :meth:`EdgeCounters.snapshot` for ``/stats`` and the attributes for
``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EdgeCounters"]


@dataclass
class EdgeCounters:
    """Counters shared by every session of an edge process (``/stats``, ``/metrics``).

    ``errors`` is keyed by the error code's name (``INVALID_DATA_FORMAT``…) plus
    ``INTERNAL_ERROR`` for bugs; ``closes`` by the close reason the session gave.
    """

    frames_received: int = 0
    bytes_received: int = 0
    text_messages: int = 0
    binary_frames: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    dropped_audio_frames: int = 0
    utterances: int = 0
    voice_commands: int = 0
    commands_delivered: int = 0
    rate_limited: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    version_conflicts: int = 0  # hello version disagreed with the Protocol-Version header
    duplicate_commands: int = 0  # a command message_id seen again (QoS 1 redelivery)
    commands_unrouted: int = 0  # a command for a topic no session here holds any more
    mcp_timeouts: int = 0
    monitor_lagged_packets: int = 0  # audio-monitor packets a slow listener skipped
    reads_paused: int = 0  # a device's reads waited for room in the MQTT queue (backpressure)
    logs_published: int = 0  # warning+ log lines on bridge/edges/{edge_id}/log
    logs_dropped: int = 0  # log lines over the feed's rate limit (a log storm)
    mcp_tools_announced_again: int = 0  # ``mcp_tools`` events re-published for a new hub

    def count_error(self, code: str) -> None:
        """One more error of ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def count_close(self, reason: str) -> None:
        """One more close for ``reason``."""
        self.closes[reason] = self.closes.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, with ``errors_total`` (seed 000's single ``errors`` figure)."""
        return {
            "frames_received": self.frames_received,
            "bytes_received": self.bytes_received,
            "text_messages": self.text_messages,
            "binary_frames": self.binary_frames,
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
            "dropped_audio_frames": self.dropped_audio_frames,
            "utterances": self.utterances,
            "voice_commands": self.voice_commands,
            "commands_delivered": self.commands_delivered,
            "rate_limited": self.rate_limited,
            "closes": dict(self.closes),
            "version_conflicts": self.version_conflicts,
            "duplicate_commands": self.duplicate_commands,
            "commands_unrouted": self.commands_unrouted,
            "mcp_timeouts": self.mcp_timeouts,
            "monitor_lagged_packets": self.monitor_lagged_packets,
            "reads_paused": self.reads_paused,
            "logs_published": self.logs_published,
            "logs_dropped": self.logs_dropped,
            "mcp_tools_announced_again": self.mcp_tools_announced_again,
        }
