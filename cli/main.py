"""`xiaozhi`: the one console script. Each sub-command starts one component.

- `xiaozhi up`: the whole system on one machine (today: the broker; the edge, hub and
  simulated devices join it as they land).
- `xiaozhi bench CASE`: benchmarks; figures printed and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence

from xiaozhi_cli.broker import BrokerStartError, ManagedMosquitto
from xiaozhi_cli.settings import SettingsError, UpSettings, load_settings, parse_mqtt_url

__all__ = ["main"]


def _say(line: str) -> None:
    """One readable line for the person at the terminal (flushed: tests read it live)."""
    print(line, flush=True)


def _check_reachable(url: str, timeout: float = 3.0) -> None:
    host, port = parse_mqtt_url(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise BrokerStartError(f"broker {url} is not reachable: {err}") from err


def _install_stop_handlers() -> asyncio.Event:
    """Set an event on the first SIGINT/SIGTERM; a second one forces the exit (as uvicorn does).

    Installed before anything starts, so a Ctrl-C during start-up still stops cleanly.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def _on_signal() -> None:
        if stop.is_set():
            _say("second signal: exiting now")
            raise SystemExit(1)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal)
    return stop


async def _run_up(settings: UpSettings) -> int:
    stop = _install_stop_handlers()
    broker: ManagedMosquitto | None = None
    if settings.mqtt_url:
        _check_reachable(settings.mqtt_url)
        _say(f"broker    {settings.mqtt_url} (external, XIAOZHI_MQTT_URL)")
    else:
        broker = ManagedMosquitto(
            settings.state_dir / "mosquitto", port=settings.broker_port, host=settings.broker_host
        )
        broker.start()
        _say(f"broker    {broker.url} (managed mosquitto, pid {broker.pid})")
    _say("ready     press Ctrl-C to stop")
    try:
        await stop.wait()
    finally:
        _say("stopping")
        if broker is not None:
            broker.stop()
    _say("stopped")
    return 0


def _cmd_up(_: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        return asyncio.run(_run_up(settings))
    except (SettingsError, BrokerStartError) as err:
        print(f"xiaozhi up: {err}", file=sys.stderr)
        return 2


def _cmd_bench(args: argparse.Namespace) -> int:
    from xiaozhi_bench.runner import run_bench  # the bench pulls in every component

    return run_bench(args.case, seconds=args.seconds, out_dir=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xiaozhi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the whole system on this machine")
    up.set_defaults(func=_cmd_up)

    from xiaozhi_edge.cli import add_edge_parser
    from xiaozhi_hub.cli import add_hub_parser
    from xiaozhi_sim.cli import add_sim_parser

    add_edge_parser(sub)
    add_hub_parser(sub)
    add_sim_parser(sub)

    from xiaozhi_bench.runner import CASES, DEFAULT_RESULTS_DIR

    bench = sub.add_parser("bench", help="run a benchmark; prints a table and writes JSON")
    bench.add_argument("case", choices=sorted(CASES), help="which benchmark")
    bench.add_argument("--seconds", type=float, default=None, help="time budget per figure")
    bench.add_argument(
        "--out", default=str(DEFAULT_RESULTS_DIR), help="results folder (default: %(default)s)"
    )
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
