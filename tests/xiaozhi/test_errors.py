"""The error tree: each peer error answers with its seed-002 code, carrying its fields."""

from __future__ import annotations

import pytest

from xiaozhi import errors
from xiaozhi.errors import ErrorCode
from xiaozhi.messages import parse_device_message


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.TruncatedFrame(size=3, needed=4), ErrorCode.INVALID_DATA_FORMAT),
        (errors.LengthMismatch(declared=9, actual=4), ErrorCode.INVALID_DATA_FORMAT),
        (errors.UnknownFrameType(frame_type=7, known=(0, 1)), ErrorCode.INVALID_MESSAGE_TYPE),
        (errors.VersionMismatch(expected=2, got=3), ErrorCode.INVALID_PROTOCOL_VERSION),
        (
            errors.UnsupportedVersion(version=9, supported=(1, 2, 3)),
            ErrorCode.INVALID_PROTOCOL_VERSION,
        ),
        (errors.ChecksumMismatch(expected=1, actual=2), ErrorCode.CHECKSUM_MISMATCH),
        (errors.PayloadTooLarge(size=10, limit=5), ErrorCode.MESSAGE_TOO_LARGE),
        (errors.DecompressionFailed("bad zlib"), ErrorCode.DECOMPRESSION_FAILED),
        (errors.InvalidMessage("bad", field="x"), ErrorCode.INVALID_DATA_FORMAT),
        (errors.MissingField(field="x", model="m"), ErrorCode.MISSING_REQUIRED_FIELDS),
        (
            errors.UnknownMessageType(msg_type="zz", known=("a",), side="device"),
            ErrorCode.INVALID_MESSAGE_TYPE,
        ),
        (errors.AuthenticationFailed("no token"), ErrorCode.AUTHENTICATION_FAILED),
        (errors.RateLimited(rate=50, limit=20), ErrorCode.RATE_LIMIT_EXCEEDED),
    ],
)
def test_each_peer_error_carries_its_wire_code(error: errors.WireError, code: ErrorCode) -> None:
    assert error.code is code
    assert isinstance(error, errors.XiaozhiError)


def test_every_code_has_an_explanation_and_the_seed_numbers() -> None:
    assert [int(c) for c in ErrorCode] == [
        0x100, 0x101, 0x102, 0x103, 0x104, 0x200, 0x201, 0x202, 0x203, 0x204,
    ]  # fmt: skip
    assert ErrorCode.RATE_LIMIT_EXCEEDED.explanation == "Rate limit exceeded"
    assert all(code.explanation for code in ErrorCode)


def test_messages_name_the_values_they_refuse() -> None:
    assert str(errors.RateLimited(rate=50, limit=20)) == "messages at 50/s over the limit of 20/s"
    assert str(errors.PayloadTooLarge(size=10, limit=5)) == "payload 10 B > limit 5 B"
    assert "0x07" in str(errors.UnknownFrameType(frame_type=7, known=(0, 1)))


def test_an_unknown_json_type_answers_invalid_message_type() -> None:
    with pytest.raises(errors.UnknownMessageType) as info:
        parse_device_message(b'{"type":"teleport"}')
    assert info.value.code is ErrorCode.INVALID_MESSAGE_TYPE
    assert info.value.field == "type"
    assert "teleport" in str(info.value)
    assert "listen" in info.value.known


def test_a_bad_topic_is_caller_misuse_not_a_peer_error() -> None:
    error = errors.InvalidTopic("bad id", value="a/b")
    assert isinstance(error, ValueError)
    assert not isinstance(error, errors.WireError)
    assert error.value == "a/b"


@pytest.mark.parametrize(
    ("error_class", "builtin"),
    [
        (errors.ConfigurationError, ValueError),
        (errors.StartupError, RuntimeError),
        (errors.OperationFailed, ValueError),
    ],
)
def test_component_error_bases_join_the_tree_and_keep_their_builtin_meaning(
    error_class: type[errors.XiaozhiError], builtin: type[Exception]
) -> None:
    err = error_class("nope")
    assert isinstance(err, errors.XiaozhiError)
    assert isinstance(err, builtin)
    assert not isinstance(err, errors.WireError)
