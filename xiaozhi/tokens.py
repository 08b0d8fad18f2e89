"""Device tokens: what the setup endpoint issues and the edge checks at the handshake.

The text form stays the reference server's (xinnan `core/auth.py`, firmware reference §3.2),
a signature and the issue time, bound to one device and one client id::

    token = base64url(signature over f"{client_id}|{device_id}|{ts}") + "." + str(ts)

but the signature is Ed25519, not the reference server's HMAC: whoever can check an HMAC can
also mint one, so every edge holding the shared secret could mint a token for any device.
The hub signs with the private key; edges get only the public key and can verify, not mint
(design.md §9). Keys travel as text: base64url of the raw 32 bytes (43 characters), the form
``secrets.token_urlsafe(32)`` produces, so a fresh random private key is just such a string.

`ts` is the issue time in whole seconds since the epoch; expiry is checked against `now`
passed in by the caller (this module has no clock). The firmware sends the token as
`Authorization: Bearer <token>`.

A xiaozhi-mqtt-gateway sends the same text form on its WebSocket to the server, but signed
with the HMAC the xinnan server checks (gateway ``app.js`` ``WebSocketBridge.connect``; the
server's ``core/auth.py`` ``AuthManager.verify_token``)::

    token = base64url(HMAC-SHA256(SERVER_SECRET, f"{client_id}|{mac}|{ts}")) + "." + str(ts)

with ``client_id`` the board's uuid (``'default-client-id'`` when its MQTT client id has none)
and ``mac`` the ``device-id`` header. The gateway mints one per voice session, so it is checked
against a few minutes either way, not 30 days (:func:`verify_gateway_token`). The shared
secret can mint tokens too: that is the gateway's contract, kept to gateway connections.
"""

from __future__ import annotations

import base64
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from xiaozhi.errors import AuthenticationFailed, ConfigurationError
from xiaozhi.mqtt_credentials import xinnan_hmac

__all__ = [
    "DEFAULT_GATEWAY_TOKEN_MAX_AGE_SECONDS",
    "DEFAULT_TOKEN_TTL_SECONDS",
    "GATEWAY_DEFAULT_CLIENT_ID",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "bearer_token",
    "issue_gateway_token",
    "issue_token",
    "private_key_from_text",
    "public_key_from_text",
    "public_key_text",
    "verify_gateway_token",
    "verify_token",
]

DEFAULT_TOKEN_TTL_SECONDS = 30 * 24 * 3600  # the reference server's default expiry: 30 days
_CLOCK_SKEW_SECONDS = 300  # a device clock slightly ahead of ours is not an attack
_KEY_BYTES = 32  # Ed25519 private seeds and public keys alike
_SIGNATURE_BYTES = 64

DEFAULT_GATEWAY_TOKEN_MAX_AGE_SECONDS = 300
"""How far a gateway token's time may be from ours, either way: it is minted for the
connection, so only the two clocks' difference and the network's delay count."""
GATEWAY_DEFAULT_CLIENT_ID = "default-client-id"
"""What the gateway signs for a device whose MQTT client id has no uuid (``GID@@@mac``)."""
_GATEWAY_UNSET_TOKEN = "test-token"  # what the gateway sends without SERVER_SECRET

_MAX_TIMESTAMP_DIGITS = 12
"""Seconds since 1970 fit in 11 digits until the year 5138."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Raises ValueError (binascii.Error is one) for anything but base64url text."""
    if not text.isascii():
        raise ValueError("not ASCII")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_bytes(text: str, what: str) -> bytes:
    try:
        raw = _b64decode(text.strip())
    except ValueError as err:
        raise ConfigurationError(f"{what} is not base64url text: {err}") from err
    if len(raw) != _KEY_BYTES:
        raise ConfigurationError(
            f"{what} decodes to {len(raw)} bytes; an Ed25519 key is {_KEY_BYTES} "
            "(43 base64url characters)"
        )
    return raw


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    """The hub's signing key from its text form (base64url of the 32-byte seed).

    Raises:
        ConfigurationError: not base64url, or not 32 bytes.
    """
    return Ed25519PrivateKey.from_private_bytes(_key_bytes(text, "the device token private key"))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """An edge's verifying key from its text form (base64url of the 32 raw bytes).

    Raises:
        ConfigurationError: not base64url, or not 32 bytes.
    """
    return Ed25519PublicKey.from_public_bytes(_key_bytes(text, "the device token public key"))


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public half's text form: what the hub writes for edges to read."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return _b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw))


def _message(client_id: str, device_id: str, issued_at: int) -> bytes:
    return f"{client_id}|{device_id}|{issued_at}".encode()


def issue_token(
    private_key: Ed25519PrivateKey, *, client_id: str, device_id: str, issued_at: int
) -> str:
    """Sign a token for one device (only the hub holds ``private_key``).

    Args:
        private_key: the hub's device token key.
        client_id: the device's `Client-Id` (board UUID).
        device_id: the device's `Device-Id` as it sends it (MAC form is fine).
        issued_at: seconds since the epoch, from the caller's clock.
    """
    signature = private_key.sign(_message(client_id, device_id, issued_at))
    return f"{_b64encode(signature)}.{issued_at}"


