"""The managed Mosquitto runs mosquitto/dev.conf, keeps retained state across restarts, finds
a port when asked for any, and stops cleanly (exit code 0) whatever state it is in."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from xiaozhi_cli.broker import BrokerStartError, ManagedMosquitto

pytestmark = pytest.mark.integration


def _pub(broker: ManagedMosquitto, topic: str, payload: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-r", "-t", topic, "-m", payload],
        check=True,
        timeout=10,
    )


def _read_retained(broker: ManagedMosquitto, topic: str) -> str:
    got = subprocess.run(
        ["mosquitto_sub", "-p", str(broker.port), "-t", topic, "-C", "1", "-W", "10"],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    )
    return got.stdout.strip()


def test_retained_state_survives_a_clean_broker_restart(tmp_path: Path) -> None:
    broker = ManagedMosquitto(tmp_path)
    broker.start()
    try:
        _pub(broker, "xiaozhi/status/dev1", '{"status":"connected"}')
        port = broker.port
        assert broker.stop() == 0
        broker.start()
        assert broker.port == port, "a restart keeps the port its clients know"
        assert _read_retained(broker, "xiaozhi/status/dev1") == '{"status":"connected"}'
    finally:
        assert broker.stop() == 0


def test_a_broker_stopped_right_after_it_started_exits_cleanly_at_once(tmp_path: Path) -> None:
    """Mosquitto loses a SIGTERM that comes just before its main loop runs (cli/broker.py);
    `start()` waits for the loop and `stop()` repeats the signal, so no stop waits it out."""
    for attempt in range(5):
        broker = ManagedMosquitto(tmp_path / str(attempt))
        broker.start()
        began = time.monotonic()
        assert broker.stop(timeout=30) == 0
        assert time.monotonic() - began < 5, "stop() waited for a signal the broker lost"
        assert not broker.running


def test_a_stopped_broker_is_continued_and_exits_cleanly(tmp_path: Path) -> None:
    broker = ManagedMosquitto(tmp_path)
    broker.start()
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # as a debugger or Ctrl-Z would leave it
    began = time.monotonic()
    assert broker.stop(timeout=30) == 0
    assert time.monotonic() - began < 5


def test_stop_without_a_start_returns_none(tmp_path: Path) -> None:
    assert ManagedMosquitto(tmp_path).stop() is None


def test_a_picked_port_taken_before_the_broker_binds_it_is_picked_again(tmp_path: Path) -> None:
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        broker = ManagedMosquitto(tmp_path)  # port 0: it picks one now, Mosquitto binds it later
        broker.port = taken = thief.getsockname()[1]  # ... and another process took it meanwhile
        broker.start()
        try:
            assert broker.port != taken
            _pub(broker, "xiaozhi/test/picked", "again")
            assert _read_retained(broker, "xiaozhi/test/picked") == "again"
        finally:
            assert broker.stop() == 0


def test_a_given_port_that_is_taken_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        broker = ManagedMosquitto(tmp_path, port=port)
        with pytest.raises(BrokerStartError, match="XIAOZHI_BROKER_PORT") as info:
            broker.start()
    assert "Address already in use" in str(info.value)
    assert broker.port == port


def test_generated_config_is_dev_conf_behind_the_owned_lines(tmp_path: Path) -> None:
    with ManagedMosquitto(tmp_path) as broker:
        text = (tmp_path / "mosquitto.conf").read_text()
        assert f"listener {broker.port} 127.0.0.1" in text
        # the measured answers of design.md section 8 are in force
        for line in ("set_tcp_nodelay true", "autosave_interval 1", "max_queued_messages 100000"):
            assert line in text
        assert broker.stop() == 0


def test_a_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("this_is_not_an_option 1\n")
    with pytest.raises(BrokerStartError, match="this_is_not_an_option"):
        ManagedMosquitto(tmp_path / "state", config=bad).start(timeout=10)
