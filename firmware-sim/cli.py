"""``xiaozhi sim``: one device, a fleet, or a QA scenario.

:func:`add_sim_parser` registers ``sim`` and its sub-commands on the ``xiaozhi`` parser; each
sets ``func`` to a function taking the parsed arguments and returning the exit code, as the
other ``xiaozhi`` sub-commands do. ``python -m xiaozhi_sim ...`` runs the same commands.

Output: one readable line per fact on stdout (flushed, so a test or a pipe reads it live);
logs (structlog) on stderr, quiet unless ``-v``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

import structlog

from xiaozhi.config import redact_mqtt_url
from xiaozhi.messages import ListenMode
from xiaozhi.payloads import DeviceKind
from xiaozhi_runtime.runner import run_until_signal
from xiaozhi_sim.device import ChannelError, FaultNotApplicable, Received, SimulatedDevice
from xiaozhi_sim.fleet import (
    DEMO_PHRASES,
    DeviceSpec,
    Fleet,
    TransportChoice,
    build_device,
    fleet_specs,
)
from xiaozhi_sim.mic_and_speaker import AudioFormatError
from xiaozhi_sim.mqtt_udp_device import MqttUdpDevice
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.report import Case, RunReport, write_reports
from xiaozhi_sim.scenario import (
    EXIT_INVALID,
    Scenario,
    ScenarioError,
    load_scenario,
    run_scenario,
)
from xiaozhi_sim.settings import SimSettings, SimSettingsError, load_sim_settings
from xiaozhi_sim.stats import SimStats
from xiaozhi_sim.thresholds import FleetThresholds, MinConnected, fleet_cases
from xiaozhi_sim.ws_device import WsDevice

__all__ = ["add_sim_parser", "broker_hint", "cmd_device", "cmd_fleet", "cmd_scenario", "main"]

_SHOWN_TYPES = frozenset({"stt", "tts", "llm", "response", "alert", "system", "error", "mcp"})


def _say(line: str) -> None:
    print(line, flush=True)


def _configure_logging(verbose: int, default: int) -> None:
    """structlog to stderr: ``default`` level, INFO with -v, DEBUG with -vv."""
    level = default if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # sys.stderr is looked up per logger, not bound now: whoever replaced it since
        # (a test's capture, a daemon's redirect) gets the lines.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        cache_logger_on_first_use=False,
    )


def _settings(args: argparse.Namespace) -> SimSettings:
    return load_sim_settings(
        mqtt_url=args.mqtt_url,
        sim_ws_url=args.ws_url,
        sim_ota_url=args.ota_url,
        sim_token=args.token,
        sim_seed=args.seed,
        sim_heartbeat_interval_seconds=getattr(args, "heartbeat", None),
    )


def _stdin_lines(queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines to the loop from a daemon thread (epoll cannot watch regular files)."""
    loop = asyncio.get_running_loop()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="sim-stdin", daemon=True).start()


# -- xiaozhi sim device ------------------------------------------------------------------


def _show_received(received: Received) -> None:
    payload = received.payload
    if received.kind == "command":
        _say(f"command   {payload.get('command')} {payload.get('parameters', {})}")
    elif received.kind == "message" and payload.get("type") in _SHOWN_TYPES:
        text = payload.get("text") or payload.get("state") or payload.get("message") or ""
        _say(f"received  {payload.get('type')} {text}".rstrip())
    elif received.kind in ("error", "fault"):
        _say(f"{received.kind:<9} {payload}")


async def _device_command(device: SimulatedDevice, line: str, voice: str = "espeak") -> bool:
    """Run one interactive line; False on ``quit``."""
    try:
        words = shlex.split(line)
    except ValueError as err:
        _say(f"error     {err}")
        return True
    if not words:
        return True
    verb, rest = words[0], " ".join(words[1:])
    try:
        match verb:
            case "say" if rest:
                await _say_text(device, rest, voice)
            case "type" if rest:
                await device.say(rest)
                _say(f"typed     {rest!r}")
            case "speak" if rest:
                frames = await device.speak(rest)
                _say(f"spoke     {rest} ({frames} frames)")
            case "wake" if isinstance(device, WsDevice):
                await device.wake()
                _say(f"channel   open (session {device.session.session_id})")
            case "status":
                _say(f"status    {device.model.serial_status(device.now())}")
            case "reboot":
                await device.reboot()
                _say("rebooted")
            case "quit" | "exit":
                return False
            case _:
                _say(
                    "commands  say TEXT | type TEXT | speak FILE.wav | wake | status | reboot"
                    " | quit"
                )
    except (ChannelError, FaultNotApplicable, AudioFormatError, OSError) as err:
        _say(f"error     {err}")
    return True


