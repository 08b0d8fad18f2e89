"""Logging set-up: structlog, one JSON line per event in production, readable in a terminal.

Called once per process by the command line, never by library code (the `xiaozhi/` core
configures nothing). Event names are stable snake_case (`device_connected`); loggers bind
`device_id`, `session_id`, `edge_id` once per connection.

:func:`add_log_listener` lets a component see its own process's log events as they are
written (the hub's live stream carries them): a listener is called with a copy of each event
that passes the level, on the thread that logged it, and must neither block nor log.

Under ``xiaozhi up`` an edge and a hub share one process, so one log, and both forward lines
(the edge to ``bridge/edges/{id}/log``, the hub to its stream's log topic, which also carries
the edge's topic): each line would reach the stream twice. So a listener names the component
it speaks for, as a logger-name prefix (``xiaozhi.hub``, ``xiaozhi.edge``: every logger is
named ``xiaozhi.<component>...``), and each line goes to exactly one component: the one whose
prefix its logger's name has; a line of no listening component (shared code such as
``xiaozhi.mqtt``, the simulator) goes to the listeners that take the rest (``rest=True``,
the hub's), or, with none, to every component's (a lone edge keeps its MQTT warnings). A
listener with no component (a test's) sees every line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import logging.handlers
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import structlog

__all__ = ["LogListener", "add_log_listener", "configure_logging", "logger_of"]

LogListener = Callable[[dict[str, Any]], None]


@dataclasses.dataclass(frozen=True, eq=False)
class _Registered:
    listener: LogListener
    component: str | None
    rest: bool

    def owns(self, name: str) -> bool:
        c = self.component
        return c is not None and (name == c or name.startswith(c + "."))


_listeners: list[_Registered] = []


def add_log_listener(
    listener: LogListener, *, component: str | None = None, rest: bool = False
) -> Callable[[], None]:
    """Call ``listener`` with the log events of its component; returns the remover.

    Args:
        listener: called with a copy of each event (module docstring: never blocks, never logs).
        component: the logger-name prefix it speaks for (``xiaozhi.edge``); None: every line.
        rest: it also takes the lines no listening component owns (shared code, libraries).
    """
    registered = _Registered(listener, component, rest)
    _listeners.append(registered)

    def remove() -> None:
        if registered in _listeners:
            _listeners.remove(registered)

    return remove


def _chosen(name: str) -> list[_Registered]:
    """The listeners a line of logger ``name`` goes to: one component's, never two."""
    everyone = [r for r in _listeners if r.component is None]
    components = [r for r in _listeners if r.component is not None]
    owners = [r for r in components if r.owns(name)]
    if owners:
        # The longest prefix owns it (``xiaozhi.hub.x`` under ``xiaozhi.hub`` and ``xiaozhi``).
        longest = max(len(r.component or "") for r in owners)
        owners = [r for r in owners if len(r.component or "") == longest]
    else:
        owners = [r for r in components if r.rest] or components
    return everyone + owners


def logger_of(logger: Any) -> str:
    """The name a line's logger was made with (``structlog.get_logger("xiaozhi.edge")``)."""
    return str(getattr(logger, "name", "") or "")


def _to_listeners(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: hand a copy of the event to each listener it goes to."""
    if not _listeners:
        return event_dict
    for registered in _chosen(logger_of(logger)):
        # A listener's failure must never break logging, nor log itself.
        with contextlib.suppress(Exception):
            registered.listener(dict(event_dict))
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """structlog's print logger, keeping the name it was asked for (the stdlib's have one):
    :func:`_to_listeners` routes each line by it."""

    def __init__(self, file: Any = None, name: str = "") -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "")


LOG_FILE_BYTES = 10 * 1024 * 1024
"""A log file is rotated at this size, two old ones kept: bounded however long it runs."""


def configure_logging(
    *, level: str = "info", json: bool | None = None, file: Path | None = None
) -> None:
    """Configure structlog and the standard library's logging (for aiomqtt, websockets).

    Args:
        level: minimum level name (debug, info, warning, error).
        json: JSON lines (True), coloured console lines (False), or decide by whether
            stderr is a terminal (None).
        file: write JSON lines to this file (rotated at :data:`LOG_FILE_BYTES`) instead of
            stderr: ``xiaozhi up`` keeps its terminal for the summary lines people read.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use debug, info, warning or error)")
    if file is not None:
        _log_to_file(numeric, file)
        return
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _to_listeners,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedPrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's records (aiomqtt, websockets, uvicorn) are rendered by the same
    # renderer: one JSON object per line in production, never a plain-text line among them.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # A library's `logger.exception(...)` carries exc_info: rendered here as the
                # traceback's text, where JSON alone would print "<traceback object>".
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def _log_to_file(numeric: int, file: Path) -> None:
    """Every record, ours and the libraries', as one JSON line in ``file`` (through the
    standard library, whose rotating handler bounds the file)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        file, maxBytes=LOG_FILE_BYTES, backupCount=2, encoding="utf-8"
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            _to_listeners,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("websockets", "uvicorn", "aiomqtt", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
