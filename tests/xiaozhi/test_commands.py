"""The command vocabulary: known commands validate their parameters, others pass through."""

from __future__ import annotations

import pytest

from xiaozhi.commands import (
    DeviceCommand,
    LedParameters,
    RespondParameters,
    VolumeParameters,
    parse_parameters,
)
from xiaozhi.errors import InvalidMessage, MissingField
from xiaozhi.payloads import CommandPayload, parse_payload


def _command(raw: bytes) -> CommandPayload:
    return parse_payload(CommandPayload, raw)


def test_a_respond_command_carries_text_stt_and_actions() -> None:
    command = _command(
        b'{"command":"respond","parameters":{"text":"Turning on the living room light.",'
        b'"stt":"turn on the living room light","actions":[{"type":"homeassistant",'
        b'"action":"turn_on","entity_id":"light.living_room","parameters":{}}]},'
        b'"message_id":"m1","device_id":"aabbccddeeff"}'
    )
    parsed = parse_parameters(command)
    assert parsed is not None
    kind, params = parsed
    assert kind is DeviceCommand.RESPOND
    assert isinstance(params, RespondParameters)
    assert params.actions[0].entity_id == "light.living_room"
    assert params.stt == "turn on the living room light"


def test_a_respond_command_carries_its_spoken_answer() -> None:
    command = _command(
        b'{"command":"respond","parameters":{"text":"Done.","audio":{"encoding":"opus",'
        b'"sample_rate":16000,"frame_duration_ms":60,"frames":["+Ag=","+Ag="],'
        b'"duration_ms":120}}}'
    )
    _, params = parse_parameters(command)  # type: ignore[misc]
    assert params.audio is not None
    assert params.audio.opus_packets() == [b"\xf8\x08", b"\xf8\x08"]
    assert params.audio.duration_ms == 120


def test_set_volume_and_led_validate_their_ranges() -> None:
    kind, params = parse_parameters(
        _command(b'{"command":"set_volume","parameters":{"volume":80}}')
    )  # type: ignore[misc]
    assert kind is DeviceCommand.SET_VOLUME
    assert params == VolumeParameters(volume=80)
    _, led = parse_parameters(_command(b'{"command":"led","parameters":{"on":true}}'))  # type: ignore[misc]
    assert led == LedParameters(on=True)


@pytest.mark.parametrize(
    ("raw", "error", "field"),
    [
        (
            b'{"command":"set_volume","parameters":{"volume":180}}',
            InvalidMessage,
            "parameters.volume",
        ),
        (b'{"command":"set_volume","parameters":{}}', MissingField, "parameters.volume"),
        (b'{"command":"respond","parameters":{"stt":"x"}}', MissingField, "parameters.text"),
        (
            b'{"command":"led","parameters":{"on":true,"brightness":999}}',
            InvalidMessage,
            "parameters.brightness",
        ),
        (b'{"command":"alert","parameters":{"status":"x"}}', MissingField, "parameters.message"),
        (
            b'{"command":"respond","parameters":{"text":"x","audio":{"encoding":"opus",'
            b'"sample_rate":96000,"frames":[],"duration_ms":0}}}',
            InvalidMessage,
            "parameters.audio.sample_rate",
        ),
    ],
)
def test_bad_parameters_name_the_field(raw: bytes, error: type[Exception], field: str) -> None:
    with pytest.raises(error) as info:
        parse_parameters(_command(raw))
    assert info.value.field == field  # type: ignore[attr-defined]


def test_an_unknown_command_passes_through_for_seed_devices() -> None:
    assert parse_parameters(_command(b'{"command":"turn_on_light","parameters":{"x":1}}')) is None
