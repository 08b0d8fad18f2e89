"""Which devices the hub vouches for: approved (device, client id) pairs and pending activations.

Design.md §9: an unknown device gets an activation code, never a token; only an operator's
approval (REST ``/api/v1/activations/approve`` or the bridge request ``device/approve``)
makes it known. A token is bound to the pair ``(Device-Id, Client-Id)``, so a second client
id for an approved device is a new, pending pair: the setup call of someone who only knows a
victim's MAC address yields a code, not a token that would displace the victim.

Both kinds of record live in one JSON file of the state directory (written whole, 0600, then
renamed into place), so pending codes survive a restart and hub processes sharing the state
directory see each other's approvals (each re-reads the file when its modification time
changed). Pending entries expire after ``ttl_seconds``; their number is capped, so a flood of
made-up device ids fills neither memory nor the disk. Every method takes ``now`` (seconds
since the epoch) from the caller, so expiry is tested without waiting.

Each change this process makes is told to :attr:`Activations.on_change` (the live stream's
``activation`` frames, so the dashboard's approvals list is live): ``pending`` (a new code),
``approved``, ``rejected``, ``expired``. A change another replica made to the shared file is
not told here: that replica's own stream carries it.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from xiaozhi.activation import ACTIVATION_CODE_DIGITS
from xiaozhi.errors import OperationFailed
from xiaozhi_runtime.secrets_file import write_private_file

__all__ = [
    "ACTIVATIONS_FILE_NAME",
    "ActivationNotFound",
    "Activations",
    "Approved",
    "DeviceApproval",
    "Pending",
    "TooManyPending",
]

log = structlog.get_logger("xiaozhi.hub.activations")

ACTIVATIONS_FILE_NAME = "activations.json"
_FILE_VERSION = 1


class DeviceApproval(enum.StrEnum):
    """Who makes an unknown device known (``XIAOZHI_DEVICE_APPROVAL``)."""

    MANUAL = "manual"  # an operator approves each activation code (production default)
    AUTO = "auto"  # every device is approved at its first setup call: labs, `xiaozhi up`


class ActivationNotFound(OperationFailed):
    """No pending activation matches what the operator gave (code, device, client id)."""


class TooManyPending(OperationFailed):
    """The cap on pending activations is reached: answer "try later", keep what is pending."""


@dataclass(slots=True)
class Pending:
    """One (device, client id) waiting for approval, as the operator sees it listed."""

    device_id: str  # normalized (the topic form)
    client_id: str
    code: str  # the 6 digits the device shows and speaks
    challenge: str  # what the firmware's activation poll echoes (and HMACs)
    created_at: float
    expires_at: float
    raw_device_id: str = ""  # as the device sends it (MAC form): what its token signs
    serial_number: str | None = None
    user_agent: str | None = None
    hmac_verified: bool = False  # the board proved its eFuse key (never approval by itself)

    def to_json_dict(self, now: float) -> dict[str, Any]:
        """The listing's view: no challenge (it is the device's, not the operator's)."""
        return {
            "device_id": self.device_id,
            "client_id": self.client_id,
            "code": self.code,
            "serial_number": self.serial_number,
            "user_agent": self.user_agent,
            "hmac_verified": self.hmac_verified,
            "created_at": self.created_at,
            "expires_in_seconds": max(0, round(self.expires_at - now)),
        }


@dataclass(slots=True)
class Approved:
    """An approved pair; ``by`` says who approved it (``auto``, ``rest:<key>``, ``bridge``)."""

    device_id: str
    client_id: str
    approved_at: float
    by: str

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _State:
    pending: dict[tuple[str, str], Pending] = field(default_factory=dict)
    approved: dict[tuple[str, str], Approved] = field(default_factory=dict)


