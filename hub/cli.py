"""``xiaozhi hub``: run the hub (MQTT units + HTTP on ``XIAOZHI_HUB_PORT``) until Ctrl-C.

``cli/main.py`` registers it with :func:`add_hub_parser`. Shutdown is uvicorn's order: stop
accepting HTTP, finish requests, then the MQTT side publishes ``xiaozhi/bridge/state`` offline
(retained) *before* disconnecting, since a clean disconnect does not fire the will. A second
Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from xiaozhi.config import redact_mqtt_url
from xiaozhi_hub.home import HomeConfigError, home_json_schema
from xiaozhi_hub.http import run_hub
from xiaozhi_hub.service import HubStartError
from xiaozhi_hub.settings import (
    HubCertificate,
    HubSettings,
    HubSettingsError,
    load_hub_settings,
)
from xiaozhi_runtime.logs import configure_logging
from xiaozhi_runtime.runner import run_until_signal

__all__ = ["add_hub_parser", "describe_certificate", "serve_hub"]


def _say(line: str) -> None:
    print(line, flush=True)


def add_hub_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``hub`` on the ``xiaozhi`` command's sub-parsers; returns the new parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "hub",
        help="run the hub: voice commands to actions, registry, REST API, HA discovery",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--host", help="HTTP listen address (XIAOZHI_HUB_HOST)")
    parser.add_argument("--port", type=int, help="HTTP port (XIAOZHI_HUB_PORT)")
    parser.add_argument("--config", help="home-model YAML (XIAOZHI_CONFIG)")
    parser.add_argument("--mqtt-url", help="broker, mqtt://host:port (XIAOZHI_MQTT_URL)")
    parser.add_argument("--log-level", help="debug, info, warning, error (XIAOZHI_LOG_LEVEL)")
    parser.add_argument(
        "--self-signed",
        action="store_true",
        default=None,
        help="serve https with a self-signed certificate kept in the state dir "
        "(XIAOZHI_HUB_TLS_SELF_SIGNED)",
    )
    parser.add_argument(
        "--home-schema",
        action="store_true",
        help="print the home file's JSON Schema (docs/home.schema.json) and exit",
    )
    parser.set_defaults(func=_cmd_hub)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    pairs = {
        "hub_host": args.host,
        "hub_port": args.port,
        "config": args.config,
        "mqtt_url": args.mqtt_url,
        "log_level": args.log_level,
        "hub_tls_self_signed": args.self_signed,
    }
    return {name: value for name, value in pairs.items() if value is not None}


async def serve_hub(settings: HubSettings, *, stop: asyncio.Event) -> int:
    """Run the hub until ``stop`` is set (by :func:`~xiaozhi_runtime.runner.run_until_signal`,
    or by the caller that embeds it); returns the exit status."""
    async with run_hub(settings) as hub:
        _say(f"hub       {hub.url} (REST /api/v1/, setup /xiaozhi/ota/, dashboard /)")
        if hub.tls is not None:
            _say(f"hub       {describe_certificate(hub.tls)}")
        _say(f"hub       broker {redact_mqtt_url(settings.mqtt_url)}, client id {settings.hub_id}")
        await stop.wait()
        _say("stopping")
    _say("stopped")
    return 0


def describe_certificate(tls: HubCertificate) -> str:
    """One line on the certificate https is served with: its file, whether it was made now
    and for which names, and its SHA-256 fingerprint (to compare with the browser's)."""
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    if not tls.names:
        return f"https with {tls.cert_file} (SHA-256 {fingerprint})"
    how = "made now" if tls.made else "kept from an earlier start"
    return (
        f"https with a self-signed certificate, {how}: {tls.cert_file}, for "
        f"{', '.join(tls.names)} (SHA-256 {fingerprint})"
    )


def _cmd_hub(args: argparse.Namespace) -> int:
    if args.home_schema:
        print(json.dumps(home_json_schema(), indent=2, ensure_ascii=False))
        return 0
    try:
        settings = load_hub_settings(**_overrides(args))
        configure_logging(level=settings.log_level)
        return run_until_signal(
            lambda stop: serve_hub(settings, stop=stop),
            on_second_signal=lambda: _say("second signal: exiting now"),
        )
    except (HubSettingsError, HomeConfigError, HubStartError, OSError) as err:
        print(f"xiaozhi hub: {err}", file=sys.stderr)
        return 2
