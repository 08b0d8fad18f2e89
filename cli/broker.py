"""A managed Mosquitto child process: the broker of `xiaozhi up` and of the test suite.

One way to run the broker, used by both, so the tests exercise the very configuration a
newcomer runs. The config is `mosquitto/dev.conf` with the lines this runner owns for each
start (listener and persistence location) put in front of it.

Readiness is an event, not a sleep: a thread drains the broker's log and sets `ready` when
Mosquitto says it is running; the same thread keeps draining so the pipe never fills up and
stalls the broker. On Linux the child gets SIGTERM if this process dies (no orphan broker).

Two facts of Mosquitto 2.0 (checked on 2.0.11 to 2.0.18, `src/mosquitto.c`) shape start and stop:

* It installs its SIGTERM handler, logs "running", and only then sets `run = 1`; the handler
  sets `run = 0`. A SIGTERM that lands between the log line and `run = 1` (a loaded machine
  preempts the broker right after its write) is overwritten and lost: the broker keeps
  running and `stop()` used to wait its whole timeout, then SIGKILL it (no final
  persistence write). So `start()` returns only once the broker answered an MQTT CONNECT,
  which its main loop does after `run = 1`; and `stop()` repeats SIGTERM (with SIGCONT, for
  a stopped broker) until the broker exits, and SIGKILLs it only after its timeout.
* The listen port is written into its config file, so port 0 cannot be handed to Mosquitto.
  For "any free port" a port is picked that was free a moment ago; if another process takes
  it before Mosquitto binds it ("Address already in use"), `start()` picks another and tries
  again, a few times. An explicitly given port is never changed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from xiaozhi.errors import StartupError

__all__ = [
    "DEV_CONFIG",
    "BrokerStartError",
    "ManagedMosquitto",
    "find_mosquitto",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_CONFIG = REPO_ROOT / "mosquitto" / "dev.conf"
_READY_MARK = " running"  # "mosquitto version 2.0.11 running"
_PORT_TAKEN_MARK = "Address already in use"  # "Error: Address already in use"
_PORT_ATTEMPTS = 5  # picks of a free port before giving up (only when asked for port 0)
_LOG_LINES_KEPT = 200
_SIGTERM_REPEAT_SECONDS = 0.5  # a lost SIGTERM (module docstring) is sent again this often
_PROBE_CLIENT_ID = b"xiaozhi-broker-probe"


@dataclass(slots=True)
class _Readiness:
    """One start's outcome: `event` wakes `start()`; `up` says Mosquitto reported running
    (an EOF alone proves nothing)."""

    event: threading.Event = field(default_factory=threading.Event)
    up: bool = False


class BrokerStartError(StartupError):
    """The broker did not start; the message carries its last log lines."""


def find_mosquitto() -> str:
    """Return the path of the `mosquitto` binary (Debian puts it in /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerStartError(
            "mosquitto is not installed: run 'make up' (as root it installs it) "
            "or 'apt-get install mosquitto mosquitto-clients'"
        )
    return found


def _free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (the OS picks it), for Mosquitto only.

    Another process may take it before Mosquitto binds it (`start()` then picks again);
    servers that can bind port 0 themselves (the edge, the hub) do, and report the port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _mqtt_connect_packet(client_id: bytes) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, no keepalive) for `client_id` (< 100 bytes)."""
    variable = b"\x00\x04MQTT\x04\x02\x00\x00"
    payload = len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(variable) + len(payload)]) + variable + payload


def _answers_mqtt(host: str, port: int, timeout: float) -> bool:
    """True once the broker's main loop answered a CONNECT (a CONNACK, or a refusal that
    closes the connection): only then does it honour SIGTERM (module docstring)."""
    connect_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((connect_host, port), timeout=timeout) as sock:
            sock.sendall(_mqtt_connect_packet(_PROBE_CLIENT_ID + b"-%d" % os.getpid()))
            sock.recv(4)  # CONNACK (any return code), or b"" when the broker closed on us
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT: no "closed its connection" warning
            return True
    except OSError:
        return False


def _die_with_parent(argv: list[str]) -> list[str]:
    """Prefix argv so Linux sends the broker SIGTERM when the process that started it dies.

    `setpriv --pdeathsig` (util-linux) sets it between fork and exec without running Python
    in the child: a `preexec_fn` doing the same can deadlock a process that has threads.
    """
    setpriv = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None or not sys.platform.startswith("linux"):
        return argv  # pragma: no cover - Debian always has util-linux
    return [setpriv, "--pdeathsig", "TERM", *argv]


class ManagedMosquitto:
    """Mosquitto as a child process on a loopback port.

    Args:
        state_dir: where the generated config and the persistence file live. Survives
            restarts of the broker on purpose (retained state and queued QoS 1 messages).
        port: TCP port; 0 picks a free one (and another if it was taken meanwhile: see the
            module docstring). The port in use is `port` after `start()`.
        host: listen address; loopback by default.
        config: the shared body of the config (default `mosquitto/dev.conf`).

    Use as a context manager, or call `start()`/`stop()`. `restart()` keeps the port and the
    persistence file, which is what a "broker restart" test needs.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        config: Path = DEV_CONFIG,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self._pick_port = port == 0
        self.port = port or _free_port(host)
        self.config = config
        self.log: collections.deque[str] = collections.deque(maxlen=_LOG_LINES_KEPT)
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        """`mqtt://host:port`, the form `XIAOZHI_MQTT_URL` takes."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def write_config(self) -> Path:
        """Write the config for this start and return its path."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "mosquitto.conf"
        owned = (
            "# Generated by xiaozhi (cli/broker.py) for this start; edit mosquitto/dev.conf.\n"
            f"listener {self.port} {self.host}\n"
            # Run as whoever started us: as root, Mosquitto would otherwise switch to user
            # `mosquitto`, which cannot write a state dir this process created.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            f"persistence_location {self.state_dir}/\n\n"
        )
        path.write_text(owned + self.config.read_text(encoding="utf-8"), encoding="utf-8")
        return path

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once it answers MQTT clients.

        Raises:
            BrokerStartError: the binary is missing, the port is taken, or the broker did
                not report itself running within `timeout` seconds.
        """
        if self.running:
            return
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                self._start_once(timeout)
            except BrokerStartError:
                taken = any(_PORT_TAKEN_MARK in line for line in self.log)
                if not (taken and self._pick_port and attempt < _PORT_ATTEMPTS):
                    raise
                self.port = _free_port(self.host)  # taken since it was picked: pick again
            else:
                self._pick_port = False  # restarts keep the port (and the clients' URL)
                return

    def _start_once(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        binary = find_mosquitto()
        config_path = self.write_config()
        self.log.clear()
        self._process = subprocess.Popen(
            _die_with_parent([binary, "-c", str(config_path)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            # Its own session: a Ctrl-C at the terminal goes to `up`, which stops the broker
            # last, after the hub and edge have published their offline state through it.
            start_new_session=True,
        )
        # Readiness belongs to this start: a killed predecessor's log thread, reaching its EOF
        # later, must not wake this one.
        readiness = _Readiness()
        threading.Thread(
            target=self._drain, args=(self._process, readiness), name="mosquitto-log", daemon=True
        ).start()
        up = readiness.event.wait(timeout) and readiness.up and self.running
        # "running" is logged a moment before the broker heeds SIGTERM: wait for its main loop
        while up and not _answers_mqtt(self.host, self.port, max(deadline - time.monotonic(), 0.1)):
            up = self.running and time.monotonic() < deadline
        if not up:
            self.stop()
            tail = "\n".join(list(self.log)[-15:])
            raise BrokerStartError(
                f"mosquitto did not start on {self.host}:{self.port} within {timeout:.0f} s"
                f" (port taken? set XIAOZHI_BROKER_PORT). Its log:\n{tail}"
            )

    def _drain(self, process: subprocess.Popen[str], readiness: _Readiness) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if self._process is process:
                self.log.append(line.rstrip())
            if _READY_MARK in line and "version" in line:
                readiness.up = True
                readiness.event.set()
        # EOF comes a moment before the exit can be reaped: reap first, so that a waiter
        # woken here sees a broker that is not running.
        process.wait()
        readiness.event.set()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the broker cleanly and return its exit code (0 for a clean stop).

        SIGTERM, repeated every half second (with SIGCONT, should the broker be stopped) since
        Mosquitto loses one that comes before its main loop runs (module docstring); SIGKILL
        after `timeout` seconds, which returns -9. None when no broker was started.
        """
        process, self._process = self._process, None
        if process is None:
            return None
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                process.kill()
                break
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
                process.send_signal(signal.SIGCONT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(min(left, _SIGTERM_REPEAT_SECONDS))
        return process.wait()

    def kill(self) -> None:
        """Kill the broker abruptly (SIGKILL), as a crash would; for fault tests."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port with the same persistence file."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> ManagedMosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
