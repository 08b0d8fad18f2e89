"""The device's serial console (seed 003 "Serial Protocol"), spoken by the simulator on a pty.

Seed 003 gives a generic template ``<START><LENGTH><COMMAND><PARAMETERS><CHECKSUM><END>`` but
every example it shows is plain text framed by ``$`` and ``#`` with no length or checksum
(``$LED,ON,255#``, ``$VOL,80#``, ``$STA?#``, ``$RST#``). We implement the examples: ``$`` is
START, ``#`` is END, the length is implicit and bounded, and there is no checksum (a short USB
cable at 115200 8N1, or a pseudo-terminal, does not corrupt bytes; a human types these lines).

Line format (printable ASCII, case-sensitive, at most :data:`MAX_LINE_CHARS` characters
including ``$``, ``#`` and any CR/LF terminator, checked before anything else)::

    command = "$" verb *("," param) "#"
    reply   = "$" status ["," data] "#"

    $LED,ON#            LED on at its current brightness   -> LedCommand(on=True)
    $LED,ON,255#        LED on, brightness 0-255           -> LedCommand(on=True, brightness=255)
    $LED,OFF#           LED off                            -> LedCommand(on=False)
    $VOL,80#            volume 0-100                       -> VolumeCommand(volume=80)
    $STA?#              status query                       -> StatusQuery()
    $RST#               reset                              -> ResetCommand()

    $OK#                success, no data
    $OK,LED=ON,VOL=80#  success; data is KEY=VALUE pairs (the answer to $STA?#)
    $PARAM,<reason>#    a parameter is missing, extra or out of range
    $UNKNOWN,<reason>#  the verb is not in the table above
    $ERR# $TIMEOUT# $BUSY#  the device's own failures (seed 003 "Error Codes")

Decisions, so that every line gets exactly one reply:

- A line that is not a command at all (no ``$``…``#`` frame, non-ASCII or control bytes, an
  empty body) raises :class:`~xiaozhi.errors.SerialCommandError`; one over the length limit
  raises :class:`~xiaozhi.errors.PayloadTooLarge`. The console answers ``$ERR#`` to both
  (any ``WireError`` from this module).
- A well-framed line with an unknown verb or a bad parameter is *not* an exception:
  :func:`parse_command` returns a :class:`RejectedCommand` whose ``status`` is UNKNOWN or
  PARAM and whose :meth:`RejectedCommand.reply` is the line to send back.
- Numbers are plain ASCII decimals without sign, spaces or leading zeros, so every command
  has exactly one spelling: ``format_command(parse_command(line)) == line`` for every line
  that parses to a command.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias

from xiaozhi.errors import PayloadTooLarge, SerialCommandError

__all__ = [
    "LED_BRIGHTNESS_MAX",
    "MAX_LINE_CHARS",
    "VOLUME_MAX",
    "LedCommand",
    "RejectedCommand",
    "ResetCommand",
    "SerialCommand",
    "SerialReply",
    "SerialStatus",
    "SerialVerb",
    "StatusQuery",
    "VolumeCommand",
    "format_command",
    "format_reply",
    "format_status_reply",
    "parse_command",
    "parse_reply",
]

MAX_LINE_CHARS: Final = 128
"""Longest line accepted or produced, in characters, framing and terminator included."""

LED_BRIGHTNESS_MAX: Final = 255
VOLUME_MAX: Final = 100

_START: Final = "$"
_END: Final = "#"
_TERMINATORS: Final = "\r\n"
# Printable ASCII without the two framing characters.
_BODY_RE: Final = re.compile(r"[\x20-\x22\x25-\x7e]+")
_NUMBER_RE: Final = re.compile(r"0|[1-9][0-9]{0,2}")
_KEY_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")
_VALUE_RE: Final = re.compile(r"[\x20-\x22\x25-\x2b\x2d-\x3c\x3e-\x7e]+")  # no $ # , =
_QUOTE_CHARS: Final = 16


class SerialVerb(enum.StrEnum):
    """The command verbs of seed 003's examples."""

    LED = "LED"
    VOL = "VOL"
    STATUS = "STA?"
    RESET = "RST"


class SerialStatus(enum.StrEnum):
    """Reply status codes (seed 003 "Error Codes")."""

    OK = "OK"  # command successful
    ERR = "ERR"  # general error, and the answer to a line that is not a command
    PARAM = "PARAM"  # invalid parameter
    TIMEOUT = "TIMEOUT"  # command timeout
    BUSY = "BUSY"  # device busy
    UNKNOWN = "UNKNOWN"  # unknown command


_STATUS_VALUES: Final = frozenset(SerialStatus)


