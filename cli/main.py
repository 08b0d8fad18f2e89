"""`xiaozhi`: the one console script. Each sub-command starts one component.

- `xiaozhi up`: the whole system on one machine: a managed Mosquitto (or XIAOZHI_MQTT_URL),
  the hub, one edge, and three simulated devices, with a line per voice command.
- `xiaozhi edge`, `xiaozhi hub`, `xiaozhi sim ...`: one component each.
- `xiaozhi watch`: the fleet and its events, live, from the hub's stream.
- `xiaozhi bench CASE`: benchmarks; figures printed, written as JSON and drawn as PNG under
  the state folder (`--out` to choose).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xiaozhi import __version__
from xiaozhi.config import parse_mqtt_url, redact_mqtt_url
from xiaozhi.errors import XiaozhiError
from xiaozhi_cli.broker import BrokerStartError, ManagedMosquitto
from xiaozhi_cli.settings import UpSettings, load_settings
from xiaozhi_runtime.logs import configure_logging
from xiaozhi_runtime.runner import run_until_signal
from xiaozhi_runtime.secrets_file import read_or_create_secret

if TYPE_CHECKING:
    from xiaozhi_edge.server import EdgeServer
    from xiaozhi_hub.http import RunningHub

__all__ = ["main"]


def _say(line: str) -> None:
    """One readable line for the person at the terminal (flushed: tests read it live)."""
    print(line, flush=True)


def _check_reachable(url: str, timeout: float = 3.0) -> None:
    host, port = parse_mqtt_url(url)[:2]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise BrokerStartError(f"broker {url} is not reachable: {err}") from err


def _api_key(settings: UpSettings) -> str:
    """XIAOZHI_API_KEYS when set, else a key generated once and kept in the state dir."""
    if os.environ.get("XIAOZHI_API_KEYS"):
        return os.environ["XIAOZHI_API_KEYS"]
    return read_or_create_secret(settings.state_dir / "api_key", nbytes=24)


def _watch_command(
    hub_url: str, state_dir: Path, *, api_keys: str | None, self_signed: Path | None
) -> str:
    """``xiaozhi watch`` as it works pasted anywhere: in another directory, another
    terminal, with ``up``'s state dir not the default one. ``watch`` reads the key from
    ``XIAOZHI_STATE_DIR`` (absolute here), or, when ``up`` was given XIAOZHI_API_KEYS (no
    key file then), from XIAOZHI_API_KEY: the key the banner prints already. A hub serving
    https with a certificate it made itself is trusted through ``SSL_CERT_FILE`` (Python's
    ``ssl`` reads it)."""
    if api_keys:
        words = [f"XIAOZHI_API_KEY={shlex.quote(api_keys.split(',')[0].split(':')[0].strip())}"]
    else:
        words = [f"XIAOZHI_STATE_DIR={shlex.quote(str(state_dir.resolve()))}"]
    if self_signed is not None:
        words.append(f"SSL_CERT_FILE={shlex.quote(str(self_signed.resolve()))}")
    return " ".join([*words, "xiaozhi watch --url", hub_url])


def _say_how_to_watch(hub: RunningHub, broker_url: str, settings: UpSettings) -> None:
    """The two ways to watch: the hub's stream, and the topic tree itself."""
    command = _watch_command(
        hub.url,
        settings.state_dir,
        api_keys=os.environ.get("XIAOZHI_API_KEYS"),
        self_signed=hub.tls.cert_file if hub.tls is not None and hub.tls.names else None,
    )
    _say(f"live      {command} (the fleet and its events, live)")
    _say("watch     mosquitto_sub -v -t 'xiaozhi/#' " + f"-p {broker_url.rsplit(':', 1)[-1]}")


