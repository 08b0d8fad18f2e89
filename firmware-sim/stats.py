"""Counters shared by every device of a process: what the fleet's summary line shows.

Plain integers bumped from callbacks on one event loop (no locks needed); latencies are kept
in bounded deques so a long run has a fixed memory cost.
"""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field
from typing import Final

__all__ = ["LATENCY_KINDS", "LATENCY_SAMPLES", "SimStats"]

LATENCY_SAMPLES: Final = 20_000
"""Latency samples kept per kind (the newest); percentiles are over these."""

LATENCY_KINDS: Final = ("command", "voice")
"""The latencies a fleet measures (see :class:`SimStats`), as reports and thresholds name them."""


def _percentile(values: collections.deque[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, int(q) - 1)]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


@dataclass(slots=True)
class SimStats:
    """Fleet-wide counters.

    Attributes:
        devices: devices created.
        connected: devices whose channel (WS) or broker session (MQTT) is up now.
        messages_out / messages_in: messages sent and received by all devices.
        errors: errors by kind (``connect``, ``protocol``, ``command``...).
        command_latency: seconds from an integrator's command to the device's result.
        voice_latency: seconds from a spoken/typed command to the first answer.
    """

    devices: int = 0
    connected: int = 0
    connects: int = 0
    disconnects: int = 0
    messages_out: int = 0
    messages_in: int = 0
    audio_dropped: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    command_latency: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES)
    )
    voice_latency: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES)
    )
    _last_at: float | None = None
    _last_total: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def rate(self, now: float) -> float:
        """Messages (in + out) per second since the previous call."""
        total = self.messages_in + self.messages_out
        if self._last_at is None or now <= self._last_at:
            rate = 0.0
        else:
            rate = (total - self._last_total) / (now - self._last_at)
        self._last_at, self._last_total = now, total
        return rate

    def summary_line(self, now: float) -> str:
        """One line: connected, msgs/s, errors, command and voice latency (p50/p99)."""
        return (
            f"connected {self.connected}/{self.devices} | "
            f"msgs/s {self.rate(now):.0f} (out {self.messages_out} in {self.messages_in}) | "
            f"errors {self.error_count} | "
            f"cmd p50 {_ms(_percentile(self.command_latency, 50))} "
            f"p99 {_ms(_percentile(self.command_latency, 99))} | "
            f"voice p50 {_ms(_percentile(self.voice_latency, 50))}"
        )

    def latency_ms(self, kind: str) -> dict[str, float | int | None]:
        """``n``, ``p50``, ``p99`` and ``max`` of one of :data:`LATENCY_KINDS`, in ms.

        The figures are None when nothing was measured (``n`` 0): a report must tell "not
        measured" from "fast".
        """
        values = self.command_latency if kind == "command" else self.voice_latency

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "n": len(values),
            "p50_ms": ms(_percentile(values, 50)),
            "p99_ms": ms(_percentile(values, 99)),
            "max_ms": ms(max(values) if values else None),
        }

    def as_dict(self) -> dict[str, object]:
        """The counters and latencies as JSON-ready data (the fleet's JSON report)."""
        return {
            "devices": self.devices,
            "connected": self.connected,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "messages_out": self.messages_out,
            "messages_in": self.messages_in,
            "audio_dropped": self.audio_dropped,
            "errors": dict(sorted(self.errors.items())),
            "latency": {kind: self.latency_ms(kind) for kind in LATENCY_KINDS},
        }

    def report(self) -> list[str]:
        """The final report, one ``key  value`` line each."""
        lines = [
            f"devices         {self.devices}",
            f"connected       {self.connected} (connects {self.connects}, "
            f"disconnects {self.disconnects})",
            f"messages        out {self.messages_out}, in {self.messages_in}",
            f"audio dropped   {self.audio_dropped}",
            f"errors          {self.error_count}"
            + (
                " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) + ")"
                if self.errors
                else ""
            ),
        ]
        for name, values in (("command", self.command_latency), ("voice", self.voice_latency)):
            lines.append(
                f"{name + ' latency':<16}n {len(values)}, p50 {_ms(_percentile(values, 50))}, "
                f"p99 {_ms(_percentile(values, 99))}, max {_ms(max(values) if values else None)}"
            )
        return lines