@dataclass(frozen=True, slots=True)
class LedCommand:
    """``$LED,ON[,<brightness>]#`` or ``$LED,OFF#``.

    ``brightness`` None means "keep the current brightness"; it is only allowed with ``on``.

    Raises:
        ValueError: brightness outside 0-255, or given with ``on=False`` (caller misuse).
    """

    verb: ClassVar[SerialVerb] = SerialVerb.LED
    on: bool
    brightness: int | None = None

    def __post_init__(self) -> None:
        if self.brightness is None:
            return
        if not self.on:
            raise ValueError("brightness is only sent with LED ON")
        if not 0 <= self.brightness <= LED_BRIGHTNESS_MAX:
            raise ValueError(f"brightness {self.brightness} outside 0-{LED_BRIGHTNESS_MAX}")


@dataclass(frozen=True, slots=True)
class VolumeCommand:
    """``$VOL,<volume>#``, volume 0-100.

    Raises:
        ValueError: volume outside 0-100 (caller misuse).
    """

    verb: ClassVar[SerialVerb] = SerialVerb.VOL
    volume: int

    def __post_init__(self) -> None:
        if not 0 <= self.volume <= VOLUME_MAX:
            raise ValueError(f"volume {self.volume} outside 0-{VOLUME_MAX}")


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """``$STA?#``: answer with :func:`format_status_reply`."""

    verb: ClassVar[SerialVerb] = SerialVerb.STATUS


@dataclass(frozen=True, slots=True)
class ResetCommand:
    """``$RST#``: answer ``$OK#``, then reset."""

    verb: ClassVar[SerialVerb] = SerialVerb.RESET


SerialCommand: TypeAlias = LedCommand | VolumeCommand | StatusQuery | ResetCommand


@dataclass(frozen=True, slots=True)
class RejectedCommand:
    """A well-framed line the device refuses; :meth:`reply` is the answer to send.

    Attributes:
        status: :attr:`SerialStatus.UNKNOWN` (verb not in the table) or
            :attr:`SerialStatus.PARAM` (missing, extra or out-of-range parameter).
        verb: The verb as received.
        reason: One short sentence quoting the bad value; safe to send as reply data.
    """

    status: SerialStatus
    verb: str
    reason: str

    def reply(self) -> str:
        """The reply line, e.g. ``$PARAM,volume '150' outside 0-100#``."""
        return format_reply(self.status, self.reason)


@dataclass(frozen=True, slots=True)
class SerialReply:
    """One reply line: a status and optional data.

    Raises:
        ValueError: ``data`` is empty, holds ``$``, ``#`` or non-printable characters, or the
            line would exceed :data:`MAX_LINE_CHARS` (caller misuse).
    """

    status: SerialStatus
    data: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", SerialStatus(self.status))
        if self.data is None:
            return
        if not _BODY_RE.fullmatch(self.data):
            raise ValueError(f"reply data {self.data!r} must be non-empty printable ASCII, no $ #")
        if len(self.line()) > MAX_LINE_CHARS:
            raise ValueError(f"reply line would exceed {MAX_LINE_CHARS} characters")

    def line(self) -> str:
        """The reply as sent, without a line terminator."""
        body = self.status if self.data is None else f"{self.status},{self.data}"
        return f"{_START}{body}{_END}"

    def fields(self) -> dict[str, str]:
        """The ``KEY=VALUE`` pairs of ``data`` (the answer to ``$STA?#``); {} without data.

        Raises:
            SerialCommandError: ``data`` is not comma-separated ``KEY=VALUE`` pairs with
                distinct upper-case keys.
        """
        if self.data is None:
            return {}
        pairs: dict[str, str] = {}
        for item in self.data.split(","):
            key, sep, value = item.partition("=")
            if not (sep and _KEY_RE.fullmatch(key) and _VALUE_RE.fullmatch(value)):
                raise SerialCommandError(f"reply item {_quote(item)} is not KEY=VALUE")
            if key in pairs:
                raise SerialCommandError(f"reply repeats key {_quote(key)}")
            pairs[key] = value
        return pairs


def _quote(text: str) -> str:
    # Bad values are quoted shortened, so a reason always fits in one reply line.
    if len(text) > _QUOTE_CHARS:
        text = text[: _QUOTE_CHARS - 3] + "..."
    return repr(text)


def _unframe(line: str | bytes, what: str) -> str:
    """Check length, encoding and ``$``…``#`` framing; return the body between them."""
    if len(line) > MAX_LINE_CHARS:
        raise PayloadTooLarge(size=len(line), limit=MAX_LINE_CHARS, what=f"serial {what} line")
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError as err:
            raise SerialCommandError(f"serial {what} line is not ASCII") from err
    text = line.rstrip(_TERMINATORS)
    if not (text.startswith(_START) and text.endswith(_END)):
        raise SerialCommandError(f"serial {what} line {_quote(text)} is not framed as $...#")
    body = text[1:-1]
    if not body:
        raise SerialCommandError(f"serial {what} line is empty")
    if not _BODY_RE.fullmatch(body):
        raise SerialCommandError(
            f"serial {what} line {_quote(text)} holds $, # or non-printable characters"
        )
    return body


def _number(text: str, maximum: int) -> int | None:
    if not _NUMBER_RE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= maximum else None