def _edge_ports(edge: EdgeServer) -> dict[str, int]:
    """The edge's bound device ports, for the setup endpoint; the MQTT + UDP ones printed."""
    ports = {"edge_port": edge.port}
    if edge.mqtt_udp is not None:  # XIAOZHI_DEVICE_MQTT_PORT: firmware's MQTT + UDP
        mqtt_port, udp_port = edge.mqtt_udp.mqtt_port, edge.mqtt_udp.udp_port
        _say(f"edge      mqtt://127.0.0.1:{mqtt_port} (firmware MQTT), udp port {udp_port}")
        ports["edge_mqtt_port"] = mqtt_port
    return ports


async def _run_up(settings: UpSettings, stop: asyncio.Event) -> int:
    """Broker, console, edge, hub and demo devices, in that order; stopped in reverse.

    ``stop`` is watched from before anything starts, so a Ctrl-C during start-up still stops
    cleanly.
    """
    from xiaozhi.tokens import public_key_text
    from xiaozhi.topics import TopicTree
    from xiaozhi_cli.console import Console
    from xiaozhi_edge.server import EdgeServer
    from xiaozhi_edge.settings import load_edge_settings
    from xiaozhi_hub.activations import DeviceApproval
    from xiaozhi_hub.http import run_hub
    from xiaozhi_hub.settings import load_hub_settings, resolve_device_token_key
    from xiaozhi_sim.fleet import demo_fleet
    from xiaozhi_sim.settings import SimSettings

    async with contextlib.AsyncExitStack() as stack:
        if settings.mqtt_url:
            _check_reachable(settings.mqtt_url)
            url = settings.mqtt_url
            _say(f"broker    {redact_mqtt_url(url)} (external, XIAOZHI_MQTT_URL)")
        else:
            broker = ManagedMosquitto(
                settings.state_dir / "mosquitto",
                port=settings.broker_port,
                host=settings.broker_host,
            )
            broker.start()
            stack.callback(broker.stop)
            url = broker.url
            _say(f"broker    {redact_mqtt_url(url)} (managed mosquitto, pid {broker.pid})")

        api_key = _api_key(settings)
        # `up` is for trying things out: every device that runs setup is approved at once
        # unless XIAOZHI_DEVICE_APPROVAL says otherwise (the hub logs a warning), so the
        # simulated devices and a real board pointed here work without an operator.
        approval = {} if "XIAOZHI_DEVICE_APPROVAL" in os.environ else {"device_approval": "auto"}
        hub_settings = load_hub_settings(**approval).model_copy(
            update={
                "mqtt_url": url,
                "state_dir": settings.state_dir,
                "api_keys": api_key,
                "demo_bindings": settings.with_demo_bindings,
            }
        )
        if hub_settings.config is None and not settings.with_demo_bindings:
            _say("home      demo, every entity virtual (XIAOZHI_DEMO_BINDINGS=true binds them)")
        # The edge gets the public half of the hub's device token key only: it can check a
        # token, never mint one. Open device auth unless asked otherwise (a warning is logged).
        public_key = public_key_text(resolve_device_token_key(hub_settings))
        auth = {} if "XIAOZHI_DEVICE_AUTH" in os.environ else {"device_auth": "open"}
        edge_settings = load_edge_settings(
            mqtt_url=url,
            state_dir=settings.state_dir,
            device_token_public_key=public_key,
            **auth,
        )
        # The console first, so it is stopped after the edge and hub: it still shows the
        # devices' disconnects and the components going offline.
        console = Console(url, say=_say, topics=TopicTree(base=hub_settings.base_topic))
        await console.start()
        stack.push_async_callback(console.stop)

        edge = EdgeServer(edge_settings)
        await edge.start()
        stack.push_async_callback(edge.stop)
        ws_url = f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/"
        _say(f"edge      {ws_url} (devices), http://127.0.0.1:{edge.port}/stats")

        # the setup endpoint hands devices the edge's real port
        hub_settings = hub_settings.model_copy(update=_edge_ports(edge))
        hub = await stack.enter_async_context(run_hub(hub_settings))
        hub_url = _say_hub(hub, api_key)
        _say(f"setup     {hub_url}/xiaozhi/ota/ (point a real device's OTA URL here)")
        if hub_settings.device_approval is DeviceApproval.AUTO:
            _say("approval  auto: every device that runs setup is approved (a lab setting)")
        else:
            _say(
                f"approval  manual: curl -X POST -H 'X-API-Key: {api_key}' -d "
                f'\'{{"code":"123456"}}\' {hub_url}/api/v1/activations/approve'
            )

        if settings.with_demo_devices:
            sim_settings = SimSettings(
                mqtt_url=url, sim_ws_url=ws_url, sim_ota_url=f"{hub_url}/xiaozhi/ota/"
            )
            fleet = demo_fleet(sim_settings, say_every=settings.demo_say_every_seconds)
            await fleet.start()
            stack.push_async_callback(fleet.stop)
            _say(
                f"devices   {len(fleet.devices)} simulated (WS v1, WS v3, MQTT), each speaking "
                f"every {settings.demo_say_every_seconds:g} s"
            )
        else:
            _say("devices   no simulated ones (XIAOZHI_DEMO_DEVICES=true starts three)")
        _say_how_to_watch(hub, url, settings)
        _say("ready     press Ctrl-C to stop")
        await stop.wait()
        _say("stopping")
    _say("stopped")
    return 0


