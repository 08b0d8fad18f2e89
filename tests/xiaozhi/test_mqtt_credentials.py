"""The xinnan gateway's credential forms (``utils/mqtt_config_v2.js``), with its own example
values: a fleet set up by a xinnan server must keep working when pointed at our edge."""

from __future__ import annotations

import pytest

from xiaozhi.errors import AuthenticationFailed
from xiaozhi.mqtt_credentials import (
    DeviceClientId,
    decode_username,
    encode_username,
    parse_client_id,
    password_matches,
    sign_password,
)

# generateMqttConfig('GID_test', '11:22:33:44:55:66', '36c98363-…', { ip: '222.222.222.222' })
CLIENT_ID = "GID_test@@@11_22_33_44_55_66@@@36c98363-3656-43cb-a00f-8bced2391a90"
USERNAME = "eyJpcCI6IjIyMi4yMjIuMjIyLjIyMiJ9"


def test_client_id_in_both_directions() -> None:
    parsed = parse_client_id(CLIENT_ID)
    assert parsed == DeviceClientId(
        "GID_test", "11:22:33:44:55:66", "36c98363-3656-43cb-a00f-8bced2391a90"
    )
    assert str(parsed) == CLIENT_ID
    assert parsed.inbox_topic == "devices/p2p/11_22_33_44_55_66"
    old = parse_client_id("GID_test@@@11_22_33_44_55_66")
    assert (old.uuid, str(old)) == (None, "GID_test@@@11_22_33_44_55_66")


@pytest.mark.parametrize(
    "text", ["plain-client", "a@@@b@@@c@@@d", "GID@@@@@@uuid", "bad group!@@@11_22@@@u"]
)
def test_other_client_ids_are_refused(text: str) -> None:
    with pytest.raises(AuthenticationFailed, match="xinnan form"):
        parse_client_id(text)


def test_username_is_base64_json() -> None:
    assert encode_username({"ip": "222.222.222.222"}) == USERNAME
    assert decode_username(USERNAME) == {"ip": "222.222.222.222"}
    for bad in ("not base64!", "WzFd", "x" * 2000):  # WzFd is base64 of [1]: not an object
        with pytest.raises(AuthenticationFailed):
            decode_username(bad)


def test_the_password_is_the_hmac_signature() -> None:
    key = b"signature-key"
    password = sign_password(key, CLIENT_ID, USERNAME)
    # printf '%s' "$CLIENT_ID|$USERNAME" | openssl dgst -sha256 -hmac signature-key -binary | base64
    assert password == "rO6vIEaB3rlXCh3gnMZgnrShtQf+IDq6UqREeF0u0bk="
    assert password_matches(key, CLIENT_ID, USERNAME, password)
    assert not password_matches(key, CLIENT_ID, USERNAME + "x", password)
    assert not password_matches(b"other", CLIENT_ID, USERNAME, password)
