"""mosquitto/production.conf run for real in a test: its three listeners, its ACL files, its
password files (made with `mosquitto_passwd -b`) and a TLS certificate made here.

Only what cannot run in a test is rewritten: the container paths become files in a temporary
folder, the private listener's port is the one :class:`ManagedMosquitto` picks (its `listener`
line is dropped, so the options that follow it apply to the runner's listener), and the public
and private TLS listeners get other free loopback ports. Every authentication and access
directive stays as the file has it, so a test shows what a deployment does.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xiaozhi_cli.broker import BrokerStartError, ManagedMosquitto, _free_port, find_mosquitto

REPO = Path(__file__).resolve().parent.parent
PRODUCTION_CONF = REPO / "mosquitto" / "production.conf"
PRIVATE_PORT, PUBLIC_PORT, PRIVATE_TLS_PORT = 1883, 8883, 8884  # production.conf's listeners
_CONTAINER_CONFIG = "/mosquitto/config/"
_CONTAINER_CERTS = "/mosquitto/certs/"
_START_ATTEMPTS = 3  # the public port was free when picked; another process may take it


def password(user: str) -> str:
    """Every test user's password."""
    return f"pw-{user}"


def make_certificate(folder: Path) -> Path:
    """A self-signed server certificate for 127.0.0.1 (EC P-256: quick to make) made with the
    `openssl` command docs/operations.md names, written as `server.crt`, `server.key` and
    `ca.crt` (itself); returns the certificate's path."""
    folder.mkdir(parents=True, exist_ok=True)
    certificate = folder / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(folder / "server.key"), "-out", str(certificate)],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    shutil.copyfile(certificate, folder / "ca.crt")
    return certificate


def add_users(password_file: Path, users: Iterable[str]) -> None:
    """Create (or extend) a Mosquitto password file, as docs/operations.md says to."""
    for user in users:
        create = [] if password_file.exists() else ["-c"]
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(password_file), user, password(user)],
            check=True,
            capture_output=True,
            timeout=10,
        )


@dataclass(frozen=True)
class ProductionBroker:
    """The running broker: where each listener is, and a TLS context that trusts it."""

    broker: ManagedMosquitto
    public_port: int
    private_tls_port: int
    tls: ssl.SSLContext
    ca_file: Path  # the CA that signed the broker's certificate (XIAOZHI_MQTT_CA_FILE)

    @property
    def private_port(self) -> int:
        return self.broker.port

    def private_url(self, user: str) -> str:
        """`mqtt://user:password@127.0.0.1:<private>`, what an edge or a hub is given."""
        return f"mqtt://{user}:{password(user)}@127.0.0.1:{self.private_port}"

    def public_url(self, user: str) -> str:
        """The public listener (TLS: pass :attr:`tls` to the client)."""
        return f"mqtt://{user}:{password(user)}@127.0.0.1:{self.public_port}"

    def private_tls_url(self, user: str) -> str:
        """`mqtts://user:password@127.0.0.1:<private TLS>`, for an edge or hub on another host
        (with :attr:`ca_file` as its XIAOZHI_MQTT_CA_FILE)."""
        return f"mqtts://{user}:{password(user)}@127.0.0.1:{self.private_tls_port}"


def _config_text(folder: Path, public_port: int, private_tls_port: int) -> str:
    """production.conf with this test's paths and ports."""
    text = PRODUCTION_CONF.read_text(encoding="utf-8")
    text = text.replace(_CONTAINER_CONFIG + "acl", str(REPO / "mosquitto" / "acl"))
    text = text.replace(_CONTAINER_CONFIG, f"{folder}/").replace(_CONTAINER_CERTS, f"{folder}/")
    lines = []
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["listener", str(PRIVATE_PORT)] or words[:1] == ["persistence_location"]:
            continue  # the runner's listener and state folder take their place
        moved = {str(PUBLIC_PORT): public_port, str(PRIVATE_TLS_PORT): private_tls_port}
        if words[:1] == ["listener"] and words[1] in moved:
            lines.append(f"listener {moved[words[1]]} 127.0.0.1")
        else:
            lines.append(line)
    lines.append("log_type information")  # the "running" line the runner waits for
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def production_broker(
    folder: Path, *, private: Iterable[str], public: Iterable[str]
) -> Iterator[ProductionBroker]:
    """Run production.conf with `private` users in the private listener's password file
    (`passwords-private`) and `public` users in the public one's (`passwords-public`); a
    password file of another name (one for the whole broker) gets both. Stopped when the
    block ends.

    Raises:
        AssertionError: production.conf no longer has the three listeners this expects.
    """
    find_mosquitto()
    private, public = tuple(private), tuple(public)
    text = PRODUCTION_CONF.read_text(encoding="utf-8")
    listeners = re.findall(r"^listener (\d+)", text, re.M)
    expected = [str(PRIVATE_PORT), str(PUBLIC_PORT), str(PRIVATE_TLS_PORT)]
    assert listeners == expected, f"listeners: {listeners}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in re.findall(r"^password_file \S*/([^/\s]+)$", text, re.M):
        users = {"passwords-private": private, "passwords-public": public}.get(name)
        add_users(folder / name, users if users is not None else [*private, *public])
    tls = ssl.create_default_context(cafile=make_certificate(folder))
    config = folder / "production-test.conf"
    for attempt in range(1, _START_ATTEMPTS + 1):
        public_port, private_tls_port = _free_port(), _free_port()
        text = _config_text(folder, public_port, private_tls_port)
        config.write_text(text, encoding="utf-8")
        broker = ManagedMosquitto(folder / "state", config=config)
        try:
            broker.start()
        except BrokerStartError:
            taken = any("Address already in use" in line for line in broker.log)
            if not taken or attempt == _START_ATTEMPTS:
                raise
            continue
        try:
            yield ProductionBroker(broker, public_port, private_tls_port, tls, folder / "ca.crt")
        finally:
            broker.stop()
        return