async def _say_text(device: SimulatedDevice, text: str, voice: str) -> None:
    """A firmware device says ``text`` aloud (synthesized, real Opus); others send text."""
    if isinstance(device, WsDevice) and device.flavour is DeviceKind.FIRMWARE:
        frames = await device.say_aloud(text, voice=voice)
        _say(f"said      {text!r} aloud ({frames} frames, {voice})")
    else:
        await device.say(text)
        _say(f"said      {text!r}")


async def _run_device(args: argparse.Namespace, settings: SimSettings, stop: asyncio.Event) -> int:
    paho = PahoAsyncio() if args.transport in ("mqtt", "mqtt-udp") else None
    spec = DeviceSpec(
        transport=args.transport,
        binary_version=args.binary_version,
        flavour=DeviceKind(args.flavour),
        mode=ListenMode(args.mode) if args.mode else None,
        groups=tuple(args.group),
        name=args.name,
        device_id=args.device_id,
    )
    device = build_device(
        spec,
        settings,
        index=0,
        stats=SimStats(),
        paho=paho,
        http=None,
        decode_audio=True,
        record_path=Path(args.record_tts) if args.record_tts else None,
    )
    device.on_record = _show_received
    ident = device.identity
    _say(
        f"device    {ident.device_id} (mac {ident.mac}, {args.transport}, "
        f"board {ident.board}, fw {ident.firmware_version})"
    )
    try:
        await device.start()
        if args.serial:
            _say(f"serial    {device.open_serial()}")
        mqtt_setup = device.mqtt_setup if isinstance(device, MqttUdpDevice) else None
        if isinstance(device, MqttUdpDevice) and mqtt_setup is not None:
            # Firmware in MQTT + UDP mode: the setup answer's mqtt block is what it uses.
            _say(
                f"setup     {device.setup.source}: mqtt {mqtt_setup.host}:{mqtt_setup.port} "
                f"(client id {mqtt_setup.client_id}), audio over UDP"
            )
        elif isinstance(device, WsDevice):
            _say(
                f"setup     {device.setup.source}: {device.setup.ws_url} "
                f"v{device.version}" + (f" ({device.setup.error})" if device.setup.error else "")
            )
            if args.wake:
                await device.wake()
                _say(f"channel   open (session {device.session.session_id})")
        elif await device.wait_connected(args.connect_timeout):
            _say(f"connected {redact_mqtt_url(settings.mqtt_url)}")
        else:
            broker = redact_mqtt_url(settings.mqtt_url)
            _say(f"waiting   {broker} unreachable; retrying with back-off")
        for text in args.say:
            await _say_text(device, text, args.voice)
        for text in args.type:
            await device.say(text)
            _say(f"typed     {text!r}")
        for wav in args.speak:
            frames = await device.speak(wav)
            _say(f"spoke     {wav} ({frames} frames)")
        _say("ready     type say TEXT, type TEXT, speak FILE.wav, status, quit (Ctrl-C stops)")
        await _device_loop(args, device, stop)
    except (ChannelError, FaultNotApplicable, AudioFormatError) as err:
        _say(f"error     {err}")
        return 1
    finally:
        await device.stop()
        if paho is not None:
            await paho.close()
        _say("stopped")
    return 0


