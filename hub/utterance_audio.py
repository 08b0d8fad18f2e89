"""The last utterances' audio, in memory, for the dashboard's play buttons.

The speech unit decodes each utterance it transcribes to 16-bit mono PCM anyway; it keeps that
here under the utterance's ``message_id`` (the id its pipeline steps share), and
``GET /api/v1/utterances/{message_id}/audio`` serves it as a WAV file. Bounded twice: the last
:data:`MAX_UTTERANCES` utterances and at most :data:`MAX_BYTES` of PCM, the oldest going first,
so a chatty fleet never grows the hub. Only the replica that transcribed an utterance has it
(utterances are shared among speech workers), and a restart forgets them all.
"""

from __future__ import annotations

import collections
from typing import Final

from xiaozhi.wav import WavFormat, encode_wav

__all__ = ["MAX_BYTES", "MAX_UTTERANCES", "UtteranceAudio"]

MAX_UTTERANCES: Final = 50
"""Utterances kept."""

MAX_BYTES: Final = 8 * 1024 * 1024
"""PCM kept in all (bytes): ~4 minutes at 16 kHz; an utterance lasts a few seconds."""


class UtteranceAudio:
    """The last utterances' PCM by message id, bounded by count and bytes (module docstring).

    Args:
        max_utterances: utterances kept at most.
        max_bytes: PCM bytes kept at most; a single utterance larger than this is not kept.
    """

    def __init__(self, max_utterances: int = MAX_UTTERANCES, max_bytes: int = MAX_BYTES) -> None:
        self._max_utterances = max_utterances
        self._max_bytes = max_bytes
        self._kept: collections.OrderedDict[str, tuple[bytes, WavFormat]] = (
            collections.OrderedDict()
        )
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, message_id: str, pcm: bytes, sample_rate: int) -> None:
        """Keep one utterance's 16-bit mono PCM; the oldest go while over a bound."""
        if len(pcm) > self._max_bytes:
            return
        self._drop(message_id)
        self._kept[message_id] = (pcm, WavFormat(sample_rate, 1, 16))
        self.bytes += len(pcm)
        while len(self._kept) > self._max_utterances or self.bytes > self._max_bytes:
            self._drop(next(iter(self._kept)))

    def ids(self) -> list[str]:
        """The message ids kept, oldest first."""
        return list(self._kept)

    def wav(self, message_id: str) -> bytes | None:
        """The utterance as a WAV file, or None when it is not (or no longer) kept."""
        kept = self._kept.get(message_id)
        return None if kept is None else encode_wav(*kept)

    def _drop(self, message_id: str) -> None:
        kept = self._kept.pop(message_id, None)
        if kept is not None:
            self.bytes -= len(kept[0])
