"""`xiaozhi bench codecs`: encode and decode rate of every wire format.

Each figure stands beside its reference: the bare primitive the codec is built on (struct,
msgpack, orjson, a string split), run the same way in the same process. The ratio is the
share of the primitive's speed our checks and models keep.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import orjson

from xiaozhi.audio_monitor import AudioPacket, decode_audio_packet, encode_audio_packet
from xiaozhi.binary import decode_frame, encode_opus
from xiaozhi.messages import AudioParams, ServerHello, parse_device_message
from xiaozhi.payloads import StatusPayload, parse_payload
from xiaozhi.serial_console import parse_command
from xiaozhi.stream_frame import MessageType, StreamMessage, decode_message, encode_message
from xiaozhi.wav import UPLINK_FORMAT, decode_wav, encode_wav
from xiaozhi_bench.runner import Figure, Report, measure_rate

__all__ = ["run_codecs"]

OPUS_60MS = b"\xff\xfb\x90\x00" + b"\x00" * 156  # seed 000's 160-byte test payload
_V2 = struct.Struct(">HHIII")
_V3 = struct.Struct(">BBH")
_MONITOR = struct.Struct("<BIHII")
_STREAM_V3 = struct.Struct(">BBBIIQ")


@dataclass(frozen=True, slots=True)
class _Case:
    name: str
    ours: Callable[[], object]
    reference: Callable[[], object]
    reference_name: str


def _binary_cases() -> list[_Case]:
    v2 = encode_opus(OPUS_60MS, 2, timestamp_ms=60)
    v3 = encode_opus(OPUS_60MS, 3)

    def ref_decode_v2() -> object:
        header = _V2.unpack_from(v2)
        return header, v2[16 : 16 + header[4]]

    def ref_decode_v3() -> object:
        header = _V3.unpack_from(v3)
        return header, v3[4 : 4 + header[2]]

    return [
        _Case("binary v1 decode", lambda: decode_frame(OPUS_60MS, 1),
              lambda: bytes(OPUS_60MS), "bytes()"),
        _Case("binary v2 encode", lambda: encode_opus(OPUS_60MS, 2, timestamp_ms=60),
              lambda: _V2.pack(2, 0, 0, 60, 160) + OPUS_60MS, "struct.pack"),
        _Case("binary v2 decode", lambda: decode_frame(v2, 2), ref_decode_v2, "struct.unpack"),
        _Case("binary v3 encode", lambda: encode_opus(OPUS_60MS, 3),
              lambda: _V3.pack(0, 0, 160) + OPUS_60MS, "struct.pack"),
        _Case("binary v3 decode", lambda: decode_frame(v3, 3), ref_decode_v3, "struct.unpack"),
    ]  # fmt: skip


def _monitor_cases() -> list[_Case]:
    packet = AudioPacket(timestamp_ms=1200, duration_ms=60, sequence=20, opus=OPUS_60MS)
    wire = encode_audio_packet(packet)
    return [
        _Case("audio monitor encode", lambda: encode_audio_packet(packet),
              lambda: _MONITOR.pack(2, 1200, 60, 20, 160) + OPUS_60MS, "struct.pack"),
        _Case("audio monitor decode", lambda: decode_audio_packet(wire),
              lambda: (_MONITOR.unpack_from(wire), wire[15:]), "struct.unpack"),
    ]  # fmt: skip


def _stream_cases() -> list[_Case]:
    small = {"device_id": "aabbccddeeff", "status": "connected", "uptime": 3600}
    large = {"signal": [i * 0.001 for i in range(600)], "device_id": "aabbccddeeff"}
    ts = 1_800_000_000_000_000
    small_msg = StreamMessage(MessageType.HEARTBEAT, small, timestamp_us=ts)
    large_msg = StreamMessage(MessageType.ECG_DATA, large, timestamp_us=ts)
    small_wire, large_wire = encode_message(small_msg), encode_message(large_msg)

    def ref_encode(data: object, compress: bool) -> bytes:
        payload = msgpack.packb(data)
        if compress:
            payload = zlib.compress(payload, 6)
        return _STREAM_V3.pack(3, 0x10, 0, len(payload), zlib.crc32(payload), ts) + payload

    def ref_decode(wire: bytes, compressed: bool) -> object:
        payload = wire[19:]
        zlib.crc32(payload)
        return msgpack.unpackb(zlib.decompress(payload) if compressed else payload)

    return [
        _Case("stream v3 encode small", lambda: encode_message(small_msg),
              lambda: ref_encode(small, False), "msgpack+crc32"),
        _Case("stream v3 decode small", lambda: decode_message(small_wire),
              lambda: ref_decode(small_wire, False), "crc32+msgpack"),
        _Case("stream v3 encode 5 KB zlib", lambda: encode_message(large_msg),
              lambda: ref_encode(large, True), "msgpack+zlib+crc32"),
        _Case("stream v3 decode 5 KB zlib", lambda: decode_message(large_wire),
              lambda: ref_decode(large_wire, True), "crc32+zlib+msgpack"),
    ]  # fmt: skip


def _json_cases() -> list[_Case]:
    listen = b'{"session_id":"s1","type":"listen","state":"detect","text":"turn on the light"}'
    hello = ServerHello(
        session_id="s1",
        audio_params=AudioParams(format="opus", sample_rate=16000, channels=1, frame_duration=60),
    )
    hello_dict = hello.to_json_dict()
    status = (
        b'{"status":"connected","uptime":3600,"memory_usage":65,"cpu_usage":45,'
        b'"wifi_signal":-45,"timestamp":"2024-01-01T00:00:00Z","device_id":"aabbccddeeff"}'
    )
    return [
        _Case("json listen parse", lambda: parse_device_message(listen),
              lambda: orjson.loads(listen), "orjson.loads"),
        _Case("json server hello encode", hello.to_wire,
              lambda: orjson.dumps(hello_dict), "orjson.dumps"),
        _Case("json status payload parse", lambda: parse_payload(StatusPayload, status),
              lambda: json.loads(status), "json.loads"),
    ]  # fmt: skip


def _small_cases() -> list[_Case]:
    pcm = b"\x01\x00" * 16000  # one second at 16 kHz mono 16-bit
    wav = encode_wav(pcm, UPLINK_FORMAT)
    return [
        _Case("serial command parse", lambda: parse_command("$VOL,80#"),
              lambda: "$VOL,80#"[1:-1].split(","), "str.split"),
        _Case("wav 1 s encode", lambda: encode_wav(pcm, UPLINK_FORMAT),
              lambda: b"RIFF" + bytes(40) + pcm, "bytes concat"),
        _Case("wav 1 s decode", lambda: decode_wav(wav), lambda: wav[44:], "slice"),
    ]  # fmt: skip


def run_codecs(seconds: float) -> Report:
    """Measure every case for `seconds` each (ours, then the reference)."""
    report = Report(case="codecs")
    cases = _binary_cases() + _monitor_cases() + _stream_cases() + _json_cases() + _small_cases()
    for case in cases:
        ours = measure_rate(case.ours, seconds)
        reference = measure_rate(case.reference, seconds)
        report.figures.append(
            Figure(
                case.name, ours, "ops/s", reference=reference, reference_name=case.reference_name
            )
        )
    return report
