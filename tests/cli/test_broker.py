"""The managed Mosquitto runs mosquitto/dev.conf and keeps retained state across restarts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from xiaozhi_cli.broker import BrokerStartError, ManagedMosquitto


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
    with ManagedMosquitto(tmp_path) as broker:
        _pub(broker, "xiaozhi/status/dev1", '{"status":"connected"}')
        broker.restart()
        assert _read_retained(broker, "xiaozhi/status/dev1") == '{"status":"connected"}'


def test_generated_config_is_dev_conf_behind_the_owned_lines(tmp_path: Path) -> None:
    with ManagedMosquitto(tmp_path) as broker:
        text = (tmp_path / "mosquitto.conf").read_text()
        assert f"listener {broker.port} 127.0.0.1" in text
        # the measured answers of design.md section 8 are in force
        for line in ("set_tcp_nodelay true", "autosave_interval 1", "max_queued_messages 100000"):
            assert line in text


def test_a_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("this_is_not_an_option 1\n")
    with pytest.raises(BrokerStartError, match="this_is_not_an_option"):
        ManagedMosquitto(tmp_path / "state", config=bad).start(timeout=10)