async def _device_loop(
    args: argparse.Namespace, device: SimulatedDevice, stop: asyncio.Event
) -> None:
    """Until ``stop``, ``--duration`` or ``quit``: stdin commands and ``--say-every``."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    if not args.no_stdin:
        _stdin_lines(lines)
    end = None if args.duration is None else loop.time() + args.duration
    next_say = None if not args.say_every else loop.time() + args.say_every
    phrase = 0
    while not stop.is_set():
        deadlines = [d for d in (end, next_say) if d is not None]
        wait = (min(deadlines) - loop.time()) if deadlines else None
        getter = loop.create_task(lines.get())
        stopper = loop.create_task(stop.wait())
        done, _ = await asyncio.wait(
            {getter, stopper},
            timeout=None if wait is None else max(0.0, wait),
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in (getter, stopper):
            if task not in done:
                task.cancel()
        if getter in done:
            line = getter.result()
            if line is None:
                args.no_stdin = True  # EOF: keep running on --duration / Ctrl-C
            elif not await _device_command(device, line, args.voice):
                return
        now = loop.time()
        if end is not None and now >= end:
            return
        if next_say is not None and now >= next_say:
            phrases = args.say_every_text or DEMO_PHRASES
            text = phrases[phrase % len(phrases)]
            phrase += 1
            try:
                await device.say(text)
                _say(f"said      {text!r}")
            except ChannelError as err:
                _say(f"error     {err}")
            next_say = now + args.say_every


def cmd_device(args: argparse.Namespace) -> int:
    """``xiaozhi sim device``: one device until Ctrl-C, ``--duration`` or ``quit``."""
    _configure_logging(args.verbose, logging.WARNING)
    try:
        settings = _settings(args)
    except SimSettingsError as err:
        print(f"xiaozhi sim device: {err}", file=sys.stderr)
        return 2
    return run_until_signal(lambda stop: _run_device(args, settings, stop))


# -- xiaozhi sim fleet -------------------------------------------------------------------


async def _run_fleet(args: argparse.Namespace, settings: SimSettings, stop: asyncio.Event) -> int:
    started_at, loop = _utc_now(), asyncio.get_running_loop()
    began = loop.time()
    specs = fleet_specs(
        args.devices,
        args.transport,
        binary_version=args.binary_version,
        groups=args.group,
        flavour=DeviceKind(args.flavour),
    )
    fleet = Fleet(
        settings,
        specs,
        say_every=args.say_every,
        wake_on_start=not args.no_wake,
        ramp_per_second=args.ramp,
        probe_rate=args.probe_rate,
        heartbeat_interval=args.heartbeat,
    )
    broker = redact_mqtt_url(settings.mqtt_url)
    size = f"{args.devices} devices ({args.transport})"
    _say(f"fleet     {size}, broker {broker}, ws {settings.sim_ws_url}")
    if (
        any(spec.transport == "mqtt" for spec in specs)
        and "mqtt_url" not in settings.model_fields_set
    ):
        _say(f"broker    {broker}: {_BROKER_UNSET}")
    live = sys.stdout.isatty()

    def show(line: str) -> None:
        if live:
            print(f"\r{line}\x1b[K", end="", flush=True)
        else:
            _say(line)

    try:
        await fleet.start()
        waiter = loop.create_task(fleet.wait_connected(args.connect_timeout))
        while not waiter.done() and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.interval):
                    await asyncio.shield(waiter)
            if not waiter.done():
                show(fleet.summary_line())
        all_up = waiter.done() and waiter.result()
        if not waiter.done():
            waiter.cancel()
        connect_seconds = loop.time() - began
        connected_after_connect = fleet.connected
        show(fleet.summary_line())
        if live:
            print(flush=True)
        _say(
            f"connected {connected_after_connect}/{fleet.expected} expected"
            + ("" if all_up else f" (not all within {args.connect_timeout:g} s)")
        )
        if not stop.is_set() and args.duration != 0:
            await fleet.run(duration=args.duration, show=show, interval=args.interval, stop=stop)
            if live:
                print(flush=True)
        connected_at_end = fleet.connected
    finally:
        await fleet.stop()
    _say("report")
    for line in fleet.report():
        _say(f"  {line}")
    thresholds = FleetThresholds(args.min_connected, args.max_p99_ms)
    cases = fleet_cases(
        fleet.stats,
        expected=fleet.expected,
        connected_after_connect=connected_after_connect,
        connected_at_end=connected_at_end,
        connect_seconds=connect_seconds,
        thresholds=thresholds,
    )
    failed = [case for case in cases if case.status == "FAIL"]
    for case in cases:
        _say(f"check     {case.status:<4}  {case.name}: {case.message}".rstrip(": "))
    report = RunReport(
        "fleet",
        size,
        started_at,
        loop.time() - began,
        1 if failed else 0,
        cases,
        {
            "devices": args.devices,
            "transport": args.transport,
            "broker": broker,
            "thresholds": thresholds.as_dict(),
            "expected": fleet.expected,
            "stats": fleet.stats.as_dict(),
        },
    )
    return _write_reports(args, report)


def cmd_fleet(args: argparse.Namespace) -> int:
    """``xiaozhi sim fleet``: N devices in one process; exit 1 if a threshold is missed."""
    _configure_logging(args.verbose, logging.ERROR)
    try:
        settings = _settings(args)
    except SimSettingsError as err:
        print(f"xiaozhi sim fleet: {err}", file=sys.stderr)
        return _write_reports(args, _could_not_run("fleet", f"{args.devices} devices", err))
    return run_until_signal(lambda stop: _run_fleet(args, settings, stop))


# -- xiaozhi sim scenario ----------------------------------------------------------------


def broker_hint(scenario: Scenario, settings: SimSettings) -> str:
    """Why the scenario needs the broker and, if it was never set, how to set it."""
    mqtt = [name for name, decl in scenario.devices.items() if decl.transport == "mqtt"]
    why = (
        f"its MQTT devices ({', '.join(mqtt)}) connect to it and its steps watch it"
        if mqtt
        else "its steps watch the devices' topics on it"
    )
    hint = f"this scenario needs a broker: {why}"
    if "mqtt_url" not in settings.model_fields_set:
        hint += f"; {_BROKER_UNSET}"
    return hint


def cmd_scenario(args: argparse.Namespace) -> int:
    """``xiaozhi sim scenario FILE``: 0 passed, 1 failed, 2 invalid file or no broker."""
    _configure_logging(args.verbose, logging.ERROR)
    started_at, began = _utc_now(), time.monotonic()
    try:
        settings = _settings(args)
        scenario = load_scenario(args.file)
    except (SimSettingsError, ScenarioError) as err:
        print(f"xiaozhi sim scenario: {err}", file=sys.stderr)
        return _write_reports(args, _could_not_run("scenario", str(args.file), err))
    try:
        result = asyncio.run(
            run_scenario(scenario, settings, show=_say, keep_going=args.keep_going)
        )
    except ChannelError as err:
        hint = broker_hint(scenario, settings)
        print(f"xiaozhi sim scenario: {err}\n  {hint}", file=sys.stderr)
        failed = _could_not_run("scenario", scenario.name, f"{err}; {hint}")
        return _write_reports(args, failed)
    report = RunReport(
        "scenario",
        scenario.name,
        started_at,
        time.monotonic() - began,
        result.exit_code,
        result.cases(),
        {"file": str(args.file), "broker": redact_mqtt_url(settings.mqtt_url)},
    )
    return _write_reports(args, report)


# -- reports -------------------------------------------------------------------------------

_BROKER_UNSET = (
    "neither XIAOZHI_MQTT_URL nor --mqtt-url is set, so it is the default; "
    "point one of them at your broker (`xiaozhi up` runs one there)"
)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _could_not_run(kind: Literal["fleet", "scenario"], name: str, err: object) -> RunReport:
    """A report holding one ERROR case, so CI shows why no check ran (not a missing file)."""
    case = Case("run", "ERROR", message=str(err).splitlines()[0], detail=str(err))
    return RunReport(kind, name, _utc_now(), 0.0, EXIT_INVALID, [case])


def _write_reports(args: argparse.Namespace, report: RunReport) -> int:
    """Write ``--report-json`` / ``--junit`` if asked; return the exit code.

    A report that cannot be written fails the run (exit 2): CI would otherwise gate on a
    file left from an earlier run, or on none.
    """
    try:
        paths = write_reports(report, json_path=args.report_json, junit_path=args.junit)
    except OSError as err:
        print(f"xiaozhi sim {report.kind}: report not written: {err}", file=sys.stderr)
        return EXIT_INVALID
    for path in paths:
        _say(f"written   {path}")
    return report.exit_code


# -- the parser ----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where (default: the XIAOZHI_* settings)")
    group.add_argument("--mqtt-url", help="broker, mqtt://host:port (XIAOZHI_MQTT_URL)")
    group.add_argument("--ws-url", help="device WebSocket if setup names none (XIAOZHI_SIM_WS_URL)")
    group.add_argument("--ota-url", help="setup endpoint; '' skips setup (XIAOZHI_SIM_OTA_URL)")
    group.add_argument("--token", help="bearer token if setup issues none (XIAOZHI_SIM_TOKEN)")
    group.add_argument("--seed", type=int, help="seed of ids and drift (XIAOZHI_SIM_SEED)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="logs on stderr")


def _report_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reports for CI (written whatever the verdict)")
    group.add_argument("--report-json", type=Path, metavar="PATH", help="write a JSON report")
    group.add_argument("--junit", type=Path, metavar="PATH", help="write a JUnit XML report")


def add_sim_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sim`` (``device``, ``fleet``, ``scenario``) on ``xiaozhi``'s sub-parsers.

    Each sub-command sets ``func``; call ``args.func(args)`` for the exit code.
    """
    sim = subparsers.add_parser(
        "sim", help="firmware simulator: one device, a fleet, or a QA scenario"
    )
    sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")

    device = sub.add_parser("device", help="one simulated ESP32-S3 (interactive)")
    _common(device)
    device.add_argument("--transport", choices=["ws", "mqtt", "mqtt-udp"], default="ws")
    device.add_argument(
        "--binary-version", type=int, choices=[1, 2, 3], help="force the WS binary version"
    )
    device.add_argument("--mode", choices=[m.value for m in ListenMode], help="listening mode")
    device.add_argument(
        "--flavour",
        choices=[f.value for f in DeviceKind],
        default="firmware",
        help="WS client: real firmware or seed 003's JSON client",
    )
    device.add_argument("--name", default="device", help="stable name the identity derives from")
    device.add_argument("--device-id", help="override the MAC-derived device id")
    device.add_argument("--group", action="append", default=[], help="MQTT group (repeatable)")
    device.add_argument("--serial", action="store_true", help="serve the serial console on a pty")
    device.add_argument("--wake", action="store_true", help="WS: open the channel at start")
    device.add_argument(
        "--say",
        action="append",
        default=[],
        metavar="TEXT",
        help="say TEXT after start: a firmware device speaks it (synthesized Opus), seed and "
        "MQTT devices send it as text (repeatable)",
    )
    device.add_argument(
        "--type",
        action="append",
        default=[],
        metavar="TEXT",
        help="send TEXT as text, as firmware does after a wake word (repeatable)",
    )
    device.add_argument(
        "--voice",
        default="espeak",
        help="the synthetic voice of --say: espeak[:NAME] or flite[:NAME] (default espeak)",
    )
    device.add_argument("--speak", action="append", default=[], help="stream a 16 kHz WAV")
    device.add_argument("--record-tts", metavar="FILE.wav", help="write received TTS audio")
    device.add_argument("--say-every", type=float, metavar="SECONDS", help="talk periodically")
    device.add_argument(
        "--say-every-text",
        action="append",
        default=None,
        metavar="TEXT",
        help="what --say-every says (repeatable; default: demo phrases)",
    )
    device.add_argument("--heartbeat", type=float, metavar="SECONDS", help="status period")
    device.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this")
    device.add_argument("--connect-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    device.add_argument("--no-stdin", action="store_true", help="ignore stdin commands")
    device.set_defaults(func=cmd_device)

    fleet = sub.add_parser("fleet", help="N devices in one process, with a live summary")
    _common(fleet)
    fleet.add_argument("--devices", type=int, default=10, metavar="N")
    fleet.add_argument("--transport", choices=[t.value for t in TransportChoice], default="mqtt")
    fleet.add_argument("--binary-version", type=int, choices=[1, 2, 3])
    fleet.add_argument(
        "--flavour", choices=[f.value for f in DeviceKind], default="firmware", help="WS client"
    )
    fleet.add_argument("--group", action="append", default=[], help="MQTT group of every device")
    fleet.add_argument("--say-every", type=float, metavar="SECONDS", help="each device talks")
    fleet.add_argument("--no-wake", action="store_true", help="WS: connect only when talking")
    fleet.add_argument("--ramp", type=float, default=500.0, help="device starts per second")
    fleet.add_argument(
        "--probe-rate",
        type=float,
        default=0.0,
        metavar="CMDS_PER_S",
        help="time get_status round trips to MQTT devices",
    )
    fleet.add_argument("--heartbeat", type=float, metavar="SECONDS", help="status period")
    fleet.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="run this long (0: stop once connected; default: until Ctrl-C)",
    )
    fleet.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS")
    fleet.add_argument("--interval", type=float, default=1.0, help="summary period, seconds")
    gates = fleet.add_argument_group("thresholds (exit 1 when one is missed)")
    gates.add_argument(
        "--min-connected",
        type=MinConnected.parse,
        default=MinConnected(100, percent=True),
        metavar="N|P%",
        help="devices that must connect and stay connected: a count or a percentage of those "
        "expected (default 100%%)",
    )
    gates.add_argument(
        "--max-p99-ms",
        type=float,
        metavar="MS",
        help="highest p99 of each measured latency (command: --probe-rate; voice: --say-every)",
    )
    _report_options(fleet)
    fleet.set_defaults(func=cmd_fleet)

    scenario = sub.add_parser("scenario", help="run a YAML QA scenario; exit 0 pass, 1 fail")
    _common(scenario)
    scenario.add_argument("file", type=Path, help="the scenario YAML")
    scenario.add_argument("--keep-going", action="store_true", help="run steps after a failure")
    _report_options(scenario)
    scenario.set_defaults(func=cmd_scenario)
    return sim


def main(argv: list[str] | None = None) -> int:
    """``python -m xiaozhi_sim ...`` (same as ``xiaozhi sim ...``)."""
    parser = argparse.ArgumentParser(prog="xiaozhi")
    add_sim_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *(argv if argv is not None else sys.argv[1:])])
    with contextlib.suppress(KeyboardInterrupt):
        return int(args.func(args))
    return 130
