"""The hub serving https itself (issue 15: the dashboard's Listen needs a secure context on a
LAN address): a self-signed certificate made into the state dir, verified by a real client
against that certificate, over https and wss. Plain http stays the default (every other
test's hub). tests/hub/test_dashboard_browser.py opens the page over it."""

from __future__ import annotations

import asyncio
import json
import ssl

import httpx
import pytest
import websockets

from tests.hub.conftest import READ_KEY
from tests.support import Recorder
from xiaozhi_cli.main import build_parser
from xiaozhi_hub.cli import _overrides, describe_certificate
from xiaozhi_hub.http import run_hub
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.settings import HubSettings


@pytest.mark.integration
async def test_a_hub_with_a_self_signed_certificate_answers_https(
    hub_settings: HubSettings, engine: IntentEngine, watcher: Recorder
) -> None:
    settings = hub_settings.model_copy(update={"hub_tls_self_signed": True})
    async with run_hub(settings, home=engine.home, engine=engine) as running:
        assert running.url.startswith("https://127.0.0.1:")
        assert running.tls is not None
        assert running.tls.cert_file == settings.state_dir / "hub-tls-cert.pem"
        assert running.tls.made
        assert "self-signed certificate, made now" in describe_certificate(running.tls)
        # verified against the generated certificate, host name (127.0.0.1) included
        trust = ssl.create_default_context(cafile=running.tls.cert_file)
        async with httpx.AsyncClient(verify=trust, timeout=10) as http:
            health = await http.get(running.url + "/health")
            assert health.status_code == 200
            page = await http.get(running.url + "/")
            assert "xiaozhi hub" in page.text
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            async with httpx.AsyncClient(timeout=10) as untrusting:  # the system's CAs
                await untrusting.get(running.url + "/health")
        url = running.url.replace("https", "wss", 1) + "/api/v1/devices/demo_kitchen/listen"
        async with websockets.connect(url, ssl=trust) as listen:
            await listen.send(json.dumps({"api_key": READ_KEY}))
            hello = json.loads(await asyncio.wait_for(listen.recv(), 10))
            assert hello["type"] == "monitor"
    # started again: the same certificate (a browser's exception for it still holds)
    async with run_hub(settings, home=engine.home, engine=engine) as again:
        assert again.tls is not None
        assert not again.tls.made
        assert again.tls.cert_file.read_bytes() == running.tls.cert_file.read_bytes()
        assert "kept from an earlier start" in describe_certificate(again.tls)


def test_xiaozhi_hub_self_signed_flag_sets_the_setting() -> None:
    parser = build_parser()
    assert _overrides(parser.parse_args(["hub", "--self-signed"])) == {"hub_tls_self_signed": True}
    assert _overrides(parser.parse_args(["hub"])) == {}  # the environment decides
