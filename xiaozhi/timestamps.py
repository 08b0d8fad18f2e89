"""Wire timestamps: the one form every payload carries, and its parser.

Seed 003 writes ``2024-01-01T00:00:00.000Z``: UTC, milliseconds, a ``Z``. Every process
(edge, hub, simulator) formats through :func:`wire_timestamp`, so an integrator never sees two
forms of the same instant. Pure: the caller passes the clock reading (``time.time()``).
"""

from __future__ import annotations

import datetime as _dt

__all__ = ["parse_wire_timestamp", "wire_timestamp"]


def wire_timestamp(epoch_seconds: float) -> str:
    """``epoch_seconds`` (``time.time()``) as ``2024-01-01T00:00:00.000Z``."""
    stamp = _dt.datetime.fromtimestamp(epoch_seconds, _dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_wire_timestamp(text: object) -> float | None:
    """Seconds since the epoch of an ISO 8601 timestamp (``Z`` or an offset), or None.

    A timestamp without an offset is taken as UTC (seed 003's examples all are).
    """
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed.timestamp()
