"""Reconnect delays shared by the MQTT owner and the simulated devices."""

from __future__ import annotations

import random

from xiaozhi.backoff import Backoff


def test_backoff_doubles_from_the_seed_delay_with_jitter_and_a_cap() -> None:
    backoff = Backoff(base_seconds=5, max_seconds=60, attempts=10, rng=random.Random(0))
    delays = [backoff.next_delay() for _ in range(10)]
    assert backoff.next_delay() is None
    assert backoff.exhausted
    for attempt, delay in enumerate(delays):
        assert delay is not None
        raw = 5 * 2**attempt
        assert min(60, raw * 0.8) <= delay <= min(60, raw * 1.2)
    assert delays[-1] == 60
    assert len(set(delays[:3])) == 3  # jittered
    backoff.reset()
    assert backoff.next_delay() is not None
    forever = Backoff(attempts=0)
    assert all(forever.next_delay() is not None for _ in range(50))
