"""Reconnect delays: capped exponential back-off with jitter, for every client we run.

The hub's and edge's broker connection (``xiaozhi_runtime.mqtt``) and the simulated devices
(WebSocket and MQTT) all wait between attempts through :class:`Backoff`. Pure: it returns
delays; the caller sleeps.

Seed 003's client retries every 5 s, at most 10 times; the firmware's OTA check doubles from
10 s (reference section 3.1) and its MQTT client waits 60 s between tries (reference 2.2). We
take the seed's first delay and attempt count (both settings), double per attempt up to a cap,
and spread each delay by +/- ``jitter`` so a fleet that lost its broker does not come back in
one thundering herd.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """Delays for one connection's reconnect attempts; :meth:`reset` after a success.

    Args:
        base_seconds: the first delay (seed 003: 5 s).
        max_seconds: the cap, jitter included.
        attempts: how many delays are given before :meth:`next_delay` returns ``None``;
            0 means never give up.
        jitter: relative spread, 0.2 = +/- 20 %.
        rng: the random source (seeded for repeatable runs).
    """

    base_seconds: float = 5.0
    max_seconds: float = 60.0
    attempts: int = 10
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float | None:
        """The delay before the next attempt, or ``None`` once the attempts are used up."""
        if self.attempts and self.attempt >= self.attempts:
            return None
        raw = self.base_seconds * (2.0 ** min(self.attempt, 30))
        self.attempt += 1
        spread = 1.0 + self.rng.uniform(-self.jitter, self.jitter)
        return min(self.max_seconds, raw * spread)

    def reset(self) -> None:
        """Connected again: the next failure starts from the first delay."""
        self.attempt = 0

    @property
    def exhausted(self) -> bool:
        return bool(self.attempts) and self.attempt >= self.attempts
