"""Device tokens: the reference server's text form, signed with Ed25519, bound to one device,
expiring; and keys that travel as text. A xiaozhi-mqtt-gateway's HMAC tokens in that form."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from xiaozhi.activation import activation_hmac, hmac_matches
from xiaozhi.errors import AuthenticationFailed, ConfigurationError, ErrorCode
from xiaozhi.tokens import (
    DEFAULT_GATEWAY_TOKEN_MAX_AGE_SECONDS,
    DEFAULT_TOKEN_TTL_SECONDS,
    bearer_token,
    issue_gateway_token,
    issue_token,
    private_key_from_text,
    public_key_from_text,
    public_key_text,
    verify_gateway_token,
    verify_token,
)

PRIVATE_TEXT = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"  # RFC 8032 test 1's seed
PRIVATE = private_key_from_text(PRIVATE_TEXT)
PUBLIC = public_key_from_text(public_key_text(PRIVATE))
NOW = 1_800_000_000


def test_keys_travel_as_43_base64url_characters() -> None:
    # RFC 8032 section 7.1, test 1: this seed's public key.
    expected = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert base64.urlsafe_b64decode(public_key_text(PRIVATE) + "=") == expected
    assert public_key_text(PUBLIC) == public_key_text(PRIVATE)
    # a fresh private key is what secrets.token_urlsafe(32) writes (the hub's key file)
    fresh = secrets.token_urlsafe(32)
    assert len(public_key_text(private_key_from_text(fresh))) == 43


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not base64!", "not base64url"),
        ("é" * 43, "not base64url"),
        ("abcd", "decodes to 3 bytes"),
    ],
)
def test_a_bad_key_text_names_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        public_key_from_text(text)
    with pytest.raises(ConfigurationError, match=reason):
        private_key_from_text(text)


def test_token_keeps_the_reference_servers_form() -> None:
    token = issue_token(PRIVATE, client_id="uuid-1", device_id="aa:bb:cc:dd:ee:ff", issued_at=NOW)
    signature, _, issued = token.rpartition(".")
    assert issued == str(NOW)
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64  # an Ed25519 signature
    PUBLIC.verify(
        base64.urlsafe_b64decode(signature + "=="), f"uuid-1|aa:bb:cc:dd:ee:ff|{NOW}".encode()
    )


@settings(max_examples=30)
@given(
    client_id=st.text(min_size=1, max_size=40),
    device_id=st.text(min_size=1, max_size=40),
    age=st.integers(min_value=0, max_value=DEFAULT_TOKEN_TTL_SECONDS),
)
def test_a_fresh_token_verifies_for_its_own_device(
    client_id: str, device_id: str, age: int
) -> None:
    token = issue_token(PRIVATE, client_id=client_id, device_id=device_id, issued_at=NOW - age)
    issued = verify_token(PUBLIC, token, client_id=client_id, device_id=device_id, now=NOW)
    assert issued == NOW - age


GOOD = issue_token(PRIVATE, client_id="c", device_id="d", issued_at=NOW)
OTHER_KEY = Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    ("token", "kwargs", "reason"),
    [
        (None, {}, "no token"),
        ("", {}, "no token"),
        ("abc", {}, "malformed token"),
        ("abc.def", {}, "malformed token"),
        (".123", {}, "malformed token"),
        ("abc.\u00b2", {}, "malformed token"),  # a digit to str.isdigit, not to int
        ("abc.\u0663", {}, "malformed token"),  # an Arabic-Indic three
        ("abc." + "9" * 5000, {}, "malformed token"),  # over int()'s digit limit
        ("!!!." + str(NOW), {}, "not valid for this device"),
        ("a." + str(NOW), {}, "malformed token signature"),
        ("é." + str(NOW), {}, "malformed token signature"),
        ("abcd." + str(NOW), {}, "not valid for this device"),  # 3 bytes, not 64
        (GOOD, {"device_id": "other"}, "not valid for this device"),
        (GOOD, {"client_id": "other"}, "not valid for this device"),
        (GOOD, {"key": OTHER_KEY.public_key()}, "not valid for this device"),
        (GOOD, {"now": NOW + DEFAULT_TOKEN_TTL_SECONDS + 1}, "expired"),
        (GOOD, {"now": NOW - 3600}, "in the future"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    token: str | None, kwargs: dict[str, object], reason: str
) -> None:
    args: dict[str, object] = {"client_id": "c", "device_id": "d", "now": NOW, **kwargs}
    key = args.pop("key", PUBLIC)
    with pytest.raises(AuthenticationFailed, match=reason) as info:
        verify_token(key, token, **args)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.AUTHENTICATION_FAILED
    assert reason in info.value.reason


def test_a_token_signed_with_another_key_is_refused() -> None:
    """What an edge could forge with anything it holds: not a token the hub's key verifies."""
    forged = issue_token(OTHER_KEY, client_id="c", device_id="d", issued_at=NOW)
    with pytest.raises(AuthenticationFailed, match="not valid"):
        verify_token(PUBLIC, forged, client_id="c", device_id="d", now=NOW)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.1", "abc.1"),
        ("bearer   abc.1 ", "abc.1"),
        ("abc.1", "abc.1"),
        ("", None),
        (None, None),
        ("Bearer ", "Bearer"),
    ],
)
def test_bearer_token_reads_the_authorization_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_activation_hmac_is_the_firmwares() -> None:
    """`Ota::GetActivationPayload`: hex(HMAC-SHA256(eFuse KEY0, challenge)), lower case."""
    key = bytes(range(32))
    mac = activation_hmac(key, "challenge-1")
    assert mac == "dce0b9e9a2c0d64459ec56d98cf666a27a828a042858c4867a01bd277083128a"
    assert hmac_matches(key, "challenge-1", mac.upper())
    assert not hmac_matches(key, "challenge-2", mac)
    assert not hmac_matches(b"other", "challenge-1", mac)
    assert not hmac_matches(key, "challenge-1", "é")


