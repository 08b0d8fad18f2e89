"""The boot-time setup POST to ``/xiaozhi/ota/`` (reference section 3).

Real firmware POSTs its system info to the OTA URL at every boot and keeps what the answer's
``websocket`` object says (``url``, ``token``, ``version``) in NVS; that is how **the server
chooses the binary protocol version** (reference 1.1, 3.2). The simulator does the same, with
the firmware's headers and body; when the endpoint cannot be reached or answers badly it falls
back to the settings (``XIAOZHI_SIM_WS_URL``, ``XIAOZHI_SIM_TOKEN``,
``XIAOZHI_SIM_BINARY_VERSION``) instead of retrying ten times as firmware would, so a simulator
started before the hub still works. An ``mqtt`` block (MQTT+UDP firmware mode) is noted but not
followed: a stock broker cannot serve it (reference 6.3).

An ``activation`` block (a device the hub has not approved) is handled as firmware does
(``Application::CheckNewVersion``): the device shows and speaks the code (here: a log line and
an inbox entry), then polls ``POST <ota_url>activate`` (:func:`poll_activation`: 202 pending,
200 activated) and runs setup again once activated, which brings its token.

:func:`ota_request` and :func:`parse_ota_response` are pure; :func:`fetch_setup` and
:func:`poll_activation` do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import httpx

from xiaozhi import jsonutil
from xiaozhi.binary import SUPPORTED_VERSIONS
from xiaozhi.errors import WireError
from xiaozhi_sim.identity import DeviceIdentity

__all__ = [
    "SetupResult",
    "activation_url",
    "fetch_setup",
    "ota_request",
    "parse_ota_response",
    "poll_activation",
]

OTA_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SetupResult:
    """Where and how the device connects, and where that came from.

    Attributes:
        ws_url: the device WebSocket URL.
        token: the bearer token ("" = no ``Authorization`` header).
        version: the binary protocol version.
        source: ``"ota"`` (the endpoint answered) or ``"settings"`` (fallback).
        error: why the fallback was used, or a part of the answer that was ignored.
        response: the endpoint's JSON answer, as received.
    """

    ws_url: str
    token: str
    version: int
    source: str = "settings"
    error: str | None = None
    response: dict[str, Any] | None = None

    @property
    def activation(self) -> dict[str, Any] | None:
        """The answer's ``activation`` block, if any (firmware reference §3.2)."""
        activation = (self.response or {}).get("activation")
        return activation if isinstance(activation, dict) else None

    @property
    def activation_code(self) -> str | None:
        """The code a real device would show or speak (``activation.code``)."""
        code = (self.activation or {}).get("code")
        return str(code) if code is not None else None

    @property
    def must_activate(self) -> bool:
        """Firmware polls the activate URL when the block has a ``challenge``
        (``Ota::Activate``); until then it does not connect."""
        return isinstance((self.activation or {}).get("challenge"), str)


def ota_request(identity: DeviceIdentity) -> tuple[dict[str, str], bytes]:
    """Headers and JSON body of the setup POST (reference 3.1).

    ``Activation-Version`` is 1: a simulated chip has no eFuse serial number.
    """
    headers = {
        "Activation-Version": "1",
        "Device-Id": identity.header_device_id,
        "Client-Id": identity.client_id,
        "User-Agent": identity.user_agent,
        "Accept-Language": identity.language,
        "Content-Type": "application/json",
    }
    return headers, jsonutil.dumps(identity.system_info())


def _version(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and value in SUPPORTED_VERSIONS:
        return value
    return None


def parse_ota_response(body: bytes | str, fallback: SetupResult) -> SetupResult:
    """Apply the answer's ``websocket`` object over ``fallback`` (reference 3.2).

    Keys absent from the answer keep their fallback values; a ``version`` that is not 1, 2 or
    3 is ignored (firmware would store it; the edge would then refuse the connection) and named
    in :attr:`SetupResult.error`.
    """
    try:
        answer = jsonutil.loads_object(body, max_bytes=256 * 1024)
    except WireError as err:
        return replace(fallback, error=f"setup answer is not a JSON object: {err}")
    result = replace(fallback, source="ota", response=answer, error=None)
    websocket = answer.get("websocket")
    if isinstance(answer.get("activation"), dict):
        # no usable token until approved: the fallback token is not this device's either
        result = replace(result, token="")
    if not isinstance(websocket, dict):
        note = "no 'websocket' in the setup answer"
        if isinstance(answer.get("activation"), dict):
            return replace(result, error="waiting for activation")
        if isinstance(answer.get("mqtt"), dict):
            note += " (its 'mqtt' block selects MQTT+UDP: --transport mqtt-udp speaks it)"
        return replace(result, error=f"{note}: using settings")
    if isinstance(websocket.get("url"), str) and websocket["url"]:
        result = replace(result, ws_url=websocket["url"])
    if isinstance(websocket.get("token"), str):
        result = replace(result, token=websocket["token"])
    if "version" in websocket:
        version = _version(websocket["version"])
        if version is None:
            bad = websocket["version"]
            return replace(result, error=f"websocket.version {bad!r} is not 1, 2 or 3: ignored")
        result = replace(result, version=version)
    return result


async def fetch_setup(
    client: httpx.AsyncClient, url: str, identity: DeviceIdentity, fallback: SetupResult
) -> SetupResult:
    """POST the setup request; never raises for network or server faults (falls back).

    Args:
        client: a shared HTTP client (one per process, not per device).
        url: the OTA URL; empty skips setup.
        identity: the device.
        fallback: what to use when the endpoint is unreachable or answers badly.
    """
    if not url:
        return replace(fallback, error="no setup URL: using settings")
    headers, body = ota_request(identity)
    try:
        response = await client.post(
            url, headers=headers, content=body, timeout=OTA_TIMEOUT_SECONDS
        )
    except httpx.HTTPError as err:
        reason = str(err) or type(err).__name__
        return replace(fallback, error=f"setup {url} unreachable ({reason}): using settings")
    if response.status_code != 200:
        return replace(
            fallback, error=f"setup {url} answered HTTP {response.status_code}: using settings"
        )
    return parse_ota_response(response.content, fallback)


def activation_url(ota_url: str) -> str:
    """``<ota_url>activate`` with exactly one slash between (``Ota::Activate``)."""
    return ota_url + ("activate" if ota_url.endswith("/") else "/activate")


async def poll_activation(client: httpx.AsyncClient, ota_url: str, identity: DeviceIdentity) -> int:
    """One activation poll, as firmware without an eFuse serial number sends it: the setup
    headers and ``{}``. Returns the HTTP status (202 pending, 200 activated), 0 when the hub
    cannot be reached (firmware retries either way)."""
    headers, _ = ota_request(identity)
    try:
        response = await client.post(
            activation_url(ota_url), headers=headers, content=b"{}", timeout=OTA_TIMEOUT_SECONDS
        )
    except httpx.HTTPError:
        return 0
    return response.status_code
