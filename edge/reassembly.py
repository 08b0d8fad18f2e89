"""Seed 003 ``audio_data`` chunk reassembly, per connection and bounded.

A seed client sends audio longer than one message as chunks of one ``stream_id``
(``chunk_number`` of ``total_chunks``). Chunks may come in any order and be numbered from 0
or from 1 (seed 003 numbers its sample from 1). What one connection may hold is bounded by
:class:`~xiaozhi_edge.limits.EdgeLimits`: ``max_reassembly_bytes`` over all its streams,
``max_reassembly_streams`` streams (a new one evicts the oldest) and
``max_chunks_per_stream`` chunks per stream. A stream that breaks a rule is dropped and the
chunk refused with a typed error; the session answers it like any bad message.

A :class:`ChunkReassembler` is made by a connection's first chunk (most devices never send
one: an idle connection holds none) and freed when the socket ends.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from xiaozhi.errors import InvalidMessage, MissingField, PayloadTooLarge
from xiaozhi_edge.limits import EdgeLimits

__all__ = ["ChunkReassembler"]


@dataclass(slots=True)
class _Stream:
    """A seed ``audio_data`` stream being reassembled."""

    total: int
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class ChunkReassembler:
    """The incomplete chunked streams of one connection.

    Args:
        limits: The connection's limits (the three ``*reassembly*``/``*chunks*`` fields).
    """

    __slots__ = ("_bytes", "_streams", "limits")

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._bytes = 0

    @property
    def held_bytes(self) -> int:
        """Chunk bytes held over all incomplete streams."""
        return self._bytes

    def add(
        self, stream_id: str, total: int | None, number: int | None, chunk: bytes
    ) -> tuple[bytes, int] | None:
        """Add one chunk of a stream.

        Returns:
            The whole file and its chunk count once the stream is complete (the stream is
            then forgotten); None while chunks are missing.

        Raises:
            MissingField: ``total_chunks`` or ``chunk_number`` is absent.
            InvalidMessage: too many chunks, a number outside the stream, or a stream whose
                ``total_chunks`` changed (that stream is dropped).
            PayloadTooLarge: the chunk would take the connection over
                ``max_reassembly_bytes`` (its stream is dropped).
        """
        limits = self.limits
        if total is None:
            raise MissingField(field="data.total_chunks", model="AudioData")
        if number is None:
            raise MissingField(field="data.chunk_number", model="AudioData")
        if total > limits.max_chunks_per_stream:
            raise InvalidMessage(
                f"audio_data: total_chunks {total} is over the limit of "
                f"{limits.max_chunks_per_stream}",
                field="data.total_chunks",
            )
        if number > total:
            raise InvalidMessage(
                f"audio_data: chunk_number {number} is outside 0..{total}",
                field="data.chunk_number",
            )
        streams = self._streams
        stream = streams.get(stream_id)
        if stream is None:
            while len(streams) >= limits.max_reassembly_streams:
                _, evicted = streams.popitem(last=False)
                self._bytes -= evicted.size
            stream = streams[stream_id] = _Stream(total)
        elif stream.total != total:
            self._drop(stream_id)
            raise InvalidMessage(
                f"audio_data: total_chunks changed from {stream.total} to {total} "
                f"in stream {stream_id!r}; the stream was dropped",
                field="data.total_chunks",
            )
        previous = stream.chunks.get(number)
        grow = len(chunk) - (len(previous) if previous is not None else 0)
        if self._bytes + grow > limits.max_reassembly_bytes:
            size = self._bytes + grow
            self._drop(stream_id)
            raise PayloadTooLarge(size=size, limit=limits.max_reassembly_bytes, what="audio stream")
        stream.chunks[number] = chunk
        stream.size += grow
        self._bytes += grow
        numbers = stream.chunks.keys()
        if len(numbers) != total or (min(numbers), max(numbers)) not in (
            (0, total - 1),
            (1, total),
        ):
            return None
        self._drop(stream_id)
        return b"".join(stream.chunks[n] for n in sorted(numbers)), total

    def _drop(self, stream_id: str) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._bytes -= stream.size