# -- the xiaozhi-mqtt-gateway's token ---------------------------------------------------------

SECRET = b"Te1st12134"  # the SERVER_SECRET of the xinnan gateway integration guide's example
MAC = "aa:bb:cc:dd:ee:ff"
MAX_AGE = DEFAULT_GATEWAY_TOKEN_MAX_AGE_SECONDS


def app_js_token(secret: bytes, client_id: str, mac: str, timestamp: int) -> str:
    """The gateway's ``WebSocketBridge.connect``, written out: ``createHmac('sha256',
    SERVER_SECRET).update(`${clientId}|${username}|${timestamp}`)``, the digest as base64url
    without padding, then ``.timestamp`` (seconds); ``username`` is the MAC."""
    digest = hmac.new(secret, f"{client_id}|{mac}|{timestamp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=") + f".{timestamp}"


def test_the_gateways_own_token_verifies_within_the_age_either_way() -> None:
    token = app_js_token(SECRET, "uuid-1", MAC, NOW)
    assert issue_gateway_token(SECRET, client_id="uuid-1", device_id=MAC, issued_at=NOW) == token
    for now in (NOW, NOW + MAX_AGE, NOW - MAX_AGE):
        issued = verify_gateway_token(SECRET, token, client_id="uuid-1", device_id=MAC, now=now)
        assert issued == NOW


def test_a_device_without_a_uuid_is_signed_as_default_client_id() -> None:
    """``const clientId = this.uuid || 'default-client-id'`` (a ``GID@@@mac`` client id); the
    gateway then sends no ``client-id`` header."""
    token = app_js_token(SECRET, "default-client-id", MAC, NOW)
    for client_id in (None, ""):
        assert issue_gateway_token(SECRET, client_id=client_id, device_id=MAC, issued_at=NOW) == (
            token
        )
        verify_gateway_token(SECRET, token, client_id=client_id, device_id=MAC, now=NOW)


GATEWAY_GOOD = app_js_token(SECRET, "uuid-1", MAC, NOW)
_SIGNATURE, _, _ = GATEWAY_GOOD.partition(".")
_TAMPERED = ("B" if _SIGNATURE[0] == "A" else "A") + _SIGNATURE[1:]


@pytest.mark.parametrize(
    ("token", "kwargs", "reason"),
    [
        (None, {}, "no token"),
        ("test-token", {}, "the gateway sent 'test-token': set its SERVER_SECRET"),
        ("abc", {}, "malformed token"),
        ("a." + str(NOW), {}, "malformed token signature"),
        (GATEWAY_GOOD, {"secret": b"another secret"}, "not valid for this device"),
        (GATEWAY_GOOD, {"device_id": "aa:bb:cc:dd:ee:00"}, "not valid for this device"),
        (GATEWAY_GOOD, {"client_id": "uuid-2"}, "not valid for this device"),
        (GATEWAY_GOOD, {"client_id": None}, "not valid for this device"),
        (f"{_SIGNATURE}.{NOW + 1}", {}, "not valid for this device"),  # its time moved
        (f"{_TAMPERED}.{NOW}", {}, "not valid for this device"),
        # the hub's device token for the same device is not the gateway's
        (
            issue_token(PRIVATE, client_id="uuid-1", device_id=MAC, issued_at=NOW),
            {},
            "not valid for this device",
        ),
        (GATEWAY_GOOD, {"now": NOW + MAX_AGE + 1}, f"expired: {MAX_AGE + 1} s old, at most"),
        (GATEWAY_GOOD, {"now": NOW + 11, "max_age_seconds": 10}, "expired: 11 s old"),
        (GATEWAY_GOOD, {"now": NOW - MAX_AGE - 1}, f"issued {MAX_AGE + 1} s in the future"),
    ],
)
def test_a_gateway_token_that_does_not_verify_is_refused_with_a_reason(
    token: str | None, kwargs: dict[str, object], reason: str
) -> None:
    args: dict[str, object] = {"client_id": "uuid-1", "device_id": MAC, "now": NOW, **kwargs}
    secret = args.pop("secret", SECRET)
    with pytest.raises(AuthenticationFailed) as info:
        verify_gateway_token(secret, token, **args)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.AUTHENTICATION_FAILED
    assert reason in info.value.reason
