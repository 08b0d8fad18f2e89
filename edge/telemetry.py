"""The fast path for telemetry: ``sensor`` and ``ping`` messages without a pydantic model.

Why: at 1,000 devices the edge spent most of its 149 µs a message in pydantic, building a
:class:`~xiaozhi.messages.SensorMessage` and a :class:`~xiaozhi.payloads.SensorPayload` for
every reading (docs/benchmarks.md, "telemetry"). Almost every telemetry message has the plain
shape the seed shows, and for that shape the models only check a few types. So:

* :func:`plain_sensor` and :func:`plain_ping` take the object orjson already parsed and return
  its fields when, and only when, the models would accept it unchanged: every field of the
  right JSON type (no coercion: ``"3600"`` or ``3600.0`` for an integer go the slow way), the
  sensor type in the id grammar. Anything else returns ``None`` and the caller validates the
  message with the models, which name the error. The fast path accepts a subset of what the
  models accept, so it can never accept what they refuse, nor word an error differently.
* :func:`sensor_payload` and :func:`pong_text` write what ``SensorPayload(...).to_wire()`` and
  ``PongMessage(...).to_text()`` write, byte for byte: the same keys in the same order, ``None``
  left out, through the same orjson.

``tests/edge/test_telemetry.py`` holds the fast path to the models on hostile inputs
(unicode, huge numbers, missing, extra and mistyped fields).
"""

from __future__ import annotations

import re
from typing import Any, Final

from xiaozhi import jsonutil
from xiaozhi.topics import DEVICE_ID_PATTERN, MAX_ID_LENGTH

__all__ = ["TELEMETRY_FIELDS", "plain_ping", "plain_sensor", "pong_text", "sensor_payload"]

TELEMETRY_FIELDS: Final = ("uptime", "memory_usage", "cpu_usage", "wifi_signal", "free_heap")
"""``ping`` data fields republished in the status, in :class:`StatusPayload`'s field order."""

_SENSOR_TYPE = re.compile(DEVICE_ID_PATTERN)  # SensorType's pattern (xiaozhi.payloads)
_COUNTS: Final = frozenset({"uptime", "free_heap"})  # NonNegative int in PingData; else Number


def _plain_envelope(obj: dict[str, Any]) -> bool:
    """The seed 003 envelope's optional strings are absent, null or strings."""
    for key in ("timestamp", "device_id", "message_id"):
        value = obj.get(key)
        if value is not None and type(value) is not str:
            return False
    return True


def plain_sensor(obj: dict[str, Any]) -> tuple[str, Any, str | None, str | None] | None:
    """``(sensor_type, value, unit, timestamp)`` of a plain ``sensor`` message, else None.

    ``obj`` is a parsed message whose ``type`` is ``"sensor"``. None means "validate it with
    :class:`~xiaozhi.messages.SensorMessage`": it may still be valid (a value the model
    coerces), or not, and then the model's error is the answer.
    """
    data = obj.get("data")
    if type(data) is not dict or not _plain_envelope(obj):
        return None
    sensor_type = data.get("sensor_type")
    if (
        type(sensor_type) is not str
        or len(sensor_type) > MAX_ID_LENGTH
        or _SENSOR_TYPE.fullmatch(sensor_type) is None
    ):
        return None
    value = data.get("value")
    # Scalar: a string, a number or a boolean, kept as given; orjson yields no NaN or
    # Infinity, and integers past 64 bits arrive as floats, as they do for the models.
    if type(value) not in (str, int, float, bool):
        return None
    unit = data.get("unit")
    if unit is not None and type(unit) is not str:
        return None
    device_id = data.get("device_id")
    if device_id is not None and type(device_id) is not str:
        return None
    return sensor_type, value, unit, obj.get("timestamp")


def sensor_payload(
    sensor_type: str, value: Any, device_id: str, unit: str | None, timestamp: str
) -> bytes:
    """``SensorPayload(...).to_wire()`` for fields that passed :func:`plain_sensor`."""
    if unit is None:
        fields = {"sensor_type": sensor_type, "value": value, "device_id": device_id}
    else:
        fields = {"sensor_type": sensor_type, "value": value, "device_id": device_id, "unit": unit}
    fields["timestamp"] = timestamp
    return jsonutil.dumps(fields)


def plain_ping(obj: dict[str, Any]) -> tuple[dict[str, int | float], str | None] | None:
    """``(telemetry, message_id)`` of a plain ``ping`` message, else None (validate it).

    ``telemetry`` holds the :data:`TELEMETRY_FIELDS` the device sent, not null.
    """
    data = obj.get("data")
    if type(data) is not dict or not _plain_envelope(obj):
        return None
    device_id = data.get("device_id")
    if device_id is not None and type(device_id) is not str:
        return None
    telemetry: dict[str, int | float] = {}
    for name in TELEMETRY_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        kind = type(value)
        if name in _COUNTS:
            if kind is not int or value < 0:
                return None
        elif kind is not int and kind is not float:
            return None
        telemetry[name] = value
    return telemetry, obj.get("message_id")


def pong_text(timestamp: str, device_id: str | None, message_id: str | None) -> str:
    """``PongMessage(timestamp=..., device_id=..., message_id=...).to_text()``."""
    fields: dict[str, str] = {"type": "pong", "timestamp": timestamp}
    if device_id is not None:
        fields["device_id"] = device_id
    if message_id is not None:
        fields["message_id"] = message_id
    return jsonutil.dumps_text(fields)
