"""The device's serial console (seed 003 "Serial Protocol") on a pseudo-terminal.

:class:`SerialConsole` is the pure part: bytes in, reply bytes out, and what changed. It frames
lines on ``#`` (the seed's END) or CR/LF, answers each with exactly one reply line ending in
CR LF, and applies commands to the :class:`~xiaozhi_sim.model.DeviceModel` through
:mod:`xiaozhi.serial_console`:

* ``$LED,ON,255#`` / ``$LED,OFF#`` switch the light, ``$VOL,80#`` sets the volume -> ``$OK#``;
* ``$STA?#`` -> ``$OK,STATE=IDLE,LED=ON,BRI=255,VOL=80,UP=12#``;
* ``$RST#`` -> ``$OK#``, then the device reboots;
* an unknown verb -> ``$UNKNOWN,...#``, a bad parameter -> ``$PARAM,...#``, anything that is
  not a ``$...#`` command (or too long) -> ``$ERR#``.

:class:`PtySerialPort` is the thin transport: ``os.openpty()``, the slave side set raw (no echo,
no line editing, as a USB serial port at 115200 8N1), the master side read by the event loop.
Anything that opens the slave path (``screen``, ``minicom``, pyserial) talks to the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from dataclasses import dataclass

from xiaozhi.errors import WireError
from xiaozhi.serial_console import (
    MAX_LINE_CHARS,
    LedCommand,
    RejectedCommand,
    ResetCommand,
    SerialStatus,
    StatusQuery,
    VolumeCommand,
    format_reply,
    format_status_reply,
    parse_command,
)
from xiaozhi_sim.model import DeviceModel

__all__ = ["PtySerialPort", "SerialConsole", "SerialOutput"]

_EOL = b"\r\n"


@dataclass(frozen=True, slots=True)
class SerialOutput:
    """What one :meth:`SerialConsole.feed` produced.

    Attributes:
        reply: the reply lines to write back (each ends in CR LF).
        changed: a command changed the device (publish a status).
        reset: ``$RST#`` was answered: reboot now.
    """

    reply: bytes = b""
    changed: bool = False
    reset: bool = False


class SerialConsole:
    """Seed 003's console for one device.

    Args:
        model: the hardware the commands change.
    """

    def __init__(self, model: DeviceModel) -> None:
        self.model = model
        self.lines = 0
        self._buffer = bytearray()
        self._discarding = False  # an over-long line is being skipped up to its end

    def feed(self, data: bytes, now: float) -> SerialOutput:
        """Take bytes as read from the port; answer every complete line."""
        replies: list[bytes] = []
        changed = reset = False

        def finish(line: bytes) -> None:
            nonlocal changed, reset
            reply, line_changed, line_reset = self._answer(line, now)
            replies.append(reply)
            changed, reset = changed or line_changed, reset or line_reset

        for byte in data:
            if byte in b"\r\n":
                # A line ends without `#`: not a command ($ERR#), unless blank or skipped.
                line, discarding = bytes(self._buffer), self._discarding
                self._buffer.clear()
                self._discarding = False
                if line.strip() and not discarding:
                    finish(line)
                continue
            if self._discarding:
                continue
            self._buffer.append(byte)
            if byte == ord("#"):
                line = bytes(self._buffer)
                self._buffer.clear()
                finish(line)
            elif len(self._buffer) > MAX_LINE_CHARS:
                self._buffer.clear()
                self._discarding = True
                self.lines += 1
                replies.append(format_reply(SerialStatus.ERR).encode() + _EOL)
        return SerialOutput(b"".join(replies), changed, reset)

    def _answer(self, line: bytes, now: float) -> tuple[bytes, bool, bool]:
        """Run one line: ``(reply line, changed, reset)``; always exactly one reply."""
        self.lines += 1
        try:
            command = parse_command(line)
        except WireError:
            return format_reply(SerialStatus.ERR).encode() + _EOL, False, False
        model = self.model
        changed = reset = False
        match command:
            case RejectedCommand():
                text = command.reply()
            case LedCommand(on=on, brightness=brightness):
                model.set_light(on, brightness)
                text, changed = format_reply(SerialStatus.OK), True
            case VolumeCommand(volume=volume):
                model.set_volume(volume)
                text, changed = format_reply(SerialStatus.OK), True
            case StatusQuery():
                text = format_status_reply(model.serial_status(now))
            case ResetCommand():
                text, reset = format_reply(SerialStatus.OK), True
        return text.encode() + _EOL, changed, reset


class PtySerialPort:
    """A pseudo-terminal whose slave path is the device's "USB serial port".

    Args:
        console: the protocol object.
        clock: monotonic seconds (the event loop's clock by default).
        on_change: called after a command changed the device.
        on_reset: called after ``$RST#`` was answered.
    """

    def __init__(
        self,
        console: SerialConsole,
        *,
        clock: Callable[[], float] | None = None,
        on_change: Callable[[], None] | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.console = console
        self.on_change = on_change
        self.on_reset = on_reset
        self.path: str | None = None
        self._clock = clock
        self._master: int | None = None
        self._slave: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> str:
        """Create the pty and start serving it; return the slave path (``/dev/pts/N``).

        Must be called from the running event loop.
        """
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass as on a UART
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        self._loop.add_reader(master, self._readable)
        return self.path

    def _readable(self) -> None:
        assert self._master is not None
        assert self._loop is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process holds the slave open (we keep ours, so rarely)
            return
        now = self._clock() if self._clock else self._loop.time()
        out = self.console.feed(data, now)
        if out.reply:
            with contextlib.suppress(BlockingIOError):
                os.write(self._master, out.reply)
        if out.changed and self.on_change:
            self.on_change()
        if out.reset and self.on_reset:
            self.on_reset()

    def close(self) -> None:
        """Stop serving and release both ends."""
        if self._master is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._master)
            os.close(self._master)
            self._master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
