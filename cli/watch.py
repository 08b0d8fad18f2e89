"""``xiaozhi watch``: the fleet and its events, live, from the hub's stream (``/api/v1/stream``).

On a terminal it keeps a table of the fleet (status, transport, firmware, last seen: the time
the messages themselves carry, "-" when a replayed status has none) above the latest events,
redrawn as they come; piped, or with ``--plain``, it prints one line per message (``--json``:
one JSON object per line), for scripts and logs. Filters: ``--topic`` (MQTT
filters, sent to the hub), ``--device`` and ``--event`` (applied here); the hub's own log lines
are shown from warnings up (``--logs``: info too).

The API key: ``--api-key``, else ``XIAOZHI_API_KEY``, else the first key of
``XIAOZHI_API_KEYS``, else ``<state dir>/api_key`` (the one ``xiaozhi up`` generates and prints).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from xiaozhi.stream_frame import MessageType, StreamMessage
from xiaozhi.timestamps import parse_wire_timestamp
from xiaozhi_cli.settings import load_settings
from xiaozhi_runtime.stream_client import DATA_TYPES, StreamClient, StreamClosed

__all__ = ["Fleet", "WatchOptions", "add_watch_parser", "describe", "resolve_api_key", "watch"]

DEFAULT_URL = "http://127.0.0.1:8003"
_CONNECTION_KINDS = frozenset({"device_connected", "device_disconnected"})
_REDRAW_SECONDS = 0.2  # at most five redraws a second on a terminal


class WatchError(Exception):
    """Something the person at the terminal must fix (no key, no hub)."""


def resolve_api_key(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The key to use (module docstring for the order).

    Raises:
        WatchError: none found.
    """
    env = os.environ if environ is None else environ
    if given:
        return given
    if env.get("XIAOZHI_API_KEY"):
        return env["XIAOZHI_API_KEY"]
    if env.get("XIAOZHI_API_KEYS"):
        return env["XIAOZHI_API_KEYS"].split(",")[0].split(":")[0].strip()
    path = Path(env.get("XIAOZHI_STATE_DIR") or load_settings().state_dir) / "api_key"
    try:
        return path.read_text().strip()
    except OSError as err:
        raise WatchError(
            f"no API key: pass --api-key, set XIAOZHI_API_KEY, or run where {path} exists "
            "(`xiaozhi up` writes it and prints the key)"
        ) from err


def _clock(msg: StreamMessage) -> str:
    seconds = msg.timestamp_us / 1e6 if msg.timestamp_us is not None else time.time()
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"


def _when(seconds: float | None) -> str:
    """A last-seen time: the time of day when today, else the date too; "-" when unknown."""
    if seconds is None:
        return "-"
    if time.localtime(seconds)[:3] == time.localtime()[:3]:
        return time.strftime("%H:%M:%S", time.localtime(seconds))
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _action(action: Any) -> str:
    if not isinstance(action, dict):
        return ""
    return " ".join(str(action[k]) for k in ("action", "entity_id") if action.get(k))


def _event_gist(event_type: str, body: dict[str, Any]) -> str:
    """The few words that say what an event was (the voice steps first)."""
    if event_type == "voice_command":
        return f'heard "{body.get("command", "")}"'
    if event_type == "action":
        return f"-> {_action(body.get('action'))}"
    if event_type == "action_result":
        outcome = body.get("status", "?")
        error = f" {_short(body['error'], 60)}" if body.get("error") else ""
        return f"{outcome} {_action(body.get('action'))}{error}"
    if event_type == "response":
        return f'says "{body.get("text", "")}"' + (
            f" ({body['intent']})" if body.get("intent") else ""
        )
    if event_type == "command_result":
        return f"{body.get('command', '?')} {body.get('status', '?')}"
    if event_type == "error":
        return f"{body.get('source', '')} {body.get('error_message', '')}".strip()
    rest = {k: v for k, v in body.items() if k not in ("event_type", "device_id", "timestamp")}
    return _short(rest, 80)


def _hub_line(what: str, body: dict[str, Any]) -> tuple[str, str]:
    """What and gist of a line of the hub's own: a log line, or an activation that changed."""
    if what == "log":
        rest = {k: v for k, v in body.items() if k not in ("level", "event", "timestamp")}
        return (
            f"log {body.get('level', '')}",
            f"{body.get('event', '')} {_short(rest, 80) if rest else ''}",
        )
    gist = f"{body.get('change', '')} client {body.get('client_id', '')}"  # an activation
    if body.get("code"):
        gist += f" code {body['code']} ({body.get('user_agent') or 'unknown board'})"
    return what, gist


