"""The one JSON entry point of the project (orjson underneath).

Every component parses and writes JSON through these four functions, so bad input always
surfaces as the same typed error (:class:`~xiaozhi.errors.InvalidMessage`, or
:class:`~xiaozhi.errors.PayloadTooLarge` when a size limit is given) and the edge can map it
to an ``error`` reply without looking at orjson's exceptions. Output is compact UTF-8 with no
spaces, which is what the firmware's cJSON and every MQTT subscriber accept.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from xiaozhi.errors import InvalidMessage, PayloadTooLarge

__all__ = ["dumps", "dumps_text", "loads", "loads_object"]

_JSON_TYPE_NAMES: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _size(data: bytes | bytearray | memoryview | str, max_bytes: int) -> int:
    """UTF-8 size of ``data``, encoding a str only when its length alone cannot decide."""
    if isinstance(data, str):
        # One character is 1 to 4 bytes: skip the encode when the answer is already known.
        if len(data) > max_bytes or len(data) * 4 <= max_bytes:
            return len(data)
        return len(data.encode("utf-8", "surrogatepass"))
    return memoryview(data).nbytes


def loads(data: bytes | bytearray | memoryview | str, *, max_bytes: int | None = None) -> Any:
    """Parse one JSON document.

    Args:
        data: the raw text (a WebSocket text frame, an MQTT payload).
        max_bytes: refuse documents larger than this many bytes, checked *before* parsing so a
            hostile peer cannot make us build a huge object; ``None`` means no limit.

    Returns:
        The parsed value (dict, list, str, int, float, bool or None).

    Raises:
        PayloadTooLarge: ``data`` is over ``max_bytes``.
        InvalidMessage: ``data`` is not valid UTF-8 or not valid JSON.
    """
    if max_bytes is not None:
        size = _size(data, max_bytes)
        if size > max_bytes:
            raise PayloadTooLarge(size=size, limit=max_bytes, what="JSON message")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        detail = str(err)
        if "UTF-8" in detail:
            raise InvalidMessage(f"invalid UTF-8 in JSON message: {detail}") from err
        raise InvalidMessage(f"invalid JSON: {detail}") from err


def loads_object(
    data: bytes | bytearray | memoryview | str, *, max_bytes: int | None = None
) -> dict[str, Any]:
    """Parse one JSON document that must be an object (every message on our wires is one).

    Raises:
        PayloadTooLarge: ``data`` is over ``max_bytes``.
        InvalidMessage: not UTF-8, not JSON, or a JSON value other than an object.
    """
    value = loads(data, max_bytes=max_bytes)
    if not isinstance(value, dict):
        kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
        raise InvalidMessage(f"expected a JSON object, got a JSON {kind}")
    return value


def _default(obj: Any) -> Any:
    """orjson hook for what it cannot write natively: our pydantic models."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    """Write ``obj`` as compact UTF-8 JSON bytes.

    Pydantic models (nested anywhere) are written as ``model_dump(mode="json")``; enums,
    dataclasses and the JSON types natively.

    Raises:
        TypeError: ``obj`` holds something that has no JSON form (a caller bug, not a peer's),
            or an integer outside the 64-bit range.
    """
    return orjson.dumps(obj, default=_default)


def dumps_text(obj: Any) -> str:
    """Like :func:`dumps`, as ``str`` (for WebSocket text frames)."""
    return dumps(obj).decode("utf-8")
