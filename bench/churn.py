"""`xiaozhi bench churn`: 10,000 connect/disconnect cycles; does anything stay behind?

64 simulated devices (fixed ids, as a fleet that keeps reconnecting) each loop: connect
(firmware handshake), hello, wait for the server's hello, then leave: every other cycle with
a clean close handshake, the rest by dropping the TCP connection without a close frame, as a
device losing power or Wi-Fi would. After a warm-up of 500 cycles (allocator pools, caches and
the broker session fill up once), the server's resident memory, open file descriptors and
asyncio tasks are read, then again half way and after 10,000 more cycles, each time once its
connection count is back to zero. Growth that goes on in the second half is a leak; growth
that stops is the allocator settling. The reference is the same churn against a bare
`websockets` server with the edge's settings (:mod:`xiaozhi_bench.bare_server`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from xiaozhi_bench import procs
from xiaozhi_bench.connections import wait_until
from xiaozhi_bench.loadgen import WsDevice, new_device_id
from xiaozhi_bench.runner import Figure, Report

__all__ = ["CYCLES", "run_churn"]

CYCLES = 10_000
WARM_UP = 500
WORKERS = 64
QUICK_CYCLES, QUICK_WARM_UP, QUICK_WORKERS = 100, 20, 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    rss_kib: int
    fds: int
    tasks: int


@dataclass(frozen=True, slots=True)
class Churn:
    start: Snapshot  # fresh process, before any device
    before: Snapshot  # after the warm-up
    middle: Snapshot  # after half the cycles: growth that goes on in the second half leaks
    after: Snapshot  # after the cycles
    seconds: float
    failures: int


async def _cycles(port: int, cycles: int, workers: int) -> int:
    """Run `cycles` connect/hello/leave cycles on `workers` devices; return failures."""
    done = 0
    failures = 0
    ids = [new_device_id() for _ in range(workers)]

    async def worker(device_id: str) -> None:
        nonlocal done, failures
        while done < cycles:
            clean = done % 2 == 0
            done += 1
            try:
                device = await WsDevice.connect(procs.HOST, port, device_id=device_id)
                await device.hello()
            except (OSError, TimeoutError):
                failures += 1
                continue
            if clean:
                await device.close()
            else:
                device.abort()

    async with asyncio.TaskGroup() as group:
        for device_id in ids:
            group.create_task(worker(device_id))
    return failures


async def _snapshot(child: procs.Child, connections: str, settle: float) -> Snapshot:
    async def _idle() -> bool:
        return bool((await child.stats())[connections] == 0)

    await wait_until(_idle, 30, f"{child.name} to drop every connection")
    await asyncio.sleep(settle)  # let closing tasks finish and the broker queue drain
    stats = await child.stats()
    return Snapshot(child.rss_kib(), child.fd_count(), int(stats["tasks"]))


async def _churn(child: procs.Child, connections: str, counts: tuple[int, int, int]) -> Churn:
    cycles, warm_up, workers = counts
    settle = 1.0 if cycles >= CYCLES else 0.2
    start = await _snapshot(child, connections, settle)
    failures = await _cycles(child.port, warm_up, workers)
    before = await _snapshot(child, connections, settle)
    started = time.perf_counter()
    failures += await _cycles(child.port, cycles // 2, workers)
    seconds = time.perf_counter() - started
    middle = await _snapshot(child, connections, settle)
    started = time.perf_counter()
    failures += await _cycles(child.port, cycles - cycles // 2, workers)
    seconds += time.perf_counter() - started
    after = await _snapshot(child, connections, settle)
    return Churn(start, before, middle, after, seconds, failures)


async def _run(counts: tuple[int, int, int], workdir: Path) -> tuple[Churn, Churn]:
    procs.raise_nofile()
    async with procs.broker(workdir) as mosquitto, procs.edge(workdir, mosquitto.url) as edge:
        ours = await _churn(edge, "connections", counts)
        edge.kill()  # measured
    async with procs.bare_server(workdir) as bare:
        reference = await _churn(bare, "connections", counts)
    return ours, reference


def run_churn(seconds: float, *, quick: bool = False) -> Report:
    """10,000 cycles (100 with `quick`); `seconds` is unused: this case counts cycles."""
    report = Report(case="churn")
    report.notes.append(f"load average at start: {procs.load_average()}")
    counts = (QUICK_CYCLES, QUICK_WARM_UP, QUICK_WORKERS) if quick else (CYCLES, WARM_UP, WORKERS)
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        ours, bare = uvloop.run(_run(counts, Path(tmp)))
    cycles = counts[0]
    rows = (
        ("RSS growth", "KiB", lambda s: s.rss_kib),
        ("file descriptor growth", "fds", lambda s: s.fds),
        ("asyncio task growth", "tasks", lambda s: s.tasks),
    )
    for name, unit, read in rows:
        report.figures.append(
            Figure(
                f"{name} over {cycles:,} cycles",
                read(ours.after) - read(ours.before),
                unit,
                reference=read(bare.after) - read(bare.before),
                reference_name="bare websockets",
                target="no growth",
            )
        )
    report.figures.insert(
        1,
        Figure(
            f"RSS growth, second {cycles - cycles // 2:,} cycles",
            ours.after.rss_kib - ours.middle.rss_kib,
            "KiB",
            reference=bare.after.rss_kib - bare.middle.rss_kib,
            reference_name="bare websockets",
            target="no growth",
        ),
    )
    report.figures.append(
        Figure(
            "cycles/s",
            cycles / ours.seconds,
            "cycles/s",
            reference=cycles / bare.seconds,
            reference_name="bare websockets",
        )
    )
    for label, churn in (("edge", ours), ("bare", bare)):
        snaps = (
            ("start", churn.start),
            ("after warm-up", churn.before),
            ("half way", churn.middle),
            ("after", churn.after),
        )
        report.notes.append(
            f"{label}: "
            + "; ".join(
                f"{when} RSS {s.rss_kib / 1024:.1f} MiB, {s.fds} fds, {s.tasks} tasks"
                for when, s in snaps
            )
            + f"; {churn.failures} failed cycles"
        )
    report.notes.append(
        f"{counts[2]} device ids reused, {counts[1]} warm-up cycles; every other cycle "
        "closes cleanly, the others drop TCP"
    )
    report.notes.append(f"load average at end: {procs.load_average()}")
    return report