def describe(msg: StreamMessage) -> str:
    """One line for a stream message: time, what, who, the gist."""
    data = msg.data if isinstance(msg.data, dict) else {}
    if msg.type is MessageType.HEARTBEAT:
        if data.get("dropped"):
            return (
                f"{_clock(msg)}  -- the hub skipped messages for this slow reader: "
                f"{data['dropped']} dropped so far"
            )
        return f"{_clock(msg)}  heartbeat"
    if msg.type is MessageType.ERROR:
        return (
            f"{_clock(msg)}  ERROR            0x{data.get('code', 0):03x} {data.get('message', '')}"
        )
    what = str(data.get("kind", msg.type.name.lower()))
    payload = data.get("payload")
    who = str(data.get("device_id") or data.get("edge_id") or data.get("entity_id") or "")
    body = payload if isinstance(payload, dict) else {}
    if what == "status":
        gist = " ".join(
            f"{k}={body[k]}"
            for k in ("status", "transport", "firmware_version", "wifi_signal", "uptime")
            if k in body
        )
    elif what == "sensor":
        gist = f"{data.get('sensor_type')}={_short(body.get('value'), 30)} {body.get('unit', '')}"
    elif what in _CONNECTION_KINDS:
        who = str(body.get("device_id", who))
        gist = " ".join(str(body[k]) for k in ("transport", "edge_id", "reason") if body.get(k))
    elif what in ("log", "activation"):
        what, gist = _hub_line(what, body)
    elif "event_type" in data:
        what = str(data["event_type"])
        who = who or str(body.get("device_id", ""))
        gist = _event_gist(what, body)
    elif payload is None:
        gist = "(cleared)"
    else:
        gist = _short(body.get("state", payload) if body else payload, 80)
    if data.get("retained"):
        gist += "  (retained)"
    return f"{_clock(msg)}  {what:<16} {who:<16} {gist}".rstrip()


