import pytest

from xiaozhi.timestamps import parse_wire_timestamp, wire_timestamp


def test_wire_timestamp_is_seed_003_form_with_milliseconds() -> None:
    assert wire_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert wire_timestamp(1704067200.1234) == "2024-01-01T00:00:00.123Z"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2024-01-01T00:00:00.000Z", 1704067200.0),
        ("2024-01-01T01:00:00+01:00", 1704067200.0),
        ("2024-01-01T00:00:00", 1704067200.0),  # no offset: UTC, as the seeds write it
    ],
)
def test_parse_wire_timestamp(text: str, seconds: float) -> None:
    assert parse_wire_timestamp(text) == seconds


@pytest.mark.parametrize("bad", [None, 12, "yesterday", "2024-13-01T00:00:00Z", "9" * 100])
def test_parse_wire_timestamp_refuses_what_is_not_one(bad: object) -> None:
    assert parse_wire_timestamp(bad) is None


def test_round_trip() -> None:
    assert parse_wire_timestamp(wire_timestamp(1704067200.5)) == 1704067200.5