def parse_command(line: str | bytes) -> SerialCommand | RejectedCommand:
    """Parse one console line into a command, or into the refusal to answer with.

    Args:
        line: One line as read from the console, with or without its CR/LF terminator.

    Returns:
        A command, or a :class:`RejectedCommand` (status UNKNOWN or PARAM) whose
        :meth:`~RejectedCommand.reply` the console sends back.

    Raises:
        PayloadTooLarge: the line exceeds :data:`MAX_LINE_CHARS`.
        SerialCommandError: the line is not a ``$``…``#`` frame of printable ASCII with a
            non-empty body. Answer ``$ERR#``.
    """
    verb, *params = _unframe(line, "command").split(",")

    def param_error(reason: str) -> RejectedCommand:
        return RejectedCommand(SerialStatus.PARAM, verb, reason)

    match verb:
        case SerialVerb.LED:
            if not params or len(params) > 2:
                return param_error("LED takes ON or OFF and an optional brightness")
            state, *rest = params
            if state == "OFF":
                if rest:
                    return param_error("LED OFF takes no brightness")
                return LedCommand(on=False)
            if state != "ON":
                return param_error(f"LED state {_quote(state)} is not ON or OFF")
            if not rest:
                return LedCommand(on=True)
            brightness = _number(rest[0], LED_BRIGHTNESS_MAX)
            if brightness is None:
                return param_error(
                    f"brightness {_quote(rest[0])} is not an integer 0-{LED_BRIGHTNESS_MAX}"
                )
            return LedCommand(on=True, brightness=brightness)
        case SerialVerb.VOL:
            if len(params) != 1:
                return param_error("VOL takes one volume 0-100")
            volume = _number(params[0], VOLUME_MAX)
            if volume is None:
                return param_error(f"volume {_quote(params[0])} is not an integer 0-{VOLUME_MAX}")
            return VolumeCommand(volume)
        case SerialVerb.STATUS | SerialVerb.RESET:
            if params:
                return param_error(f"{verb} takes no parameters")
            return StatusQuery() if verb == SerialVerb.STATUS else ResetCommand()
        case _:
            return RejectedCommand(SerialStatus.UNKNOWN, verb, f"unknown command {_quote(verb)}")


def format_command(command: SerialCommand) -> str:
    """Format a command as its one canonical line (no terminator); inverse of parse_command.

    Args:
        command: The command to send to a device's console.

    Returns:
        The line, e.g. ``$LED,ON,255#``.

    Raises:
        TypeError: ``command`` is not one of the command classes.
    """
    match command:
        case LedCommand(on=False):
            params = ["OFF"]
        case LedCommand(brightness=None):
            params = ["ON"]
        case LedCommand(brightness=brightness):
            params = ["ON", str(brightness)]
        case VolumeCommand(volume=volume):
            params = [str(volume)]
        case StatusQuery() | ResetCommand():
            params = []
        case _:
            raise TypeError(f"not a serial command: {command!r}")
    return _START + ",".join([command.verb, *params]) + _END


def format_reply(status: SerialStatus, data: str | None = None) -> str:
    """Format a reply line (no terminator): ``$OK#``, ``$PARAM,<reason>#``.

    Args:
        status: The seed-003 status code.
        data: Optional printable ASCII without ``$`` or ``#``.

    Returns:
        The line.

    Raises:
        ValueError: ``data`` is empty or unsafe, or the line would be too long.
    """
    return SerialReply(status, data).line()


def format_status_reply(values: Mapping[str, str | int]) -> str:
    """Format the answer to ``$STA?#``: ``$OK,LED=ON,BRI=255,VOL=80#``, in mapping order.

    Args:
        values: Upper-case keys (``[A-Z][A-Z0-9_]*``) to values without ``$ # , =``;
            ints are written in decimal. An empty mapping gives ``$OK#``.

    Returns:
        The line.

    Raises:
        ValueError: a key or value does not fit the grammar, or the line would be too long.
    """
    items: list[str] = []
    for key, value in values.items():
        text = str(value)
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"status key {key!r} must match [A-Z][A-Z0-9_]*")
        if not _VALUE_RE.fullmatch(text):
            raise ValueError(f"status value {text!r} must be printable ASCII without $ # , =")
        items.append(f"{key}={text}")
    return format_reply(SerialStatus.OK, ",".join(items) or None)


def parse_reply(line: str | bytes) -> SerialReply:
    """Parse one reply line read back from a device's console.

    Args:
        line: One line, with or without its CR/LF terminator.

    Returns:
        The reply; use :meth:`SerialReply.fields` for ``$STA?#`` data.

    Raises:
        PayloadTooLarge: the line exceeds :data:`MAX_LINE_CHARS`.
        SerialCommandError: not a ``$``…``#`` frame, an unknown status, or empty data
            after the comma.
    """
    status, sep, data = _unframe(line, "reply").partition(",")
    if status not in _STATUS_VALUES:
        raise SerialCommandError(f"unknown reply status {_quote(status)}")
    if sep and not data:
        raise SerialCommandError("reply has a comma but no data")
    return SerialReply(SerialStatus(status), data or None)
