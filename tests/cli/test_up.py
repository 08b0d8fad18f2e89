"""`xiaozhi up` as a newcomer runs it: a subprocess, real Mosquitto, Ctrl-C to stop."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LineReader, pid_alive, refused_port
from xiaozhi_cli.broker import ManagedMosquitto
from xiaozhi_cli.main import _watch_command

XIAOZHI = shutil.which("xiaozhi") or str(Path(sys.executable).with_name("xiaozhi"))


def _env(**extra: str) -> dict[str, str]:
    """A clean environment: port 0 everywhere (no fixed 1883/8000/8003: `up` says which ports
    it got), no demo devices."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOZHI_")}
    env.update(
        XIAOZHI_BROKER_PORT="0",
        XIAOZHI_EDGE_PORT="0",
        XIAOZHI_HUB_PORT="0",
        XIAOZHI_EDGE_HOST="127.0.0.1",
        XIAOZHI_HUB_HOST="127.0.0.1",
        XIAOZHI_DEMO_DEVICES="false",
        XIAOZHI_STT_ENGINE="none",  # nothing is spoken here: no recogniser to build
    )
    env.update(extra)
    return env


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    process = subprocess.Popen(
        [XIAOZHI, "up"],
        env=_env(XIAOZHI_STATE_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, LineReader(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.integration
def test_up_runs_a_broker_clients_can_use_and_ctrl_c_stops_it(
    up_process: tuple[subprocess.Popen[str], LineReader],
) -> None:
    process, reader = up_process
    line = reader.wait_for("broker    mqtt://")
    found = re.search(r"mqtt://127\.0\.0\.1:(\d+) \(managed mosquitto, pid (\d+)\)", line)
    assert found, line
    port, broker_pid = int(found.group(1)), int(found.group(2))
    assert port != 0, "port 0 asks for any free port; `up` says which one it got"
    live = reader.wait_for("live      ")
    reader.wait_for("ready     press Ctrl-C")

    # The banner's watch command works as printed: another directory, a shell without the
    # state dir `up` was given (the key is found through what the command says).
    command = live.split("live", 1)[1].split(" (the fleet", 1)[0].strip()
    env = _env()
    env["PATH"] = f"{Path(XIAOZHI).parent}{os.pathsep}{env.get('PATH', '')}"
    watched = subprocess.run(
        ["sh", "-c", f"{command} --count 1 --plain"],
        cwd=Path(XIAOZHI).anchor,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert watched.returncode == 0, watched.stderr

    # An integrator's view: the real CLI clients publish a retained message and read it back.
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-t", "xiaozhi/test/hello", "-m", '{"ok":true}', "-r"],
        check=True,
        timeout=10,
    )
    got = subprocess.run(
        ["mosquitto_sub", "-p", str(port), "-t", "xiaozhi/test/hello", "-C", "1", "-W", "10"],
        check=True,
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert got.stdout.strip() == '{"ok":true}'

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0
    assert "stopped" in reader.rest()[-1]
    assert not pid_alive(broker_pid), "the managed broker outlived `xiaozhi up`"


@pytest.mark.integration
def test_up_uses_an_external_broker_when_mqtt_url_is_set(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [XIAOZHI, "up"],
        env=_env(XIAOZHI_MQTT_URL=mosquitto.url, XIAOZHI_STATE_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = LineReader(process)
    try:
        assert "external" in reader.wait_for(mosquitto.url)
        # A real installation's broker: the demo home acts on nothing real, and no simulated
        # devices join it, unless asked for.
        reader.wait_for(
            "home      demo, every entity virtual (XIAOZHI_DEMO_BINDINGS=true binds them)"
        )
        reader.wait_for("devices   no simulated ones (XIAOZHI_DEMO_DEVICES=true starts three)")
        reader.wait_for("ready     press Ctrl-C")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert mosquitto.running, "stopping `up` must not stop a broker it does not own"


@pytest.mark.integration
def test_up_says_clearly_when_the_broker_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [XIAOZHI, "up"],
            env=_env(XIAOZHI_BROKER_PORT=str(port), XIAOZHI_STATE_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert "did not start" in result.stderr
    assert "XIAOZHI_BROKER_PORT" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("setting", ["XIAOZHI_EDGE_PORT", "XIAOZHI_HUB_PORT"])
def test_up_names_a_taken_edge_or_hub_port_and_its_setting(tmp_path: Path, setting: str) -> None:
    """Another program holds the port: `up` says which port and which setting, stops what it
    had started (the broker) and exits with status 2, without a Ctrl-C."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [XIAOZHI, "up"],
            env=_env(**{setting: str(port)}, XIAOZHI_STATE_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert f"set {setting} to another port" in result.stderr
    assert "in use" in result.stderr
    broker = re.search(r"managed mosquitto, pid (\d+)", result.stdout)
    assert broker, result.stdout
    assert not pid_alive(int(broker.group(1))), "the broker it started is stopped"


def test_up_refuses_an_unreachable_external_broker(tmp_path: Path) -> None:
    with refused_port() as port:
        url = f"mqtt://127.0.0.1:{port}"
        result = subprocess.run(
            [XIAOZHI, "up"],
            env=_env(XIAOZHI_MQTT_URL=url, XIAOZHI_STATE_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"broker {url} is not reachable" in result.stderr


def test_up_lists_every_invalid_setting_with_its_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [XIAOZHI, "up"],
        env=_env(XIAOZHI_BROKER_PORT="70000", XIAOZHI_MQTT_URL="http://broker"),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "XIAOZHI_BROKER_PORT='70000'" in result.stderr
    assert "XIAOZHI_MQTT_URL='http://broker'" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("verbose", [False, True])
def test_up_keeps_log_lines_in_a_file_unless_verbose(tmp_path: Path, verbose: bool) -> None:
    """The terminal shows the summary lines people read; the components' log lines go to
    <state>/logs/xiaozhi.log (one JSON object per line), or to the terminal with --verbose."""
    process = subprocess.Popen(
        [XIAOZHI, "up", *(["--verbose"] if verbose else [])],
        env=_env(XIAOZHI_STATE_DIR=str(tmp_path), XIAOZHI_DEMO_DEVICES="false"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = LineReader(process)
    try:
        reader.wait_for("ready     press Ctrl-C")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = "\n".join([*reader.lines, *reader.rest()])
    log_file = tmp_path / "logs" / "xiaozhi.log"
    if verbose:
        assert "edge_listening" in output
        assert not log_file.exists()
    else:
        assert "edge_listening" not in output, output
        assert f"logs      {log_file} (xiaozhi up --verbose shows them here)" in output
        events = [json.loads(line)["event"] for line in log_file.read_text().splitlines()]
        assert {"edge_listening", "mqtt_connected"} <= set(events)


def test_the_banners_watch_command_carries_the_key_given_and_a_self_signed_certificate(
    tmp_path: Path,
) -> None:
    """Under XIAOZHI_API_KEYS there is no key file: the command names the (first) key; a
    certificate the hub made itself is trusted through SSL_CERT_FILE. (The key file case
    runs for real above.)"""
    cert = tmp_path / "hub-tls-cert.pem"
    command = _watch_command(
        "https://127.0.0.1:8003", tmp_path, api_keys="k1:read,k2", self_signed=cert
    )
    assert command == (
        f"XIAOZHI_API_KEY=k1 SSL_CERT_FILE={cert} xiaozhi watch --url https://127.0.0.1:8003"
    )