class Activations:
    """The approved pairs and pending activations (module docstring).

    Args:
        path: the JSON file; None keeps everything in memory (tests of other parts).
        ttl_seconds: how long a code stays valid.
        max_pending: pending entries kept at most; beyond, :meth:`request` refuses.
        random_code: the code source (tests pin it); default: 6 random digits.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        ttl_seconds: float,
        max_pending: int,
        random_code: Callable[[], str] | None = None,
    ) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        self._random_code = random_code or _random_code
        self._state = _State()
        self._mtime: int | None = None
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None
        """Told ``(change, entry)`` after each change (module docstring): the entry as the
        listing shows it, ``device_id`` and ``client_id`` always among its keys."""
        self._reload()

    # -- reading -------------------------------------------------------------------------------

    def is_approved(self, device_id: str, client_id: str) -> bool:
        self._reload()
        return (device_id, client_id) in self._state.approved

    def pending(self, now: float) -> list[Pending]:
        """Unexpired pending activations, oldest first."""
        self._reload()
        self._expire(now)
        return sorted(self._state.pending.values(), key=lambda p: p.created_at)

    def find_pending(self, device_id: str, client_id: str, now: float) -> Pending | None:
        self._reload()
        self._expire(now)
        return self._state.pending.get((device_id, client_id))

    def approved(self) -> list[Approved]:
        self._reload()
        return sorted(self._state.approved.values(), key=lambda a: a.approved_at)

    # -- changing ------------------------------------------------------------------------------

    def request(
        self,
        device_id: str,
        client_id: str,
        now: float,
        *,
        raw_device_id: str = "",
        serial_number: str | None = None,
        user_agent: str | None = None,
    ) -> Pending:
        """The pending activation of this pair: the unexpired one, or a new code.

        The same pair asking again keeps its code (the firmware re-runs setup after every
        activation round; a code that changed each time could never be typed in).

        Raises:
            TooManyPending: ``max_pending`` unexpired activations are waiting already.
        """
        self._reload()
        self._expire(now)
        key = (device_id, client_id)
        existing = self._state.pending.get(key)
        if existing is not None:
            return existing
        if len(self._state.pending) >= self.max_pending:
            raise TooManyPending(
                f"{self.max_pending} activations are pending already (XIAOZHI_MAX_PENDING_"
                "ACTIVATIONS): approve or reject some, or wait for them to expire"
            )
        taken = {p.code for p in self._state.pending.values()}
        code = self._random_code()
        while code in taken:
            code = self._random_code()
        entry = Pending(
            device_id=device_id,
            client_id=client_id,
            code=code,
            challenge=secrets.token_hex(16),
            created_at=now,
            expires_at=now + self.ttl_seconds,
            raw_device_id=raw_device_id or device_id,
            serial_number=serial_number,
            user_agent=user_agent,
        )
        self._state.pending[key] = entry
        self._save()
        self._changed("pending", entry.to_json_dict(now))
        return entry

    def approve(
        self,
        now: float,
        *,
        by: str,
        code: str | None = None,
        device_id: str | None = None,
        client_id: str | None = None,
    ) -> Approved:
        """Approve one pending activation, named by its code or by its device id (and client id
        when that device has several pending).

        Raises:
            ActivationNotFound: nothing pending matches, or a device id alone is ambiguous.
        """
        entry = self._match(now, code=code, device_id=device_id, client_id=client_id)
        return self.approve_pair(entry.device_id, entry.client_id, now, by=by)

    def approve_pair(self, device_id: str, client_id: str, now: float, *, by: str) -> Approved:
        """Approve a pair directly (``auto`` approval, or :meth:`approve` once matched)."""
        self._reload()
        self._state.pending.pop((device_id, client_id), None)
        approved = Approved(device_id, client_id, now, by)
        self._state.approved[(device_id, client_id)] = approved
        self._save()
        self._changed("approved", approved.to_json_dict())
        return approved

    def reject(
        self,
        now: float,
        *,
        code: str | None = None,
        device_id: str | None = None,
        client_id: str | None = None,
    ) -> Pending:
        """Drop a pending activation (the device's next setup call gets a new code).

        Raises:
            ActivationNotFound: as :meth:`approve`.
        """
        entry = self._match(now, code=code, device_id=device_id, client_id=client_id)
        del self._state.pending[(entry.device_id, entry.client_id)]
        self._save()
        self._changed("rejected", entry.to_json_dict(now))
        return entry

    def forget(self, device_id: str) -> int:
        """Remove every approval of a device (its next setup call needs approval again);
        returns how many pairs were removed. Tokens already issued stay valid until expiry."""
        self._reload()
        keys = [k for k in self._state.approved if k[0] == device_id]
        for key in keys:
            del self._state.approved[key]
        if keys:
            self._save()
        return len(keys)

    def mark_hmac_verified(self, entry: Pending) -> None:
        entry.hmac_verified = True
        self._save()

    # -- internals -----------------------------------------------------------------------------

    def _match(
        self, now: float, *, code: str | None, device_id: str | None, client_id: str | None
    ) -> Pending:
        if code is None and device_id is None:
            raise ActivationNotFound("name the activation by 'code' or by 'device_id'")
        self._reload()
        self._expire(now)
        candidates = [
            p
            for p in self._state.pending.values()
            if (code is None or p.code == code.strip())
            and (device_id is None or p.device_id == device_id)
            and (client_id is None or p.client_id == client_id)
        ]
        if not candidates:
            what = f"code {code!r}" if code is not None else f"device {device_id!r}"
            raise ActivationNotFound(f"no pending activation with {what} (expired or approved?)")
        if len(candidates) > 1:
            clients = ", ".join(sorted(p.client_id for p in candidates))
            raise ActivationNotFound(
                f"device {device_id!r} has {len(candidates)} pending client ids ({clients}): "
                "give 'client_id' or the 'code'"
            )
        return candidates[0]

    def _expire(self, now: float) -> None:
        gone = [k for k, p in self._state.pending.items() if p.expires_at <= now]
        for key in gone:
            entry = self._state.pending.pop(key)
            log.info("activation_expired", device_id=entry.device_id, client_id=entry.client_id)
        if gone:
            self._save()
        for key in gone:
            self._changed("expired", {"device_id": key[0], "client_id": key[1]})

    def _changed(self, change: str, entry: dict[str, Any]) -> None:
        if self.on_change is not None:
            self.on_change(change, entry)

    def _reload(self) -> None:
        """Read the file again when another process (a replica) changed it."""
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            pending = [Pending(**p) for p in raw.get("pending", [])]
            approved = [Approved(**a) for a in raw.get("approved", [])]
        except (OSError, ValueError, TypeError) as err:
            # Refuse to guess: an unreadable file keeps the last state we had, loudly.
            log.error("activations_file_unreadable", path=str(self.path), error=str(err))
            return
        self._state = _State(
            pending={(p.device_id, p.client_id): p for p in pending},
            approved={(a.device_id, a.client_id): a for a in approved},
        )
        self._mtime = mtime

    def _save(self) -> None:
        if self.path is None:
            return
        document = {
            "version": _FILE_VERSION,
            "pending": [asdict(p) for p in self._state.pending.values()],
            "approved": [asdict(a) for a in self._state.approved.values()],
        }
        write_private_file(self.path, json.dumps(document, indent=1))
        self._mtime = self.path.stat().st_mtime_ns


def _random_code() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(ACTIVATION_CODE_DIGITS))
