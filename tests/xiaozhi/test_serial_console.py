"""Seed 003 serial console: commands and replies, both directions, and hostile lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xiaozhi.errors import PayloadTooLarge, SerialCommandError, WireError
from xiaozhi.serial_console import (
    MAX_LINE_CHARS,
    LedCommand,
    RejectedCommand,
    ResetCommand,
    SerialCommand,
    SerialReply,
    SerialStatus,
    SerialVerb,
    StatusQuery,
    VolumeCommand,
    format_command,
    format_reply,
    format_status_reply,
    parse_command,
    parse_reply,
)

# Seed 003 "Example Commands", plus the forms the module docstring adds.
GOLDEN_COMMANDS: list[tuple[str, SerialCommand]] = [
    ("$LED,ON,255#", LedCommand(on=True, brightness=255)),
    ("$LED,ON,0#", LedCommand(on=True, brightness=0)),
    ("$LED,ON#", LedCommand(on=True)),
    ("$LED,OFF#", LedCommand(on=False)),
    ("$VOL,80#", VolumeCommand(80)),
    ("$VOL,0#", VolumeCommand(0)),
    ("$VOL,100#", VolumeCommand(100)),
    ("$STA?#", StatusQuery()),
    ("$RST#", ResetCommand()),
]


@pytest.mark.parametrize(("line", "command"), GOLDEN_COMMANDS, ids=[g[0] for g in GOLDEN_COMMANDS])
def test_golden_commands_both_directions(line: str, command: SerialCommand) -> None:
    assert parse_command(line) == command
    assert format_command(command) == line


@pytest.mark.parametrize("terminator", ["\n", "\r\n", "\r"])
def test_line_terminators_and_bytes_are_accepted(terminator: str) -> None:
    assert parse_command("$VOL,80#" + terminator) == VolumeCommand(80)
    assert parse_command(("$VOL,80#" + terminator).encode()) == VolumeCommand(80)


def test_commands_know_their_verb() -> None:
    assert LedCommand(on=False).verb is SerialVerb.LED
    assert StatusQuery.verb == "STA?"


# --- refusals that get a reply (not exceptions) ---------------------------------------------

REJECTED: list[tuple[str, SerialStatus]] = [
    ("$FOO#", SerialStatus.UNKNOWN),
    ("$led,on#", SerialStatus.UNKNOWN),  # verbs are case-sensitive
    ("$VOL?#", SerialStatus.UNKNOWN),
    ("$,5#", SerialStatus.UNKNOWN),
    ("$ LED,ON#", SerialStatus.UNKNOWN),
    ("$LED#", SerialStatus.PARAM),
    ("$LED,ON,255,1#", SerialStatus.PARAM),
    ("$LED,DIM#", SerialStatus.PARAM),
    ("$LED,on#", SerialStatus.PARAM),
    ("$LED,OFF,5#", SerialStatus.PARAM),
    ("$LED,ON,256#", SerialStatus.PARAM),
    ("$LED,ON,-1#", SerialStatus.PARAM),
    ("$LED,ON,#", SerialStatus.PARAM),
    ("$LED,ON,0255#", SerialStatus.PARAM),
    ("$LED,ON,1000#", SerialStatus.PARAM),
    ("$VOL#", SerialStatus.PARAM),
    ("$VOL,101#", SerialStatus.PARAM),
    ("$VOL,80,1#", SerialStatus.PARAM),
    ("$VOL, 80#", SerialStatus.PARAM),
    ("$VOL,+80#", SerialStatus.PARAM),
    ("$VOL,8_0#", SerialStatus.PARAM),
    ("$VOL,80.0#", SerialStatus.PARAM),
    ("$VOL,080#", SerialStatus.PARAM),
    ("$STA?,1#", SerialStatus.PARAM),
    ("$RST,now#", SerialStatus.PARAM),
]


@pytest.mark.parametrize(("line", "status"), REJECTED, ids=[r[0] for r in REJECTED])
def test_bad_verb_or_parameter_gets_a_reply(line: str, status: SerialStatus) -> None:
    result = parse_command(line)
    assert isinstance(result, RejectedCommand)
    assert result.status is status
    reply = parse_reply(result.reply())
    assert reply.status is status
    assert reply.data == result.reason


def test_rejection_reply_text() -> None:
    assert parse_command("$VOL,150#") == RejectedCommand(
        SerialStatus.PARAM, "VOL", "volume '150' is not an integer 0-100"
    )
    assert parse_command("$FOO#").reply() == "$UNKNOWN,unknown command 'FOO'#"  # type: ignore[union-attr]


def test_long_bad_value_is_quoted_short_so_the_reply_fits() -> None:
    line = "$VOL," + "9" * 120 + "#"
    result = parse_command(line)
    assert isinstance(result, RejectedCommand)
    assert "'9999999999999...'" in result.reason
    assert len(result.reply()) <= MAX_LINE_CHARS


# --- lines that are not commands: typed errors ----------------------------------------------

NOT_COMMANDS: list[tuple[str, str | bytes, type[WireError]]] = [
    ("empty", "", SerialCommandError),
    ("empty bytes", b"", SerialCommandError),
    ("just a newline", "\n", SerialCommandError),
    ("no frame", "VOL,80", SerialCommandError),
    ("no end", "$VOL,80", SerialCommandError),
    ("no start", "VOL,80#", SerialCommandError),
    ("only start", "$", SerialCommandError),
    ("only end", "#", SerialCommandError),
    ("empty body", "$#", SerialCommandError),
    ("leading space", " $RST#", SerialCommandError),
    ("trailing garbage", "$RST#x", SerialCommandError),
    ("two commands", "$RST#$RST#", SerialCommandError),
    ("nested start", "$VOL,$80#", SerialCommandError),
    ("control byte", "$VOL,8\x000#", SerialCommandError),
    ("tab", "$VOL,\t80#", SerialCommandError),
    ("non-ascii text", "$VOL,８０#", SerialCommandError),
    ("non-ascii bytes", b"$VOL,\xff#", SerialCommandError),
    ("too long", "$VOL," + "1" * MAX_LINE_CHARS + "#", PayloadTooLarge),
    ("too long bytes", b"$" + b"A" * MAX_LINE_CHARS + b"#", PayloadTooLarge),
]


@pytest.mark.parametrize(
    ("line", "error"), [n[1:] for n in NOT_COMMANDS], ids=[n[0] for n in NOT_COMMANDS]
)
def test_not_a_command_raises_typed_error(line: str | bytes, error: type[WireError]) -> None:
    with pytest.raises(error):
        parse_command(line)


def test_length_limit_is_inclusive() -> None:
    body = "A" * (MAX_LINE_CHARS - 2)
    assert isinstance(parse_command(f"${body}#"), RejectedCommand)
    with pytest.raises(PayloadTooLarge) as info:
        parse_command(f"${body}#\n")
    assert (info.value.size, info.value.limit) == (MAX_LINE_CHARS + 1, MAX_LINE_CHARS)


def test_format_command_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        format_command("$RST#")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on": True, "brightness": 256}, "0-255"),
        ({"on": True, "brightness": -1}, "0-255"),
        ({"on": False, "brightness": 10}, "LED ON"),
    ],
)
def test_led_command_checks_its_fields(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LedCommand(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("volume", [-1, 101])
def test_volume_command_checks_its_range(volume: int) -> None:
    with pytest.raises(ValueError, match="0-100"):
        VolumeCommand(volume)


# --- replies -------------------------------------------------------------------------------

GOLDEN_REPLIES: list[tuple[str, SerialStatus, str | None]] = [
    ("$OK#", SerialStatus.OK, None),
    ("$ERR#", SerialStatus.ERR, None),
    ("$PARAM#", SerialStatus.PARAM, None),
    ("$TIMEOUT#", SerialStatus.TIMEOUT, None),
    ("$BUSY#", SerialStatus.BUSY, None),
    ("$UNKNOWN#", SerialStatus.UNKNOWN, None),
    ("$OK,VOL=80,LED=ON#", SerialStatus.OK, "VOL=80,LED=ON"),
    ("$ERR,amplifier fault#", SerialStatus.ERR, "amplifier fault"),
]


@pytest.mark.parametrize(
    ("line", "status", "data"), GOLDEN_REPLIES, ids=[g[0] for g in GOLDEN_REPLIES]
)
def test_golden_replies_both_directions(line: str, status: SerialStatus, data: str | None) -> None:
    assert format_reply(status, data) == line
    assert parse_reply(line) == SerialReply(status, data)
    assert parse_reply(line.encode() + b"\r\n") == SerialReply(status, data)


def test_status_reply_both_directions() -> None:
    line = format_status_reply({"LED": "ON", "BRI": 255, "VOL": 80, "WIFI_RSSI": -61})
    assert line == "$OK,LED=ON,BRI=255,VOL=80,WIFI_RSSI=-61#"
    reply = parse_reply(line)
    assert reply.status is SerialStatus.OK
    assert reply.fields() == {"LED": "ON", "BRI": "255", "VOL": "80", "WIFI_RSSI": "-61"}


def test_empty_status_reply() -> None:
    assert format_status_reply({}) == "$OK#"
    assert parse_reply("$OK#").fields() == {}


def test_status_is_coerced_from_text() -> None:
    assert SerialReply("BUSY").status is SerialStatus.BUSY  # type: ignore[arg-type]


UNSAFE_PAIRS: list[dict[str, str]] = [
    {"led": "ON"},
    {"1LED": "ON"},
    {"": "ON"},
    {"LED": ""},
    {"LED": "A,B"},
    {"LED": "A=B"},
    {"LED": "$"},
    {"LED": "#"},
    {"LED": "é"},
    {"K": "x" * MAX_LINE_CHARS},
]


@pytest.mark.parametrize("values", UNSAFE_PAIRS)
def test_status_reply_refuses_unsafe_pairs(values: dict[str, str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        format_status_reply(values)


@pytest.mark.parametrize("data", ["", "a#b", "a$b", "line\nbreak", "é", "x" * MAX_LINE_CHARS])
def test_format_reply_refuses_unsafe_data(data: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        format_reply(SerialStatus.OK, data)


BAD_REPLIES: list[tuple[str, str | bytes, type[WireError]]] = [
    ("empty", "", SerialCommandError),
    ("not framed", "OK", SerialCommandError),
    ("unknown status", "$YES#", SerialCommandError),
    ("lower-case status", "$ok#", SerialCommandError),
    ("comma without data", "$OK,#", SerialCommandError),
    ("too long", "$OK," + "x" * MAX_LINE_CHARS + "#", PayloadTooLarge),
]


@pytest.mark.parametrize(
    ("line", "error"), [b[1:] for b in BAD_REPLIES], ids=[b[0] for b in BAD_REPLIES]
)
def test_bad_reply_raises_typed_error(line: str | bytes, error: type[WireError]) -> None:
    with pytest.raises(error):
        parse_reply(line)


@pytest.mark.parametrize(
    "line", ["$OK,VOL#", "$OK,VOL=#", "$OK,=80#", "$OK,vol=80#", "$OK,VOL=80,VOL=81#", "$OK,A=1,#"]
)
def test_status_fields_must_be_distinct_key_value_pairs(line: str) -> None:
    reply = parse_reply(line)
    with pytest.raises(SerialCommandError):
        reply.fields()


# --- properties ------------------------------------------------------------------------------

commands = st.one_of(
    st.builds(LedCommand, on=st.just(True), brightness=st.none() | st.integers(0, 255)),
    st.just(LedCommand(on=False)),
    st.builds(VolumeCommand, st.integers(0, 100)),
    st.just(StatusQuery()),
    st.just(ResetCommand()),
)


@given(commands)
def test_command_round_trip(command: SerialCommand) -> None:
    assert parse_command(format_command(command)) == command


@given(commands)
def test_valid_command_lines_reformat_identically(command: SerialCommand) -> None:
    line = format_command(command)
    assert format_command(parse_command(line)) == line  # type: ignore[arg-type]


safe_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="$#"),
    min_size=1,
    max_size=60,
)


@given(status=st.sampled_from(SerialStatus), data=st.none() | safe_text)
def test_reply_round_trip(status: SerialStatus, data: str | None) -> None:
    line = format_reply(status, data)
    assert parse_reply(line) == SerialReply(status, data)
    assert parse_reply(line).line() == line


keys = st.from_regex(r"[A-Z][A-Z0-9_]{0,5}", fullmatch=True)
values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="$#,="),
    min_size=1,
    max_size=8,
)


@given(st.dictionaries(keys, values | st.integers(-999, 999), max_size=6))
def test_status_reply_round_trip(pairs: dict[str, str | int]) -> None:
    reply = parse_reply(format_status_reply(pairs))
    assert reply.fields() == {key: str(value) for key, value in pairs.items()}


@given(st.text(max_size=140) | st.binary(max_size=140))
def test_any_line_parses_or_raises_a_wire_error(line: str | bytes) -> None:
    try:
        result = parse_command(line)
    except WireError:
        return
    if isinstance(result, RejectedCommand):
        assert parse_reply(result.reply()).status is result.status
    else:
        assert parse_command(format_command(result)) == result
