"""Device tokens: the reference server's form, bound to one device, expiring."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xiaozhi.errors import AuthenticationFailed, ErrorCode
from xiaozhi.tokens import DEFAULT_TOKEN_TTL_SECONDS, bearer_token, issue_token, verify_token

SECRET = b"test-secret"
NOW = 1_800_000_000


def test_token_has_the_reference_servers_form() -> None:
    token = issue_token(SECRET, client_id="uuid-1", device_id="aa:bb:cc:dd:ee:ff", issued_at=NOW)
    digest = hmac.new(SECRET, f"uuid-1|aa:bb:cc:dd:ee:ff|{NOW}".encode(), hashlib.sha256).digest()
    assert token == base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + f".{NOW}"


@given(
    client_id=st.text(min_size=1, max_size=40),
    device_id=st.text(min_size=1, max_size=40),
    age=st.integers(min_value=0, max_value=DEFAULT_TOKEN_TTL_SECONDS),
)
def test_a_fresh_token_verifies_for_its_own_device(
    client_id: str, device_id: str, age: int
) -> None:
    token = issue_token(SECRET, client_id=client_id, device_id=device_id, issued_at=NOW - age)
    issued = verify_token(SECRET, token, client_id=client_id, device_id=device_id, now=NOW)
    assert issued == NOW - age


GOOD = issue_token(SECRET, client_id="c", device_id="d", issued_at=NOW)


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
        (GOOD, {"device_id": "other"}, "not valid for this device"),
        (GOOD, {"client_id": "other"}, "not valid for this device"),
        (GOOD, {"secret": b"other-secret"}, "not valid for this device"),
        (GOOD, {"now": NOW + DEFAULT_TOKEN_TTL_SECONDS + 1}, "expired"),
        (GOOD, {"now": NOW - 3600}, "in the future"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    token: str | None, kwargs: dict[str, object], reason: str
) -> None:
    args: dict[str, object] = {"client_id": "c", "device_id": "d", "now": NOW, **kwargs}
    secret = args.pop("secret", SECRET)
    with pytest.raises(AuthenticationFailed, match=reason) as info:
        verify_token(secret, token, **args)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.AUTHENTICATION_FAILED
    assert reason in info.value.reason


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