def bearer_token(authorization: str | None) -> str | None:
    """The token out of an `Authorization` value (`Bearer <token>`, or a bare token)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip() or None
    return authorization.strip()


def _parse(token: str | None) -> tuple[bytes, int]:
    """The signature and issue time of a ``<signature>.<timestamp>`` token.

    Raises:
        AuthenticationFailed: missing, or not that form.
    """
    if not token:
        raise AuthenticationFailed("no token (send 'Authorization: Bearer <token>')")
    signature_text, dot, issued_text = token.rpartition(".")
    # ASCII digits only ("²" is a digit to str.isdigit and not to int), and no more than an
    # epoch needs: int() of thousands of digits raises (and costs) instead of refusing.
    if (
        not dot
        or not signature_text
        or not (issued_text.isascii() and issued_text.isdigit())
        or len(issued_text) > _MAX_TIMESTAMP_DIGITS
    ):
        raise AuthenticationFailed("malformed token (expected '<signature>.<timestamp>')")
    try:
        signature = _b64decode(signature_text)
    except ValueError as err:
        raise AuthenticationFailed("malformed token signature") from err
    return signature, int(issued_text)


def verify_token(
    public_key: Ed25519PublicKey,
    token: str | None,
    *,
    client_id: str,
    device_id: str,
    now: int,
    ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS,
) -> int:
    """Check a token; return its issue time.

    Raises:
        AuthenticationFailed: missing, malformed, signed for another device or by another
            key, expired, or issued in the future. The reason is safe to show the device.
    """
    signature, issued_at = _parse(token)
    if len(signature) != _SIGNATURE_BYTES:
        raise AuthenticationFailed("token not valid for this device")
    try:
        public_key.verify(signature, _message(client_id, device_id, issued_at))
    except InvalidSignature as err:
        raise AuthenticationFailed("token not valid for this device") from err
    if issued_at > now + _CLOCK_SKEW_SECONDS:
        raise AuthenticationFailed("token issued in the future")
    if now - issued_at > ttl_seconds:
        raise AuthenticationFailed("token expired")
    return issued_at


def _gateway_signature(secret: bytes, client_id: str | None, device_id: str, at: int) -> bytes:
    return xinnan_hmac(secret, client_id or GATEWAY_DEFAULT_CLIENT_ID, device_id, str(at))


def issue_gateway_token(
    secret: bytes, *, client_id: str | None, device_id: str, issued_at: int
) -> str:
    """The token a gateway holding ``secret`` (its ``SERVER_SECRET``, UTF-8) sends for one
    device's voice session: what tests and simulators put in ``Authorization: Bearer``.

    Args:
        secret: the shared secret.
        client_id: the ``client-id`` header (the board's uuid); None or empty when the
            gateway sends none, and it signs ``'default-client-id'`` instead.
        device_id: the ``device-id`` header, the MAC as the gateway sends it.
        issued_at: seconds since the epoch, from the caller's clock.
    """
    signature = _gateway_signature(secret, client_id, device_id, issued_at)
    return f"{_b64encode(signature)}.{issued_at}"


def verify_gateway_token(
    secret: bytes,
    token: str | None,
    *,
    client_id: str | None,
    device_id: str,
    now: int,
    max_age_seconds: int = DEFAULT_GATEWAY_TOKEN_MAX_AGE_SECONDS,
) -> int:
    """Check a gateway's token (compared in constant time); return its issue time.

    The issue time must be within ``max_age_seconds`` of ``now`` either way. Stricter than
    the xinnan server, which takes any token up to 30 days old (its default) and any from the
    future: the gateway mints a fresh one per connection, so an old token is a replayed one.

    Raises:
        AuthenticationFailed: missing, ``test-token`` (a gateway without ``SERVER_SECRET``),
            malformed, signed with another secret or for another device or client id, too
            old or too far ahead. The reason is safe to show the gateway.
    """
    if token == _GATEWAY_UNSET_TOKEN:
        raise AuthenticationFailed(
            "the gateway sent 'test-token': set its SERVER_SECRET (the edge's "
            "XIAOZHI_GATEWAY_SECRET) so it signs its connections"
        )
    signature, issued_at = _parse(token)
    expected = _gateway_signature(secret, client_id, device_id, issued_at)
    if not hmac.compare_digest(signature, expected):
        raise AuthenticationFailed(
            "gateway token not valid for this device (another secret than "
            "XIAOZHI_GATEWAY_SECRET, or signed for another device-id or client-id)"
        )
    if issued_at - now > max_age_seconds:
        raise AuthenticationFailed(
            f"gateway token issued {issued_at - now} s in the future (at most "
            f"{max_age_seconds} s): set the gateway's and the edge's clocks right"
        )
    if now - issued_at > max_age_seconds:
        raise AuthenticationFailed(
            f"gateway token expired: {now - issued_at} s old, at most {max_age_seconds} s "
            "(the gateway signs each connection; a clock off, or a token replayed)"
        )
    return issued_at
