"""The process runner: one event loop (uvloop where it builds), stopped by SIGINT/SIGTERM.

Every long-running command (``xiaozhi edge``, ``hub``, ``up``, ``sim``) runs its main coroutine
through :func:`run_until_signal`, so signals mean the same everywhere: the first asks for a
clean stop (the coroutine sees ``stop`` set and winds down, as uvicorn does), a second one
exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable

__all__ = ["loop_factory", "run_until_signal"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio's default) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return None
    return uvloop.new_event_loop


def run_until_signal(
    main: Callable[[asyncio.Event], Awaitable[int]],
    *,
    on_second_signal: Callable[[], None] | None = None,
) -> int:
    """Run ``main(stop)`` in a new event loop until it returns; its result is the exit status.

    ``stop`` is set by the first SIGINT or SIGTERM; ``main`` must then finish on its own. A
    second signal calls ``on_second_signal`` (to say so) and exits with status 1 at once:
    ``sys.exit`` would wait for every worker thread at interpreter exit (a recogniser still
    sampling its corpus kept ``xiaozhi up`` alive 22 s after "exiting now"). Children that
    must not outlive us are started to die with their parent (the managed broker, the
    speech workers).
    """

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                if on_second_signal is not None:
                    on_second_signal()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            stop.set()

        installed = []
        for sig in _STOP_SIGNALS:
            # Signal handlers exist only in the main thread (a test may run us elsewhere).
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
        try:
            return await main(stop)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
        return loop_runner.run(runner())
