"""Who is on a device connection: the identity the handshake (or a registration) gave.

The edge learns a device's id before the WebSocket exists, from the firmware's handshake
headers (``Device-Id``, ``Client-Id``, ``Protocol-Version``, reference §1.2) or their
query-parameter twins, checked in websockets' handshake hook; a seed client may instead name
itself in its ``device_register``. A session whose device then claims another identity, or a
firmware ``hello`` on a connection with none, is refused with the errors below (close 1008).
"""

from __future__ import annotations

from dataclasses import dataclass

from xiaozhi.binary import SUPPORTED_VERSIONS
from xiaozhi.errors import ErrorCode, UnsupportedVersion, WireError
from xiaozhi.payloads import is_simulator_user_agent
from xiaozhi.topics import normalize_device_id

__all__ = ["ConnectionIdentity", "IdentityRefused", "MissingIdentity"]


class IdentityRefused(WireError):
    """The device claims an identity the connection does not have; closes with 1008."""

    code = ErrorCode.PERMISSION_DENIED


class MissingIdentity(IdentityRefused):
    """A firmware ``hello`` on a connection without a ``Device-Id``; closes with 1008."""

    code = ErrorCode.MISSING_REQUIRED_FIELDS


@dataclass(frozen=True, slots=True)
class ConnectionIdentity:
    """Who is on the connection, from the handshake (reference §1.2) or ``device_register``.

    Attributes:
        device_id: Normalized id (``aabbccddeeff`` for a MAC), used in every topic.
        raw_device_id: The id exactly as the device sent it.
        client_id: The ``Client-Id`` header (board UUID), if sent.
        protocol_version: The ``Protocol-Version`` header (1/2/3); None if absent.
        authenticated: True when the handshake verified a token or an allow-list entry.
        simulated: the ``User-Agent`` carries our simulator's product token
            (:func:`~xiaozhi.payloads.is_simulator_user_agent`): its status and connection
            events say ``"simulated": true``.
    """

    device_id: str
    raw_device_id: str
    client_id: str | None = None
    protocol_version: int | None = None
    authenticated: bool = False
    simulated: bool = False

    @classmethod
    def from_handshake(
        cls,
        device_id: str,
        *,
        client_id: str | None = None,
        protocol_version: str | int | None = None,
        authenticated: bool = False,
        user_agent: str | None = None,
    ) -> ConnectionIdentity:
        """Build the identity from handshake headers (or their query-parameter twins).

        ``Protocol-Version`` absent, empty or ``0`` means "not given" (the firmware treats
        0 as its default, reference §1.1).

        Raises:
            InvalidTopic: the device id does not normalize to a valid id; refuse the
                handshake (HTTP 400).
            UnsupportedVersion: ``Protocol-Version`` is not 1, 2 or 3.
        """
        version: int | None = None
        if protocol_version not in (None, "", 0, "0"):
            text = str(protocol_version).strip()
            version = int(text) if text.isdigit() else None
            if isinstance(protocol_version, bool) or version not in SUPPORTED_VERSIONS:
                raise UnsupportedVersion(version=protocol_version, supported=SUPPORTED_VERSIONS)
        return cls(
            device_id=normalize_device_id(device_id),
            raw_device_id=device_id,
            client_id=client_id or None,
            protocol_version=version,
            authenticated=authenticated,
            simulated=is_simulator_user_agent(user_agent),
        )
