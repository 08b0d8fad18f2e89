"""The MQTT client id, user name and password real deployments give xiaozhi firmware.

The forms are the xinnan gateway's (``utils/mqtt_config_v2.js``, firmware reference §2.2),
so a fleet set up by a xinnan server keeps its credentials::

    client_id = "<group>@@@<mac with ':' as '_'>@@@<uuid>"  GID_xiaozhi@@@aa_bb_cc_dd_ee_ff@@@0f1e…
    username  = base64(JSON user data)                       base64('{"ip":"192.0.2.7"}')
    password  = base64(HMAC-SHA256(key, client_id + "|" + username))     (xinnan)

The gateway also accepts the two-part ``<group>@@@<mac>`` of older setups; so does
:func:`parse_client_id` (the uuid is then absent).

Our setup endpoint puts a **device token** in ``password`` instead of the HMAC: the hub signs
it with its Ed25519 key (:mod:`xiaozhi.tokens`) for the uuid and the MAC, and an edge only
verifies it, so no edge holds a secret that could mint credentials. The HMAC form is kept
for fleets that come from a xinnan server (:func:`sign_password`, :func:`password_matches`):
checking it needs the shared key, which could also mint one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from xiaozhi.errors import AuthenticationFailed

__all__ = [
    "DEFAULT_GROUP",
    "PUBLISH_TOPIC",
    "DeviceClientId",
    "decode_username",
    "encode_username",
    "parse_client_id",
    "password_matches",
    "sign_password",
    "xinnan_hmac",
]

DEFAULT_GROUP: Final = "GID_xiaozhi"
"""The group part of the client ids our setup endpoint hands out (xinnan uses ``GID_test``)."""

PUBLISH_TOPIC: Final = "device-server"
"""The ``publish_topic`` firmware is given (xinnan's); the edge accepts any topic."""

_SEPARATOR: Final = "@@@"
_MAX_USERNAME_CHARS: Final = 1024  # a base64 JSON of a few fields; refused beyond, unparsed
_GROUP: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class DeviceClientId:
    """A parsed client id.

    Attributes:
        group: The group part (``GID_xiaozhi``); informational.
        device_id: The MAC as the device sends it in ``Device-Id`` (``'_'`` back to ``':'``).
        uuid: The board's ``Client-Id``; None for the two-part form.
    """

    group: str
    device_id: str
    uuid: str | None = None

    def __str__(self) -> str:
        parts = [self.group, self.device_id.replace(":", "_")]
        if self.uuid is not None:
            parts.append(self.uuid)
        return _SEPARATOR.join(parts)

    @property
    def inbox_topic(self) -> str:
        """Where the server pushes to this device: ``devices/p2p/<mac with '_'>``."""
        return f"devices/p2p/{self.device_id.replace(':', '_')}"


def parse_client_id(text: str) -> DeviceClientId:
    """Read ``group@@@mac_@@@uuid`` (or ``group@@@mac_``).

    Raises:
        AuthenticationFailed: not that form (the listener answers CONNACK 2, identifier
            rejected).
    """
    parts = text.split(_SEPARATOR)
    if len(parts) not in (2, 3) or not all(parts) or not _GROUP.match(parts[0]):
        raise AuthenticationFailed(
            f"client id {text[:80]!r} is not '<group>@@@<mac>@@@<uuid>' (xinnan form)"
        )
    return DeviceClientId(
        group=parts[0],
        device_id=parts[1].replace("_", ":"),
        uuid=parts[2] if len(parts) == 3 else None,
    )


def encode_username(data: dict[str, Any]) -> str:
    """The user name: base64 of the compact JSON of ``data``."""
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def decode_username(text: str) -> dict[str, Any]:
    """The user data in a user name.

    Raises:
        AuthenticationFailed: too long, not base64, or not a JSON object.
    """
    if len(text) > _MAX_USERNAME_CHARS:
        raise AuthenticationFailed(f"user name over {_MAX_USERNAME_CHARS} characters")
    try:
        data = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as err:
        raise AuthenticationFailed("user name is not base64 of a JSON object") from err
    if not isinstance(data, dict):
        raise AuthenticationFailed("user name is not base64 of a JSON object")
    return data


def xinnan_hmac(key: bytes, *fields: str) -> bytes:
    """HMAC-SHA256 of ``fields`` joined by ``'|'`` (UTF-8): both xinnan signatures are one,
    the device's MQTT password (client id, user name) and the gateway's WebSocket token
    (client id, MAC, timestamp; :func:`xiaozhi.tokens.verify_gateway_token`)."""
    return hmac.new(key, "|".join(fields).encode(), hashlib.sha256).digest()


def sign_password(key: bytes, client_id: str, username: str) -> str:
    """The xinnan password: base64(HMAC-SHA256(key, f"{client_id}|{username}"))."""
    return base64.b64encode(xinnan_hmac(key, client_id, username)).decode("ascii")


def password_matches(key: bytes, client_id: str, username: str, password: str) -> bool:
    """True when ``password`` is the xinnan signature (compared in constant time)."""
    expected = sign_password(key, client_id, username)
    return hmac.compare_digest(expected.encode(), password.encode("utf-8", "replace"))
