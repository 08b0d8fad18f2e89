"""Activation: how an unknown device becomes known (firmware reference §3.2, design.md §9).

The setup answer of a device nobody approved carries an ``activation`` block instead of a
token; real firmware shows ``message``, speaks the ``code`` digit by digit and, because a
``challenge`` is present, polls ``POST <ota_url>activate`` (202 while pending, 200 once done;
``FW:main/ota.cc`` ``Ota::Activate``). A board with an eFuse serial number sends
``{"algorithm": "hmac-sha256", "serial_number", "challenge", "hmac"}``, the HMAC being
``hex(HMAC-SHA256(eFuse KEY0, challenge))`` (``Ota::GetActivationPayload``); without one it
sends ``{}``. Only a server that knows that board's key can check the HMAC, so it proves the
hardware, never the operator's consent: approval still comes from the operator.

Pure: the code and challenge come from the caller's random source.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["ACTIVATION_CODE_DIGITS", "HMAC_ALGORITHM", "activation_hmac", "hmac_matches"]

ACTIVATION_CODE_DIGITS = 6
"""What real servers hand out and firmware speaks (one sound per digit, ``ShowActivationCode``)."""
HMAC_ALGORITHM = "hmac-sha256"


def activation_hmac(key: bytes, challenge: str) -> str:
    """What a board holding ``key`` in eFuse KEY0 sends for ``challenge``: lower-case hex."""
    return hmac.new(key, challenge.encode(), hashlib.sha256).hexdigest()


def hmac_matches(key: bytes, challenge: str, given: str) -> bool:
    """True when ``given`` (hex, any case) is the board's HMAC of ``challenge``; constant time."""
    expected = activation_hmac(key, challenge)
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("ascii", "replace"))