def _say_hub(hub: RunningHub, api_key: str) -> str:
    """Say where the hub is (and what it serves https with); returns its URL."""
    from xiaozhi_hub.cli import describe_certificate

    _say(f"hub       {hub.url}/ (dashboard), {hub.url}/api/v1/ (REST, X-API-Key: {api_key})")
    if hub.tls is not None:
        _say(f"hub       {describe_certificate(hub.tls)}")
    return hub.url


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        if args.verbose:
            configure_logging(level=settings.log_level)
        else:
            log_file = settings.state_dir / "logs" / "xiaozhi.log"
            configure_logging(level=settings.log_level, file=log_file)
            _say(f"logs      {log_file} (xiaozhi up --verbose shows them here)")
        return run_until_signal(
            lambda stop: _run_up(settings, stop),
            on_second_signal=lambda: _say("second signal: exiting now"),
        )
    except (XiaozhiError, OSError) as err:
        # Every component's settings, home-file and start-up errors; OSError a taken port
        print(f"xiaozhi up: {err}", file=sys.stderr)
        return 2


def _cmd_bench(args: argparse.Namespace) -> int:
    from xiaozhi_bench.runner import run_bench  # the bench pulls in every component

    return run_bench(args.case, seconds=args.seconds, out_dir=args.out, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xiaozhi", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xiaozhi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the whole system on this machine")
    up.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the components' log lines here too (default: only to <state>/logs)",
    )
    up.set_defaults(func=_cmd_up)

    from xiaozhi_edge.cli import add_edge_parser
    from xiaozhi_hub.cli import add_hub_parser
    from xiaozhi_hub.speech_cli import add_speech_parser
    from xiaozhi_sim.cli import add_sim_parser

    add_edge_parser(sub)
    add_hub_parser(sub)
    add_speech_parser(sub)
    add_sim_parser(sub)

    from xiaozhi_cli.watch import add_watch_parser

    add_watch_parser(sub)

    from xiaozhi_bench.runner import CASES, default_results_dir

    bench = sub.add_parser(
        "bench", help="run a benchmark; prints a table, writes JSON and draws a PNG"
    )
    bench.add_argument("case", choices=sorted(CASES), help="which benchmark")
    bench.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="time per figure (codecs) or per measured phase (system cases)",
    )
    bench.add_argument(
        "--out",
        default=str(default_results_dir(os.environ)),
        help="results folder (default: %(default)s; $XIAOZHI_STATE_DIR/bench when that is "
        "set, else $XDG_STATE_HOME/xiaozhi/bench)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="tiny counts: check that a system case works"
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