@dataclass
class Fleet:
    """What the terminal view shows: the devices' last statuses and the latest events."""

    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    version: int = 0  # bumped by every change, so the painter knows

    def apply(self, msg: StreamMessage, line: str) -> None:
        self.version += 1
        data = msg.data if isinstance(msg.data, dict) else {}
        kind = data.get("kind")
        raw = data.get("payload")
        payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
        device_id = data.get("device_id") or payload.get("device_id")
        if kind == "status" and data.get("device_id"):
            if raw is None:
                self.devices.pop(data["device_id"], None)
            elif payload:
                seen = self.devices.get(data["device_id"], {}).get("_at")
                self.devices[data["device_id"]] = {**payload, "_at": seen}
        if isinstance(device_id, str) and device_id in self.devices:
            self._seen(self.devices[device_id], msg, data, payload)
        if kind not in ("status", "sensor"):
            self.events.append(line)

    @staticmethod
    def _seen(
        device: dict[str, Any], msg: StreamMessage, data: dict[str, Any], payload: dict[str, Any]
    ) -> None:
        """The device was heard from when the message says (a status's ``last_seen`` or
        ``timestamp``, an event's ``timestamp``), as the dashboard counts it. A message without
        one is "now" when live, and says nothing when replayed (retained: it may be hours
        old); an older message never takes last seen back."""
        at = parse_wire_timestamp(payload.get("last_seen")) or parse_wire_timestamp(
            payload.get("timestamp")
        )
        if at is None and not data.get("retained") and msg.timestamp_us is not None:
            at = msg.timestamp_us / 1e6
        if at is not None and (device["_at"] is None or at > device["_at"]):
            device["_at"] = at

    def render(self, width: int, height: int) -> str:
        rows = [
            f"xiaozhi watch - {len(self.devices)} devices, "
            f"{sum(d.get('status') == 'connected' for d in self.devices.values())} connected"
            "   (Ctrl-C to quit)",
            f"{'device':<20}{'status':<14}{'transport':<11}{'firmware':<11}last seen",
        ]
        fleet_rows = max(3, height // 2 - 2)
        for device_id, d in sorted(self.devices.items())[:fleet_rows]:
            rows.append(
                f"{device_id:<20}{d.get('status', '?'):<14}{d.get('transport', ''):<11}"
                f"{d.get('firmware_version', ''):<11}{_when(d['_at'])}"
            )
        rows.append("-" * min(width, 80))
        room = max(1, height - len(rows) - 1)
        rows.extend(list(self.events)[-room:])
        return "\n".join(row[:width] for row in rows)


def _wanted(
    msg: StreamMessage, devices: frozenset[str], events: frozenset[str], info_logs: bool
) -> bool:
    """The --device, --event and --logs filters (control messages always pass)."""
    if msg.type not in DATA_TYPES:
        return True
    data = msg.data if isinstance(msg.data, dict) else {}
    raw = data.get("payload")
    payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if data.get("kind") == "log" and not info_logs and payload.get("level") in ("debug", "info"):
        return "log" in events
    if devices:
        device_id = data.get("device_id") or payload.get("device_id")
        if device_id not in devices:
            return False
    if events:
        return data.get("event_type") in events or data.get("kind") in events
    return True


@dataclass(frozen=True)
class WatchOptions:
    """What to ask the hub for and how to show it (the command's arguments)."""

    topics: tuple[str, ...] = ("#",)
    devices: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    live: bool = False  # the redrawn terminal view; False: one line per message
    as_json: bool = False
    count: int | None = None  # exit after this many messages shown
    info_logs: bool = False  # the hub's info log lines too (warnings and errors always)


async def watch(
    url: str,
    api_key: str,
    options: WatchOptions,
    out: TextIO,
    say: Callable[[str], None] | None = None,
) -> int:
    """Print the stream until interrupted (or ``options.count`` messages shown)."""
    fleet = Fleet()
    shown = 0
    async with StreamClient(url, api_key=api_key, topics=list(options.topics)) as stream:
        if say is not None:
            say(f"watching {stream.url} (V{int(stream.version)}), filters {stream.topics}")
        painter = asyncio.create_task(_paint(fleet, out)) if options.live else None
        try:
            async for msg in stream:
                if msg.type is MessageType.HEARTBEAT and not msg.data.get("dropped"):
                    continue  # keep-alive: nothing to show
                if not _wanted(msg, options.devices, options.events, options.info_logs):
                    continue
                _show(msg, fleet, out, options)
                shown += 1
                if options.count is not None and shown >= options.count:
                    break
        finally:
            if painter is not None:
                painter.cancel()
    return 0


def _show(msg: StreamMessage, fleet: Fleet, out: TextIO, options: WatchOptions) -> None:
    line = describe(msg)
    if options.live:
        fleet.apply(msg, line)  # painted by _paint
    elif options.as_json:
        record = {"type": msg.type.name, "flags": int(msg.flags), "data": msg.data}
        out.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        out.flush()
    else:
        out.write(line + "\n")
        out.flush()


async def _paint(fleet: Fleet, out: TextIO) -> None:
    """Redraw the terminal view when it changed, at most every :data:`_REDRAW_SECONDS`."""
    painted = -1
    while True:
        if fleet.version != painted:
            painted = fleet.version
            size = shutil.get_terminal_size()
            out.write("\x1b[H\x1b[2J" + fleet.render(size.columns, size.lines) + "\n")
            out.flush()
        await asyncio.sleep(_REDRAW_SECONDS)  # pacing a screen, not waiting for an event


def _cmd_watch(args: argparse.Namespace) -> int:
    try:
        api_key = resolve_api_key(args.api_key)
    except WatchError as err:
        print(f"xiaozhi watch: {err}", file=sys.stderr)
        return 2
    live = sys.stdout.isatty() and not args.plain and not args.json
    try:
        return asyncio.run(
            watch(
                args.url,
                api_key,
                WatchOptions(
                    topics=tuple(args.topic or ["#"]),
                    devices=frozenset(args.device or ()),
                    events=frozenset(args.event or ()),
                    live=live,
                    as_json=args.json,
                    count=args.count,
                    info_logs=args.logs,
                ),
                sys.stdout,
                say=None if live else lambda line: print(f"# {line}", file=sys.stderr),
            )
        )
    except StreamClosed as err:
        if err.code is None:  # the hub went away (restart, network)
            print(f"xiaozhi watch: {err}", file=sys.stderr)
            return 1
        print(
            f"xiaozhi watch: the hub refused the stream (0x{err.code:03x}): {err}", file=sys.stderr
        )
        return 2
    except OSError as err:
        print(f"xiaozhi watch: cannot reach the hub at {args.url}: {err}", file=sys.stderr)
        return 2


def add_watch_parser(sub: Any) -> None:
    """Register ``xiaozhi watch`` on the main parser's sub-commands."""
    parser = sub.add_parser(
        "watch",
        help="live view of the fleet and its events (the hub's stream)",
        description="The fleet and its events, live, from the hub's stream (/api/v1/stream).",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("XIAOZHI_HUB_URL", DEFAULT_URL),
        help="the hub (http://host:port or the ws:// stream URL); default: XIAOZHI_HUB_URL "
        "or %(default)s",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="default: XIAOZHI_API_KEY, the first of XIAOZHI_API_KEYS, or <state dir>/api_key",
    )
    parser.add_argument(
        "--topic",
        action="append",
        metavar="FILTER",
        help="MQTT topic filter, repeatable (e.g. 'xiaozhi/status/+'); default '#': everything",
    )
    parser.add_argument(
        "--device", action="append", metavar="ID", help="only this device (repeatable)"
    )
    parser.add_argument(
        "--event",
        action="append",
        metavar="TYPE",
        help="only these events, by event_type or kind (response, error, device_connected...)",
    )
    parser.add_argument(
        "--logs",
        action="store_true",
        help="the hub's info log lines too (its warnings and errors are always shown)",
    )
    parser.add_argument("--plain", action="store_true", help="one line per message, even on a TTY")
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument("--count", type=int, default=None, help="exit after this many messages")
    parser.set_defaults(func=_cmd_watch)
