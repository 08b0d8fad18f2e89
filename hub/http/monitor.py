"""``/api/v1/devices/{device_id}/listen``: a device's live microphone audio, for the dashboard.

The same seed 004 packets as an edge's ``/api/ws/audio`` (docs/protocols.md §4), served by
the hub so that a browser needs only the hub (same origin, the API key): the hub gets them
from the edge holding the device over MQTT (:class:`~xiaozhi_hub.monitor.MonitorUnit`).

1. The client opens the WebSocket with ``X-API-Key`` or ``Authorization: Bearer <JWT>``, or,
   as a browser must (it cannot set headers on a WebSocket), sends ``{"api_key": "..."}`` or
   ``{"token": "..."}`` as its first text message within ``XIAOZHI_SIGN_IN_SECONDS`` (10 s,
   as on the live stream). A read-only key is enough.
   Bad credentials or a bad device id: close code 1008 with the reason.
2. The hub answers one text message, ``{"type": "monitor", "device_id": "...", "format":
   "opus"}``, then one binary message per Opus frame the device sends (16 kHz mono, usually
   60 ms), numbered and timestamped for this listener. A listener that falls 50 packets
   behind skips ahead (a ``sequence`` gap). Nothing flows while the device is silent.
3. With ``?format=pcm`` the hub decodes the frames itself, for a page that cannot (WebCodecs
   exists only in a secure context: a dashboard opened at ``http://<LAN address>``): the
   answer says ``"format": "pcm", "sample_rate": 16000``, and each message has the same
   header with 16-bit mono little-endian PCM as its data (an empty one for a lost frame or
   one libopus refused). One decoder per listener, run on the packets as they are sent: a
   slow page skips packets in the queue above, never costs decoding it does not receive.

The key is never taken from the query string, which ends up in access logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import Final

import structlog
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from xiaozhi import jsonutil
from xiaozhi.audio_monitor import decode_audio_packet, encode_audio_packet
from xiaozhi.errors import InvalidTopic
from xiaozhi.topics import normalize_device_id
from xiaozhi_hub.http.auth import Authenticator
from xiaozhi_hub.http.envelopes import API_PREFIX, ApiError
from xiaozhi_hub.service import HubService
from xiaozhi_runtime import opus
from xiaozhi_runtime.monitor_listener import MonitorListener

__all__ = ["LISTEN_PATH", "PCM_RATE", "add_monitor_routes"]

log = structlog.get_logger("xiaozhi.hub.monitor")

LISTEN_PATH: Final = API_PREFIX + "/devices/{device_id}/listen"
_POLICY_CLOSE: Final = 1008
_TRY_AGAIN_LATER: Final = 1013  # RFC 6455 registry: the server is overloaded, try again later
_FORMATS: Final = ("opus", "pcm")
PCM_RATE: Final = 16000
"""The rate PCM listeners get: the devices' uplink rate (libopus decodes any stream to it)."""


async def _signed_in(websocket: WebSocket, auth: Authenticator, within: float) -> str | None:
    """None when the client is authenticated (within ``within`` s); else why not."""
    key = websocket.headers.get("x-api-key")
    authorization = websocket.headers.get("authorization")
    if key is None and not authorization:
        try:
            text = await asyncio.wait_for(websocket.receive_text(), within)
            first = json.loads(text)
        except (TimeoutError, ValueError, KeyError):
            return 'send {"api_key": ...} or {"token": ...} first'
        if isinstance(first, dict):
            key = first.get("api_key") if isinstance(first.get("api_key"), str) else None
            token = first.get("token")
            authorization = f"Bearer {token}" if isinstance(token, str) else None
        if key is None and not authorization:
            return "no credentials"
    try:
        auth.authenticate(key, authorization)
    except ApiError as err:
        return err.message
    return None


def add_monitor_routes(app: FastAPI, auth: Authenticator) -> None:
    """Add the ``/api/v1/devices/{device_id}/listen`` WebSocket."""

    @app.websocket(LISTEN_PATH)
    async def listen(websocket: WebSocket, device_id: str) -> None:
        service: HubService = websocket.app.state.service
        await websocket.accept()
        wanted = websocket.query_params.get("format", "opus")
        # A socket without credentials on its upgrade request counts, until it signs in,
        # against the same bound as the live stream's (XIAOZHI_STREAM_MAX_SIGNING_IN).
        counted = "x-api-key" not in websocket.headers and "authorization" not in websocket.headers
        if counted and not service.stream.begin_sign_in():
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.close(code=_TRY_AGAIN_LATER, reason="too many signing in")
            return
        try:
            device_id = normalize_device_id(device_id)
            refused = await _signed_in(websocket, auth, service.settings.sign_in_seconds)
        except InvalidTopic as err:
            refused = str(err)
        except WebSocketDisconnect:
            return
        finally:
            if counted:
                service.stream.end_sign_in()
        if refused is None and wanted not in _FORMATS:
            refused = f"format {wanted[:20]!r}: expected opus or pcm"
        if refused is not None:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.close(code=_POLICY_CLOSE, reason=refused[:120])
            return
        decoder = opus.Decoder(PCM_RATE) if wanted == "pcm" else None
        await _serve(websocket, service, device_id, decoder)


async def _serve(
    websocket: WebSocket, service: HubService, device_id: str, decoder: opus.Decoder | None
) -> None:
    """Send the device's packets (or, with ``decoder``, their PCM) until the client leaves."""
    listener = MonitorListener(device_id, asyncio.get_running_loop().time())
    service.monitor.attach(listener)
    reader = asyncio.create_task(_drain(websocket), name="listen-reader")
    sent = refused = 0
    hello: dict[str, object] = {"type": "monitor", "device_id": device_id, "format": "opus"}
    if decoder is not None:
        hello.update(format="pcm", sample_rate=decoder.sample_rate)
    try:
        await websocket.send_text(jsonutil.dumps_text(hello))
        while not reader.done():
            woken = asyncio.ensure_future(listener.ready.wait())
            await asyncio.wait({woken, reader}, return_when="FIRST_COMPLETED")
            woken.cancel()
            listener.ready.clear()
            while listener.queue:
                packet = listener.queue.popleft()
                if decoder is not None:
                    packet, failed = _as_pcm(packet, decoder)
                    refused += failed
                await websocket.send_bytes(packet)
                sent += 1
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away while we were sending
    finally:
        service.monitor.detach(listener)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        log.info(
            "listen_closed",
            device_id=device_id,
            format="opus" if decoder is None else "pcm",
            sent=sent,
            lagged=listener.lagged,
            undecodable=refused,
        )


def _as_pcm(packet: bytes, decoder: opus.Decoder) -> tuple[bytes, bool]:
    """``packet`` with its Opus data decoded (the same header); True when libopus refused
    it (sent empty, as a lost frame is)."""
    parsed = decode_audio_packet(packet)
    pcm, failed = b"", False
    if parsed.opus:  # an empty packet is a lost frame: nothing to decode
        try:
            pcm = decoder.decode(parsed.opus)
        except opus.OpusError:
            failed = True
    # AudioPacket's data field is named for Opus; the layout is the same for PCM
    return encode_audio_packet(dataclasses.replace(parsed, opus=pcm)), failed


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends; returns when it closes."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
