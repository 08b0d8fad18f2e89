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
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from xiaozhi.errors import AuthenticationFailed, ConfigurationError

__all__ = [
    "DEFAULT_TOKEN_TTL_SECONDS",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "bearer_token",
    "issue_token",
    "private_key_from_text",
    "public_key_from_text",
    "public_key_text",
    "verify_token",
]

DEFAULT_TOKEN_TTL_SECONDS = 30 * 24 * 3600  # the reference server's default expiry: 30 days
_CLOCK_SKEW_SECONDS = 300  # a device clock slightly ahead of ours is not an attack
_KEY_BYTES = 32  # Ed25519 private seeds and public keys alike
_SIGNATURE_BYTES = 64

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
    issued_at = int(issued_text)
    try:
        signature = _b64decode(signature_text)
    except ValueError as err:
        raise AuthenticationFailed("malformed token signature") from err
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
