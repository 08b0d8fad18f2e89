"""`xiaozhi bench connections`: idle devices held by one edge process, beside bare websockets.

Devices connect (firmware handshake, hello, one heartbeat) in steps to 1,000, 5,000 and
10,000, at most 64 handshakes at a time, then stay idle with a heartbeat (`ping`, seed 003)
every 30 s. After each step the server is held for `seconds` and its resident memory read
from ``/proc/<pid>/status``: memory per connection = (RSS at N - RSS at 0) / N. The same steps
run against the reference, a bare `websockets` server with the edge's settings
(:mod:`xiaozhi_bench.bare_server`). Both servers are their own processes; the devices live in
this one (:mod:`xiaozhi_bench.loadgen`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvloop

from xiaozhi_bench import procs
from xiaozhi_bench.loadgen import WsDevice, connect_devices
from xiaozhi_bench.runner import Figure, Report

__all__ = ["HEARTBEAT_SECONDS", "LEVELS", "run_connections", "wait_until"]

LEVELS = (1_000, 5_000, 10_000)
QUICK_LEVELS = (20, 50)
HEARTBEAT_SECONDS = 30.0
TARGET_KIB = 20  # issue 14 (issue 6 asked for 25)
TARGET_CONNECT_RATIO = 0.8  # of bare websockets' connect rate, issue 14


@dataclass(frozen=True, slots=True)
class Level:
    connections: int
    rss_kib: int
    connect_seconds: float  # for the connections added in this step
    added: int

    def per_connection_kib(self, rss_at_zero: int) -> float:
        return (self.rss_kib - rss_at_zero) / self.connections

    @property
    def rate(self) -> float:
        return self.added / self.connect_seconds


async def wait_until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll `check` every 50 ms; raise after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise procs.BenchProcessError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def heartbeat(uptime: int) -> bytes:
    """A seed 003 heartbeat with telemetry."""
    return (
        b'{"type":"ping","data":{"uptime":%d,"memory_usage":41,"cpu_usage":12,'
        b'"wifi_signal":-52,"free_heap":123456}}' % uptime
    )


async def heartbeats(devices: list[WsDevice], interval: float) -> None:
    """Every `interval` seconds, each device sends a heartbeat, spread evenly over the round
    (a device's first one goes out when it connects)."""
    loop = asyncio.get_running_loop()
    round_start = loop.time() + interval
    while True:
        await asyncio.sleep(max(0.0, round_start - loop.time()))
        count = len(devices)  # devices joining during a round wait for the next one
        gap = interval / max(count, 1)
        for index in range(count):
            delay = round_start + index * gap - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            devices[index].send_text(heartbeat(int(loop.time())))
        round_start += interval


async def _hold_levels(
    child: procs.Child, levels: tuple[int, ...], hold: float, *, connected: str
) -> tuple[int, list[Level]]:
    """Connect up to each level, hold, read RSS; return (RSS at 0, one Level per step)."""
    await asyncio.sleep(hold)
    rss_at_zero = child.rss_kib()
    devices: list[WsDevice] = []
    beating = asyncio.create_task(heartbeats(devices, HEARTBEAT_SECONDS))
    results = []
    try:
        for level in levels:
            added = level - len(devices)
            started = time.perf_counter()
            new = await connect_devices(procs.HOST, child.port, added)
            seconds = time.perf_counter() - started
            for device in new:  # the first heartbeat right after hello
                device.send_text(heartbeat(0))
            devices.extend(new)

            async def _all_in(level: int = level) -> bool:
                stats = await child.stats()
                return bool(stats[connected] >= level)

            await wait_until(_all_in, 30, f"{level} connections on {child.name}")
            await asyncio.sleep(hold)
            child.check_alive()
            results.append(Level(level, child.rss_kib(), seconds, added))
    finally:
        beating.cancel()
        child.kill()  # measured; a graceful stop would first publish every disconnect
        for device in devices:
            device.abort()
    return rss_at_zero, results


async def _run(hold: float, levels: tuple[int, ...], workdir: Path, report: Report) -> None:
    nofile = procs.raise_nofile()
    needed = max(levels) + 1_000
    if nofile < needed:
        raise procs.BenchProcessError(f"open-file limit {nofile} < {needed} needed")
    started = time.perf_counter()
    async with (
        procs.broker(workdir) as mosquitto,
        procs.edge(workdir, mosquitto.url) as edge_child,
    ):
        edge_limit = procs.nofile_limit(edge_child.pid)
        edge_zero, edge_levels = await _hold_levels(edge_child, levels, hold, connected="devices")
    edge_seconds = time.perf_counter() - started
    async with procs.bare_server(workdir) as bare_child:
        bare_zero, bare_levels = await _hold_levels(
            bare_child, levels, hold, connected="connections"
        )
    bare_seconds = time.perf_counter() - started - edge_seconds
    for ours, bare in zip(edge_levels, bare_levels, strict=True):
        n = ours.connections
        last = n == max(levels)
        report.figures.append(
            Figure(
                f"RSS per connection at {n:,}",
                ours.per_connection_kib(edge_zero),
                "KiB",
                reference=bare.per_connection_kib(bare_zero),
                reference_name="bare websockets",
                target=f"<= {TARGET_KIB} KiB at 10,000" if last else "",
            )
        )
    for ours, bare in zip(edge_levels, bare_levels, strict=True):
        last = ours.connections == max(levels)
        report.figures.append(
            Figure(
                f"connect rate to {ours.connections:,}",
                ours.rate,
                "conn/s",
                reference=bare.rate,
                reference_name="bare websockets",
                target=f">= {TARGET_CONNECT_RATIO} x bare" if last else "",
            )
        )
    report.figures.append(
        Figure(
            "connections held",
            edge_levels[-1].connections,
            "conn",
            reference=bare_levels[-1].connections,
            reference_name="bare websockets",
            target="10,000 per edge process",
        )
    )
    rss = ", ".join(f"{lv.connections:,}: {lv.rss_kib / 1024:.1f}" for lv in edge_levels)
    bare_rss = ", ".join(f"{lv.connections:,}: {lv.rss_kib / 1024:.1f}" for lv in bare_levels)
    report.notes += [
        f"edge RSS MiB at 0: {edge_zero / 1024:.1f}, {rss}",
        f"bare RSS MiB at 0: {bare_zero / 1024:.1f}, {bare_rss}",
        f"each device: handshake, hello, a heartbeat at once and every {HEARTBEAT_SECONDS:.0f} s;"
        f" each level held {hold:g} s before RSS is read; 64 handshakes in flight at most",
        f"open-file limit: bench {procs.raise_nofile()}, edge {edge_limit}",
        f"wall time: edge part {edge_seconds:.1f} s, bare part {bare_seconds:.1f} s",
    ]


def run_connections(seconds: float, *, quick: bool = False) -> Report:
    """Hold each level for `seconds` before reading memory."""
    report = Report(case="connections")
    levels = QUICK_LEVELS if quick else LEVELS
    report.notes.append(f"load average at start: {procs.load_average()}")
    with tempfile.TemporaryDirectory(prefix="xiaozhi-bench-") as tmp:
        uvloop.run(_run(seconds, levels, Path(tmp), report))
    report.notes.append(f"load average at end: {procs.load_average()}")
    return report
