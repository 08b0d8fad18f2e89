"""Device tokens: what the setup endpoint issues and the edge checks at the handshake.

The form is the reference server's (xinnan `core/auth.py`, firmware reference section 3.2),
so a device provisioned by either works with both::

    token = base64url(HMAC-SHA256(secret, f"{client_id}|{device_id}|{ts}")) + "." + str(ts)

`ts` is the issue time in whole seconds since the epoch. The signature binds the token to
one device and one client id; expiry is checked against `now` passed in by the caller (this
module has no clock). The firmware sends it as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from xiaozhi.errors import AuthenticationFailed

__all__ = ["DEFAULT_TOKEN_TTL_SECONDS", "bearer_token", "issue_token", "verify_token"]

DEFAULT_TOKEN_TTL_SECONDS = 30 * 24 * 3600  # the reference server's default expiry: 30 days
_CLOCK_SKEW_SECONDS = 300  # a device clock slightly ahead of ours is not an attack


_MAX_TIMESTAMP_DIGITS = 12
"""Seconds since 1970 fit in 11 digits until the year 5138."""


def _signature(secret: bytes, client_id: str, device_id: str, issued_at: int) -> str:
    message = f"{client_id}|{device_id}|{issued_at}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_token(secret: bytes, *, client_id: str, device_id: str, issued_at: int) -> str:
    """Sign a token for one device.

    Args:
        secret: the `XIAOZHI_SECRET` bytes.
        client_id: the device's `Client-Id` (board UUID).
        device_id: the device's `Device-Id` as it sends it (MAC form is fine).
        issued_at: seconds since the epoch, from the caller's clock.
    """
    return f"{_signature(secret, client_id, device_id, issued_at)}.{issued_at}"


def bearer_token(authorization: str | None) -> str | None:
    """The token out of an `Authorization` value (`Bearer <token>`, or a bare token)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip() or None
    return authorization.strip()


def verify_token(
    secret: bytes,
    token: str | None,
    *,
    client_id: str,
    device_id: str,
    now: int,
    ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS,
) -> int:
    """Check a token; return its issue time.

    Raises:
        AuthenticationFailed: missing, malformed, signed for another device or secret,
            expired, or issued in the future. The reason is safe to show the device.
    """
    if not token:
        raise AuthenticationFailed("no token (send 'Authorization: Bearer <token>')")
    signature, dot, issued_text = token.rpartition(".")
    # ASCII digits only ("²" is a digit to str.isdigit and not to int), and no more than an
    # epoch needs: int() of thousands of digits raises (and costs) instead of refusing.
    if (
        not dot
        or not signature
        or not (issued_text.isascii() and issued_text.isdigit())
        or len(issued_text) > _MAX_TIMESTAMP_DIGITS
    ):
        raise AuthenticationFailed("malformed token (expected '<signature>.<timestamp>')")
    issued_at = int(issued_text)
    try:
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError) as err:
        raise AuthenticationFailed("malformed token signature") from err
    expected = _signature(secret, client_id, device_id, issued_at)
    if not hmac.compare_digest(expected, signature):
        raise AuthenticationFailed("token not valid for this device")
    if issued_at > now + _CLOCK_SKEW_SECONDS:
        raise AuthenticationFailed("token issued in the future")
    if now - issued_at > ttl_seconds:
        raise AuthenticationFailed("token expired")
    return issued_at
