"""Shared base of every JSON model, and the one place pydantic errors become ours.

All wire models (:mod:`xiaozhi.messages`, :mod:`xiaozhi.payloads`) derive from
:class:`WireModel`, which fixes three rules for the whole contract:

* unknown fields are **kept** (``extra="allow"``): the firmware adds fields over time
  (``features.glyph_push``, ``text_font`` in reference §1.3) and a hub must pass them on;
* optional fields that are ``None`` are **left out** of the wire form (a ``listen`` stop
  carries no ``"mode": null``, reference §1.5), while extras are written as received;
* a pydantic ``ValidationError`` never escapes: :func:`validate_model` turns it into
  :class:`~xiaozhi.errors.MissingField` or :class:`~xiaozhi.errors.InvalidMessage` naming the
  field as a dotted path (``data.command``), so the edge can answer with an ``error`` message.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema

from xiaozhi import jsonutil
from xiaozhi.errors import InvalidMessage, MissingField

__all__ = [
    "Number",
    "Opt",
    "Scalar",
    "TransactionId",
    "WireModel",
    "field_path",
    "parse_payload",
    "validate_model",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_MAX_QUOTED_CHARS = 40


def _is_none(value: object) -> bool:
    return value is None


Opt = Annotated[T | None, Field(exclude_if=_is_none)]
"""An optional field, absent from the wire form when ``None``: ``mode: Opt[ListenMode] = None``."""


def _number(value: object) -> int | float:
    # bool is an int in Python but never a number on the wire; ints stay ints so that a
    # device's "memory_usage": 65 is written back as 65, not 65.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite number (JSON has no NaN or Infinity)")
    return value


def _scalar(value: object) -> bool | int | float | str:
    if isinstance(value, float):
        return _number(value)
    if not isinstance(value, bool | int | str):
        raise ValueError("expected a string, number or boolean")
    return value


def _transaction(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a string or an integer")
    return value


Number = Annotated[int | float, PlainValidator(_number), WithJsonSchema({"type": "number"})]
"""A JSON number kept as given (int or float), refusing strings and booleans."""

Scalar = Annotated[
    bool | int | float | str,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
"""A sensor reading: string, number or boolean, kept as given (seed 003 "Sensor Message")."""

TransactionId = Annotated[
    str | int, PlainValidator(_transaction), WithJsonSchema({"type": ["string", "integer"]})
]
"""A bridge request's ``transaction``, echoed exactly as the integrator sent it (zigbee2mqtt)."""


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("data", "actions", 0, "entity_id")`` → ``"data.actions[0].entity_id"``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


def _quote(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_QUOTED_CHARS:
        text = text[: _MAX_QUOTED_CHARS - 3] + "..."
    return text


def _to_wire_error(model: str, err: ValidationError, prefix: tuple[str, ...]) -> InvalidMessage:
    """Pick the error to report: a missing field first (it has its own code), else the first."""
    errors = err.errors(include_url=False)
    missing = [e for e in errors if e["type"] == "missing"]
    if missing:
        return MissingField(field=field_path((*prefix, *missing[0]["loc"])), model=model)
    first = errors[0]
    path = field_path((*prefix, *first["loc"])) or None
    reason = first["msg"].removeprefix("Value error, ")
    where = f"field {path!r}" if path else "message"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidMessage(
        f"{model}: {where}: {reason}, got {_quote(first['input'])}{more}", field=path
    )


def validate_model(model_cls: type[M], obj: Any, *, path_prefix: str | None = None) -> M:
    """Build ``model_cls`` from an already parsed JSON value.

    ``path_prefix`` names where ``obj`` sits in a larger message (``"parameters"``), so an
    error names the field as the peer sees it (``parameters.volume``).

    Raises:
        MissingField: a required field is absent (``field`` is its dotted path).
        InvalidMessage: a field has the wrong type or value (``field`` names it).
    """
    try:
        return model_cls.model_validate(obj)
    except ValidationError as err:
        prefix = (path_prefix,) if path_prefix else ()
        raise _to_wire_error(model_cls.__name__, err, prefix) from err


def parse_payload(
    model_cls: type[M],
    raw: bytes | bytearray | memoryview | str,
    *,
    max_bytes: int | None = None,
) -> M:
    """Parse JSON ``raw`` into ``model_cls`` (an MQTT payload, a stream header...).

    Raises:
        PayloadTooLarge: ``raw`` is over ``max_bytes`` (checked before parsing).
        InvalidMessage: bad UTF-8, bad JSON, not an object, or a field that does not fit.
        MissingField: a required field is absent.
    """
    return validate_model(model_cls, jsonutil.loads_object(raw, max_bytes=max_bytes))


class WireModel(BaseModel):
    """Base of every JSON model of the contract: extras kept, ``None`` optionals omitted.

    Models are frozen values; derive a changed one with ``model_copy(update=...)``. Building
    one in code with bad values raises pydantic's ``ValidationError`` (a caller bug); parsing
    what a peer sent goes through :meth:`from_wire` / :func:`validate_model`, which raise our
    typed errors instead.
    """

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    def to_wire(self) -> bytes:
        """The compact JSON bytes to send or publish."""
        return jsonutil.dumps(self)

    def to_text(self) -> str:
        """The JSON as ``str``, for a WebSocket text frame."""
        return jsonutil.dumps_text(self)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready dict that :meth:`to_wire` writes (enums as their values)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_wire(
        cls, raw: bytes | bytearray | memoryview | str, *, max_bytes: int | None = None
    ) -> Self:
        """Parse JSON ``raw`` as this model; same errors as :func:`parse_payload`."""
        return parse_payload(cls, raw, max_bytes=max_bytes)

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        """Validate an already parsed JSON value; same errors as :func:`validate_model`."""
        return validate_model(cls, obj)
