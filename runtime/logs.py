"""Logging set-up: structlog, one JSON line per event in production, readable in a terminal.

Called once per process by the command line, never by library code (the `xiaozhi/` core
configures nothing). Event names are stable snake_case (`device_connected`); loggers bind
`device_id`, `session_id`, `edge_id` once per connection.

:func:`add_log_listener` lets a component see its own process's log events as they are
written (the hub's live stream carries them): a listener is called with a copy of each event
that passes the level, on the thread that logged it, and must neither block nor log.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import structlog

__all__ = ["LogListener", "add_log_listener", "configure_logging"]

LogListener = Callable[[dict[str, Any]], None]
_listeners: list[LogListener] = []


def add_log_listener(listener: LogListener) -> Callable[[], None]:
    """Call ``listener`` with every log event this process writes; returns the remover."""
    _listeners.append(listener)

    def remove() -> None:
        if listener in _listeners:
            _listeners.remove(listener)

    return remove


def _to_listeners(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: hand a copy of the event to each listener (none: free)."""
    for listener in tuple(_listeners):
        # A listener's failure must never break logging, nor log itself.
        with contextlib.suppress(Exception):
            listener(dict(event_dict))
    return event_dict


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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
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
