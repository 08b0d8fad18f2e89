"""The fleet's pass/fail thresholds (``--min-connected``, ``--max-p99-ms``) as report cases.

``--min-connected`` takes a count (``190``) or a percentage (``95%``) of the devices expected
to connect (every device, except firmware WebSocket devices under ``--no-wake``, which connect
only to talk). A percentage rounds up: 95 % of 8 devices needs 8. The default is ``100%``,
what the fleet always required. The figure checked is the lower of two counts: connected when
the connect phase ended, and still connected when the run ended, so a fleet that connected
and then fell over does not pass.

``--max-p99-ms`` applies to each latency the run measured (``command``: ``--probe-rate``
round trips to MQTT devices; ``voice``: ``--say-every`` to the first answer, which needs the
hub). A kind with no sample is reported as skipped; when no kind has one, the threshold
fails: a limit that could not be checked must not pass a CI job.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from xiaozhi_sim.report import Case
from xiaozhi_sim.stats import LATENCY_KINDS, SimStats

__all__ = ["FleetThresholds", "MinConnected", "fleet_cases"]

_HOW_TO_MEASURE = {
    "command": "--probe-rate N times commands to MQTT devices",
    "voice": "--say-every SECONDS makes devices talk; the hub must answer",
}


@dataclass(frozen=True, slots=True)
class MinConnected:
    """A count of devices, or a percentage of those expected."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> MinConnected:
        """``"190"`` or ``"95%"``; argparse's ``type``.

        Raises:
            argparse.ArgumentTypeError: anything else, quoting it.
        """
        stripped = text.strip()
        percent = stripped.endswith("%")
        try:
            value = float(stripped.removesuffix("%")) if percent else int(stripped)
        except ValueError:
            value = -1
        if value < 0 or (percent and value > 100):
            raise argparse.ArgumentTypeError(
                f"expected a device count (190) or a percentage 0-100% (95%), got {text!r}"
            )
        return cls(value, percent)

    def needed(self, expected: int) -> int:
        """Devices needed out of ``expected``."""
        return math.ceil(expected * self.value / 100) if self.percent else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


@dataclass(frozen=True, slots=True)
class FleetThresholds:
    min_connected: MinConnected = MinConnected(100, percent=True)
    max_p99_ms: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"min_connected": str(self.min_connected), "max_p99_ms": self.max_p99_ms}


def fleet_cases(
    stats: SimStats,
    *,
    expected: int,
    connected_after_connect: int,
    connected_at_end: int,
    connect_seconds: float,
    thresholds: FleetThresholds,
) -> list[Case]:
    """The fleet's checks: ``connected``, then one ``p99 KIND latency`` per kind if asked."""
    needed = thresholds.min_connected.needed(expected)
    lowest = min(connected_after_connect, connected_at_end)
    limit = f"--min-connected {thresholds.min_connected} ({needed} of {expected})"
    figures = (
        f"connected {lowest} of {expected} expected devices "
        f"(after connecting {connected_after_connect}, at the end {connected_at_end})"
    )
    cases = [
        Case(
            "connected",
            "PASS" if lowest >= needed else "FAIL",
            connect_seconds,
            f"{figures}, below {limit}" if lowest < needed else f"{figures}; {limit}",
        )
    ]
    if thresholds.max_p99_ms is None:
        return cases
    latency = []
    for kind in LATENCY_KINDS:
        figures_ms = stats.latency_ms(kind)
        name = f"p99 {kind} latency"
        p99 = figures_ms["p99_ms"]
        if p99 is None:
            latency.append(
                Case(name, "SKIP", message=f"no {kind} latency measured ({_HOW_TO_MEASURE[kind]})")
            )
            continue
        seen = f"{kind} latency p99 {p99:g} ms over {figures_ms['n']} samples"
        over = p99 > thresholds.max_p99_ms
        relation = "above" if over else "within"
        latency.append(
            Case(
                name,
                "FAIL" if over else "PASS",
                message=f"{seen}, {relation} --max-p99-ms {thresholds.max_p99_ms:g}",
                detail=f"p50 {figures_ms['p50_ms']} ms, max {figures_ms['max_ms']} ms",
            )
        )
    if all(case.status == "SKIP" for case in latency):
        ways = "; ".join(_HOW_TO_MEASURE.values())
        latency = [
            Case(
                "p99 latency",
                "FAIL",
                message=f"--max-p99-ms {thresholds.max_p99_ms:g} given but no latency was "
                f"measured ({ways})",
            )
        ]
    return cases + latency
