"""Waiting for a condition without sleeping: re-check it each time something changes.

Whoever changes state calls :meth:`Notifier.notify`; whoever waits calls
:meth:`Notifier.wait_until` with a predicate and a time budget. This is how devices, the
integrator and the tests wait for "the expected message" (style.md: never sleep as
synchronisation).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Notifier"]


class Notifier:
    """Wakes every waiter on :meth:`notify`; create it inside the running event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        """Something changed: every waiter re-checks its predicate."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait up to ``within`` seconds until ``predicate()`` holds; False if it never did."""
        deadline = self.loop.time() + within
        while not predicate():
            left = deadline - self.loop.time()
            if left <= 0:
                return False
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                return predicate()
        return True
