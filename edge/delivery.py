"""Command delivery: MQTT commands for one device -> the outputs that carry them out.

A command reaches a session on its command, group or broadcast topic (design.md section 5)
as a :class:`~xiaozhi.payloads.CommandPayload`. What it becomes depends on the device family
(design.md section 4):

* a seed 003 client gets it as a JSON ``command`` envelope; ``respond`` as a ``response``
  envelope with the answer's audio as a base64 WAV;
* real firmware gets ``respond`` as ``stt``/``llm``/``tts`` messages and paced Opus
  (:class:`~xiaozhi_edge.outputs.PlayAudio`), ``alert`` and ``reboot`` as their messages, and
  device functions (volume, LED, status, any ``mcp_call``) as MCP ``tools/call``, whose
  answer comes back later (:func:`call_outcome`).

Every command gets exactly one ``command_result`` on ``xiaozhi/events/{device_id}``: delivered,
refused (bad parameters, device disconnecting, no such tool, too many calls pending), or the
MCP tool's answer or timeout. A command ``message_id`` seen again (QoS 1 redelivery, or the
same command on a group topic and the hub's fan-out onto the device topic) is dropped and
counted: the duplicate-id window remembers the last :data:`DUPLICATE_WINDOW` ids.

The :class:`CommandDelivery` holding that window and the downlink audio clock is made by a
session's first command (an idle connection holds none). The session is passed in, never
kept: everything else a command needs is the session's.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from xiaozhi.binary import encode_opus
from xiaozhi.commands import (
    MCP_TOOL_FOR_COMMAND,
    AlertParameters,
    CommandResult,
    DeviceCommand,
    LedParameters,
    McpCallParameters,
    McpTool,
    RespondParameters,
    VolumeParameters,
    parse_parameters,
)
from xiaozhi.dedup import RecentIds
from xiaozhi.errors import InvalidMessage, WireError
from xiaozhi.gateway_audio import encode_gateway_downlink
from xiaozhi.messages import (
    Alert,
    CommandMessage,
    Llm,
    ResponseData,
    ResponseMessage,
    Stt,
    System,
    SystemCommand,
    Tts,
    TtsState,
)
from xiaozhi.payloads import (
    AudioClip,
    CommandPayload,
    DeviceKind,
    DeviceStatus,
    EventType,
    ResponseStatus,
    UtteranceEncoding,
)
from xiaozhi.topics import TopicKind
from xiaozhi.wav import UPLINK_FORMAT, encode_wav
from xiaozhi_edge.mcp_client import McpBusy, McpCallResult
from xiaozhi_edge.outputs import Output, PlayAudio, Publish, SendText
from xiaozhi_edge.utterances import SAMPLE_RATE
from xiaozhi_runtime import opus

if TYPE_CHECKING:
    from xiaozhi_edge.session import DeviceSession

__all__ = [
    "DUPLICATE_WINDOW",
    "PREBUFFER_FRAMES",
    "CommandDelivery",
    "call_outcome",
    "command_result",
]

DUPLICATE_WINDOW: Final = 128
"""Recent command ``message_id``\\ s remembered per session (QoS 1 redelivery, group fan-out)."""

PREBUFFER_FRAMES: Final = 5
"""TTS frames sent before pacing starts, as the reference server does (reference §5.2)."""

_U32: Final = 2**32


@dataclass(frozen=True, slots=True)
class _CallContext:
    """What a pending MCP call answers: the command and its message_id."""

    command: str
    message_id: str | None


class CommandDelivery:
    """The command state of one session: the duplicate-id window and the downlink clock."""

    __slots__ = ("downlink_ms", "recent")

    def __init__(self) -> None:
        self.recent: RecentIds | None = None  # made by the first command with a message_id
        self.downlink_ms = 0  # timestamp of the next answer frame (v2 / gateway headers)

    def on_command(
        self, session: DeviceSession, raw: bytes, now: float, wall: str, out: list[Output]
    ) -> None:
        """Deliver one command to ``session``'s device (READY, announced; the session checks).

        A command that does not parse is answered with an ``error`` event; any other
        refusal with a failed ``command_result``. Neither touches the socket.
        """
        try:
            command = CommandPayload.from_wire(raw, max_bytes=session.limits.max_frame_bytes)
        except WireError as err:
            session.counters.count_error(err.code.name)
            session.publish_event(
                str(EventType.ERROR),
                wall,
                out,
                source="command",
                error_code=err.code.name,
                error_message=str(err),
            )
            return
        recent = self.recent
        if recent is None and command.message_id is not None:
            recent = self.recent = RecentIds(DUPLICATE_WINDOW)
        if recent is not None and recent.seen(command.message_id):
            session.counters.duplicate_commands += 1
            return
        if not session.ready:
            command_result(
                session,
                command.command,
                command.message_id,
                wall,
                out,
                ok=False,
                error="device is disconnecting",
            )
            return
        try:
            parsed = parse_parameters(command)
        except WireError as err:
            session.counters.count_error(err.code.name)
            command_result(
                session, command.command, command.message_id, wall, out, ok=False, error=str(err)
            )
            return
        session.last_activity = now
        if session.kind is DeviceKind.SEED:
            _deliver_seed(session, command, parsed, wall, out)
        else:
            self._deliver_firmware(session, command, parsed, now, wall, out)

    def _deliver_firmware(
        self,
        session: DeviceSession,
        command: CommandPayload,
        parsed: tuple[DeviceCommand, Any] | None,
        now: float,
        wall: str,
        out: list[Output],
    ) -> None:
        """Real firmware: respond → stt/tts/audio; device functions → MCP ``tools/call``."""
        if parsed is None:
            command_result(
                session,
                command.command,
                command.message_id,
                wall,
                out,
                ok=False,
                error=f"unsupported command {command.command!r} for a firmware device",
            )
            return
        known, params = parsed
        match known:
            case DeviceCommand.RESPOND:
                try:
                    self._respond(session, params, out)
                except InvalidMessage as err:
                    command_result(
                        session,
                        command.command,
                        command.message_id,
                        wall,
                        out,
                        ok=False,
                        error=str(err),
                    )
                    return
                _delivered(session, command, wall, out)
            case DeviceCommand.ALERT:
                alert: AlertParameters = params
                message = Alert(
                    session_id=session.session_id,
                    status=alert.status,
                    message=alert.message,
                    emotion=alert.emotion,
                )
                out.append(SendText(message.to_text()))
                _delivered(session, command, wall, out)
            case DeviceCommand.MCP_CALL:
                call: McpCallParameters = params
                _tool_call(session, command, call.name, call.arguments, now=now, wall=wall, out=out)
            case DeviceCommand.REBOOT:
                tool = _device_tool(session, MCP_TOOL_FOR_COMMAND[known], {})
                if _tool_refusal(session, tool) is None:
                    _tool_call(session, command, tool, {}, now=now, wall=wall, out=out)
                else:
                    out.append(
                        SendText(
                            System(
                                session_id=session.session_id, command=SystemCommand.REBOOT
                            ).to_text()
                        )
                    )
                    _delivered(session, command, wall, out)
            case DeviceCommand.GET_STATUS:
                tool = _device_tool(session, MCP_TOOL_FOR_COMMAND[known], {})
                if _tool_refusal(session, tool) is None:
                    _tool_call(session, command, tool, {}, now=now, wall=wall, out=out)
                else:
                    # No tool to ask: publish what the edge knows now (commands.py).
                    out.append(session.status_publish(DeviceStatus.CONNECTED, wall))
                    command_result(
                        session,
                        command.command,
                        command.message_id,
                        wall,
                        out,
                        ok=True,
                        result="status published",
                    )
            case DeviceCommand.SET_VOLUME:
                volume: VolumeParameters = params
                arguments = {"volume": volume.volume}
                tool = _device_tool(session, MCP_TOOL_FOR_COMMAND[known], arguments)
                _tool_call(session, command, tool, arguments, now=now, wall=wall, out=out)
            case DeviceCommand.LED:
                led: LedParameters = params
                tool = _device_tool(session, McpTool.LIGHT_ON if led.on else McpTool.LIGHT_OFF, {})
                _tool_call(session, command, tool, {}, now=now, wall=wall, out=out)

    def _respond(
        self, session: DeviceSession, params: RespondParameters, out: list[Output]
    ) -> None:
        """stt echo, optional emotion, tts start / sentence_start, audio, then tts stop.

        Raises:
            InvalidMessage: the answer's audio does not decode; nothing is sent.
        """
        packets = _answer_packets(session, params)
        session_id = session.session_id
        if params.stt:
            out.append(SendText(Stt(session_id=session_id, text=params.stt).to_text()))
        if params.emotion:
            out.append(SendText(Llm(session_id=session_id, emotion=params.emotion).to_text()))
        out.append(SendText(Tts(session_id=session_id, state=TtsState.START).to_text()))
        sentence = Tts(session_id=session_id, state=TtsState.SENTENCE_START, text=params.text)
        out.append(SendText(sentence.to_text()))
        frames = []
        for index, packet in enumerate(packets):
            if session.via_gateway:  # the gateway stamps the device's datagrams with it
                stamp = self.downlink_ms
                frames.append(encode_gateway_downlink(packet, sequence=index, timestamp_ms=stamp))
            else:
                # v2 stamps the downlink clock; the device echoes it for server AEC (§1.7).
                frames.append(
                    encode_opus(packet, session.binary_version, timestamp_ms=self.downlink_ms)
                )
            self.downlink_ms = (self.downlink_ms + session.frame_duration_ms) % _U32
        stop = SendText(Tts(session_id=session_id, state=TtsState.STOP).to_text())
        out.append(
            PlayAudio(tuple(frames), session.frame_duration_ms, PREBUFFER_FRAMES, then=(stop,))
        )


def command_result(
    session: DeviceSession,
    command: str,
    message_id: str | None,
    wall: str,
    out: list[Output],
    *,
    ok: bool,
    result: Any = None,
    error: str | None = None,
    **extra: Any,
) -> None:
    assert session.device_id is not None
    payload = CommandResult(
        device_id=session.device_id,
        command=command,
        status=ResponseStatus.OK if ok else ResponseStatus.ERROR,
        message_id=message_id,
        result=result,
        error=error,
        timestamp=wall,
        **extra,
    )
    topic = session.topics.device_events(session.device_id)
    out.append(Publish.of(TopicKind.DEVICE_EVENTS, topic, payload.to_wire()))


def _delivered(
    session: DeviceSession, command: CommandPayload, wall: str, out: list[Output]
) -> None:
    session.counters.commands_delivered += 1
    command_result(
        session, command.command, command.message_id, wall, out, ok=True, result="delivered"
    )


def _deliver_seed(
    session: DeviceSession,
    command: CommandPayload,
    parsed: tuple[DeviceCommand, Any] | None,
    wall: str,
    out: list[Output],
) -> None:
    """Seed 003 devices get commands as JSON; ``respond`` as a ``response`` envelope."""
    if parsed is not None and parsed[0] is DeviceCommand.RESPOND:
        params: RespondParameters = parsed[1]
        try:
            audio_data = _seed_audio(params.audio)
        except InvalidMessage as err:
            command_result(
                session, command.command, command.message_id, wall, out, ok=False, error=str(err)
            )
            return
        answer = ResponseData(
            text=params.text,
            device_id=session.device_id,
            actions=params.actions,
            audio_data=audio_data,
        )
        text = ResponseMessage(
            data=answer, timestamp=wall, device_id=session.device_id, message_id=command.message_id
        ).to_text()
    else:
        data = CommandPayload(
            command=command.command,
            parameters=command.parameters,
            message_id=command.message_id,
        )
        text = CommandMessage(
            data=data, timestamp=wall, device_id=session.device_id, message_id=command.message_id
        ).to_text()
    out.append(SendText(text))
    _delivered(session, command, wall, out)


def _device_tool(session: DeviceSession, tool: McpTool, arguments: dict[str, Any]) -> str:
    """The device's own name for a stock firmware tool (:meth:`McpClient.resolve`); the
    stock name when it has none, so the refusal names what was looked for."""
    mcp = session.existing_mcp
    if mcp is None:  # no tools listed yet: the stock name, as a new client says
        return tool.value
    return mcp.resolve(tool.value, arguments) or tool.value


def _tool_refusal(session: DeviceSession, tool: str) -> str | None:
    """Why ``tool`` cannot be called, or None. Tools still being listed are tried."""
    if not session.features_mcp:
        return "device did not announce MCP (features.mcp)"
    if session.mcp.has_tool(tool) is False:
        return f"device has no MCP tool {tool!r}"
    return None


def _tool_call(
    session: DeviceSession,
    command: CommandPayload,
    tool: str,
    arguments: dict[str, Any],
    *,
    now: float,
    wall: str,
    out: list[Output],
) -> None:
    refusal = _tool_refusal(session, tool)
    if refusal is not None:
        command_result(
            session, command.command, command.message_id, wall, out, ok=False, error=refusal
        )
        return
    context = _CallContext(command.command, command.message_id)
    deadline = now + session.limits.mcp_call_timeout_seconds
    try:
        request = session.mcp.call(tool, arguments, now, deadline, context)
    except McpBusy as err:
        command_result(
            session, command.command, command.message_id, wall, out, ok=False, error=str(err)
        )
        return
    session.send_mcp(request, out)
    session.counters.commands_delivered += 1


def _answer_packets(session: DeviceSession, params: RespondParameters) -> Sequence[bytes]:
    """The answer's Opus packets in this device's frame duration: the hub's speech when
    the command carries it (re-framed if the device asked for another duration), else
    the stand-in chime.

    Raises:
        InvalidMessage: the audio does not decode (bad base64, a corrupt packet).
    """
    clip = params.audio
    if clip is None:
        return session.synthesizer.synthesize(params.text, session.frame_duration_ms)
    if (
        clip.encoding is UtteranceEncoding.OPUS
        and clip.sample_rate == SAMPLE_RATE
        and clip.frame_duration_ms == session.frame_duration_ms
    ):
        return clip.opus_packets()
    return opus.encode(
        _clip_pcm(clip), sample_rate=SAMPLE_RATE, frame_duration_ms=session.frame_duration_ms
    )


def _clip_pcm(clip: AudioClip) -> bytes:
    """A clip's audio as 16 kHz PCM (Opus decodes at any rate; PCM must already be 16 kHz).

    Raises:
        InvalidMessage: undecodable audio, or PCM at another rate.
    """
    if clip.encoding is UtteranceEncoding.OPUS:
        return opus.decode(clip.opus_packets(), sample_rate=SAMPLE_RATE)
    if clip.sample_rate != SAMPLE_RATE:
        raise InvalidMessage(
            f"answer audio: pcm at {clip.sample_rate} Hz, the edge plays {SAMPLE_RATE} Hz",
            field="parameters.audio.sample_rate",
        )
    return clip.pcm_bytes()


def _seed_audio(clip: AudioClip | None) -> str | None:
    """The answer as seed 003's ``audio_data``: a base64 WAV file (16 kHz mono 16-bit)."""
    if clip is None:
        return None
    wav = encode_wav(_clip_pcm(clip), UPLINK_FORMAT)
    return base64.b64encode(wav).decode("ascii")


def call_outcome(
    session: DeviceSession, event: McpCallResult, wall: str, out: list[Output], *, timed_out: bool
) -> None:
    """The ``command_result`` of a command delivered as an MCP ``tools/call``: the tool's
    answer, its error, or its timeout (reference §6.6: the device may never answer)."""
    context = event.context
    if not isinstance(context, _CallContext):
        return
    timeout = session.limits.mcp_call_timeout_seconds
    call_error = f"no answer to {event.name} within {timeout:g} s" if timed_out else event.error
    command_result(
        session,
        context.command,
        context.message_id,
        wall,
        out,
        ok=event.ok,
        result=event.result,
        error=call_error,
        tool=event.name,
    )
