"""The offline recogniser: pocketsphinx with a language model built from the home's sentences.

How it works (docs/speech.md has the measurements):

1. :meth:`OfflineRecognizer.load` takes the home's sentences (:func:`corpus_from_intents`),
   builds an ARPA trigram model of them (:mod:`xiaozhi_speech.arpa`) and a dictionary of their
   words (:mod:`xiaozhi_speech.lexicon`), and writes both to a private temporary folder. It is
   called again whenever the home model changes; recognitions already running finish on the
   model they started with.
2. :meth:`OfflineRecognizer.transcribe` decodes the audio with pocketsphinx's bundled en-US
   acoustic model and that language model. :meth:`OfflineRecognizer.open_stream` decodes an
   utterance *while it is spoken* (:class:`RecognizerStream`: audio fed as it arrives, so at
   the end only the last frames and the final search remain). The two differ in one thing:
   a whole utterance is normalised by its own cepstral mean, a stream by its first 1.4 s'
   (:data:`CMN_PREFIX_MS`), so a stream hears most utterances as the whole decode does, not
   all (docs/speech.md has the figures); the acceptance rules are the same.
3. The hypothesis is **accepted only if every sequence of four words of it (sentence ends
   included, :data:`CHECK_ORDER`) occurs in the home's sentences**. A closed-vocabulary
   decoder always outputs words of the domain, even for "tell me a joke"; out-of-domain audio
   comes out as word salad ("tell me a shutter", "all my my room") whose word sequences the
   corpus does not have, so it is refused with reason ``out_of_domain`` instead of being
   guessed into a command. Whatever is accepted still goes through the hub's strict intent
   parser.

pocketsphinx holds the GIL while it decodes (100-250 ms per utterance on this machine), so
every decode, and every model build (about a second of pure Python), runs in a
:class:`~concurrent.futures.ProcessPoolExecutor` of ``workers`` processes (spawned, not
forked: the parent runs an event loop and threads). Each process is its own single-worker
executor, so a stream's calls all reach the process that holds its decoder, in order. A
process keeps one decoder for whole utterances and one per open stream (about 10 MB and
70 ms to make each; at most ``streams_per_worker`` open streams per process), and makes new
ones when a newer model version is handed to it. A process that dies is replaced; the
streams it held fail with :class:`StreamLost` (their audio is still the caller's).

English (en-US) only: the bundled acoustic model and dictionary are English. Other languages
go through :class:`~xiaozhi_speech.wyoming.WyomingSpeechToText` or
:class:`~xiaozhi_speech.openai.OpenAiSpeechToText`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from xiaozhi_speech import arpa, corpus
from xiaozhi_speech import lexicon as lexicon_module
from xiaozhi_speech.arpa import SENTENCE_END, SENTENCE_START, arpa_trigram
from xiaozhi_speech.base import BYTES_PER_SAMPLE, Transcript, pcm_duration_ms
from xiaozhi_speech.corpus import normalize_words
from xiaozhi_speech.lexicon import lexicon

__all__ = [
    "DECODE_RATE",
    "MIN_SPEECH_MS",
    "ModelFiles",
    "OfflineRecognizer",
    "RecognizerClosed",
    "RecognizerStream",
    "StreamLost",
]

DECODE_RATE = 16_000
"""The acoustic model's sample rate; other rates are resampled first."""

MIN_SPEECH_MS = 200
"""Shorter audio is answered ``no_speech`` without decoding (no command is that short)."""

_SILENCE_RMS = 60.0
"""Audio whose RMS (16-bit units) stays under this is answered ``no_speech`` undecoded."""

_LANGUAGES = ("en-US", "en")

CHECK_ORDER = 4
"""Length of the word sequences a hypothesis must share with the corpus to be accepted. Four,
not three: with triples, "turn on the xiaozhi lamp" (an unknown name) came out as "turn on the
light on the led", every triple of which the demo home's sentences have."""


CACHED_MODELS = 4
"""Built models kept in a cache folder (the most recently used); older ones are deleted."""

ModelInputs = Callable[[], Awaitable[tuple[Sequence[str], Sequence[str]]]]
"""What :meth:`OfflineRecognizer.load_cached` awaits on a miss: (sentences, background)."""


class RecognizerClosed(RuntimeError):
    """:meth:`OfflineRecognizer.transcribe` or :meth:`~OfflineRecognizer.load` after
    :meth:`~OfflineRecognizer.aclose`."""


class StreamLost(RuntimeError):
    """The process decoding a :class:`RecognizerStream` died (killed, out of memory): its
    decoder state is gone. The caller still has the audio: transcribe it whole."""


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """One built model version, on disk: what a worker needs to (re)load its decoder."""

    version: int
    lm_path: str
    dict_path: str
    corpus_path: str
    sentences: int
    words: int


@dataclass(frozen=True, slots=True)
class _Heard:
    text: str
    frames: int


class OfflineRecognizer:
    """:class:`~xiaozhi_speech.base.SpeechToText` with pocketsphinx (module docstring).

    Args:
        workers: decoding processes; each decodes one utterance at a time (about 0.1 s of CPU
            per second of audio, so one worker serves several talking devices).
        language: ``en-US`` (or ``en``); the only language the bundled model speaks.
        cache_dir: where :meth:`load_cached` keeps built models (created when needed);
            None: models are built every time.
        streams_per_worker: streams (:meth:`open_stream`) one process decodes at once; each
            holds a decoder (about 10 MB) while its utterance is spoken.

    Raises:
        ValueError: another language, fewer than one worker, or a negative stream bound.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        language: str = "en-US",
        cache_dir: Path | None = None,
        streams_per_worker: int = 4,
    ) -> None:
        if language not in _LANGUAGES:
            raise ValueError(
                f"the offline recogniser speaks en-US only, not {language!r}: "
                "use a Wyoming or OpenAI-compatible engine for other languages"
            )
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if streams_per_worker < 0:
            raise ValueError(f"streams_per_worker must be 0 or more, not {streams_per_worker}")
        self.language = "en-US"
        self.workers = workers
        self.streams_per_worker = streams_per_worker
        self._pools = [_process() for _ in range(workers)]
        self._busy = [0] * workers  # calls in flight, per process
        self._streams = [0] * workers  # open streams, per process
        self._generation = [0] * workers  # bumped when a dead process is replaced
        self._folder = Path(tempfile.mkdtemp(prefix="xiaozhi-speech-"))
        self._cache = cache_dir
        self._model: ModelFiles | None = None
        self._loaded = asyncio.Event()
        self._version = 0
        self._closed = False

    @property
    def open_streams(self) -> int:
        """Streams opened and not yet finished or cancelled."""
        return sum(self._streams)

    def pids(self) -> list[int]:
        """The decoding processes running now (for monitoring, and tests that kill one)."""
        return [pid for pool in self._pools for pid in (pool._processes or {})]

    async def _call(
        self, index: int, fn: Callable[..., _T], *args: object, replace: bool = True
    ) -> _T:
        """Run ``fn(*args)`` in process ``index`` (:meth:`_submit`)."""
        self._busy[index] += 1
        try:
            return await asyncio.wrap_future(self._submit(index, fn, *args, replace=replace))
        finally:
            self._busy[index] -= 1

    def _submit(
        self, index: int, fn: Callable[..., _T], *args: object, replace: bool = True
    ) -> Future[_T]:
        """Queue ``fn(*args)`` on process ``index``. A dead process is replaced first
        (``replace``; its open streams are lost: their generation is over), or the call
        raises :class:`BrokenProcessPool` (a stream's call: its decoder died with it)."""
        try:
            return self._pools[index].submit(fn, *args)
        except BrokenProcessPool:
            if not replace:
                raise
            self._pools[index].shutdown(wait=False)
            self._pools[index] = _process()
            self._generation[index] += 1
            return self._pools[index].submit(fn, *args)

    def _idlest(self) -> int:
        return min(range(self.workers), key=lambda i: (self._busy[i], self._streams[i]))

    @property
    def model(self) -> ModelFiles | None:
        """The model transcriptions use now; None before the first :meth:`load`."""
        return self._model

    async def load(self, sentences: Sequence[str], background: Sequence[str] = ()) -> None:
        """Build the language model and dictionary from ``sentences`` and switch to them.

        Args:
            sentences: the home's sentences (:func:`corpus_from_intents`); normalised again
                here, so any text works. Only these are ever accepted.
            background: sentences the decoder may also hear but that are never accepted
                (:func:`background_from_intents`): speech outside the home's commands comes
                out as its own words and is refused, instead of being forced into the
                nearest command.

        Raises:
            ValueError: no usable sentence (no word with a pronunciation).
            RecognizerClosed: after :meth:`aclose`.
        """
        if self._closed:
            raise RecognizerClosed("the recogniser is closed")
        self._version += 1
        folder = self._folder / f"v{self._version}"
        model = await self._call(
            self._idlest(), build_model, list(sentences), str(folder), self._version,
            list(background),
        )  # fmt: skip
        self._switch(model)

    async def load_cached(self, key: str, inputs: ModelInputs) -> ModelFiles:
        """:meth:`load` the model of ``inputs``, from the cache folder when a model of the
        same ``key`` was built before (by this process or an earlier one).

        Building costs about 30 s for a home (sampling 150,000 sentences, the trigram model),
        and a hub rebuilds on every start: the cache makes a restart, or a second hub of the
        same home, take the decoder's load only. ``key`` must change whenever ``inputs``
        would give other sentences (the hub's: its intents, home and corpus size); the
        source of the model's builder (this module, the corpus, the ARPA writer, the
        lexicon) is added to it here, so a changed builder never reads an old model. Without
        a cache folder this is :meth:`load` of ``await inputs()``.

        Raises:
            ValueError: no usable sentence (no word with a pronunciation).
            RecognizerClosed: after :meth:`aclose`.
        """
        if self._closed:
            raise RecognizerClosed("the recogniser is closed")
        if self._cache is None:
            sentences, background = await inputs()
            await self.load(sentences, background)
            assert self._model is not None
            return self._model
        self._version += 1
        version, entry = self._version, self._cache / _cache_name(key)
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(None, _cached_model, entry, version)
        if model is None:
            sentences, background = await inputs()
            model = await self._call(
                self._idlest(), _build_into_cache, list(sentences), str(entry), version,
                list(background),
            )  # fmt: skip
        self._switch(model)
        return model

    def _switch(self, model: ModelFiles) -> None:
        """Make ``model`` the one new decodes use; delete our own model two versions back
        (one back may still be decoding; a cached one is the cache's to keep)."""
        previous, self._model = self._model, model
        self._loaded.set()
        if previous is None or previous.version >= model.version - 1:
            return
        folder = Path(previous.lm_path).parent
        if folder.parent == self._folder:
            shutil.rmtree(folder, ignore_errors=True)

    async def transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        """Recognise ``pcm`` (16-bit mono little-endian at ``sample_rate``).

        Waits for the first :meth:`load`. Never raises for bad audio: silence, noise and
        out-of-domain speech come back with ``accepted=False`` and a reason.

        Raises:
            RecognizerClosed: after :meth:`aclose`.
        """
        if self._closed:
            raise RecognizerClosed("the recogniser is closed")
        started = time.perf_counter()
        duration = pcm_duration_ms(pcm, sample_rate)
        await self._loaded.wait()
        model = self._model
        assert model is not None  # set before _loaded
        if duration < MIN_SPEECH_MS or _rms(pcm) < _SILENCE_RMS:
            return self._transcript("", 0.0, started, duration, "no_speech")
        index = self._idlest()
        try:
            heard, confidence = await self._call(index, decode, model, pcm, sample_rate)
        except BrokenProcessPool:  # the process died under it: once more, on its successor
            heard, confidence = await self._call(index, decode, model, pcm, sample_rate)
        return self._judged(heard, confidence, started, duration)

    def _judged(
        self, heard: _Heard, confidence: float, started: float, duration: float
    ) -> Transcript:
        """The acceptance rules (module docstring), the same for whole utterances and streams."""
        if not heard.text:
            return self._transcript("", 0.0, started, duration, "no_speech")
        if confidence < 1.0:
            return self._transcript("", confidence, started, duration, "out_of_domain")
        return self._transcript(heard.text, confidence, started, duration, None)

    async def open_stream(self) -> RecognizerStream | None:
        """Start decoding an utterance as it is spoken (16 kHz, 16-bit mono): None when every
        process already decodes ``streams_per_worker`` streams (then transcribe it whole).

        Waits for the first :meth:`load`.

        Raises:
            RecognizerClosed: after :meth:`aclose`.
        """
        if self._closed:
            raise RecognizerClosed("the recogniser is closed")
        await self._loaded.wait()
        free = [i for i in range(self.workers) if self._streams[i] < self.streams_per_worker]
        if not free:
            return None
        index = min(free, key=lambda i: (self._streams[i], self._busy[i]))
        self._streams[index] += 1
        assert self._model is not None  # set before _loaded
        return RecognizerStream(self, index, self._model)

    def _stream_closed(self, index: int) -> None:
        self._streams[index] -= 1

    def _transcript(
        self, text: str, confidence: float, started: float, duration: float, reason: str | None
    ) -> Transcript:
        return Transcript(
            text=text,
            accepted=reason is None,
            confidence=confidence,
            language=self.language,
            processing_time_ms=(time.perf_counter() - started) * 1000,
            audio_duration_ms=duration,
            reason=reason,
        )

    async def aclose(self) -> None:
        """Stop the worker processes and delete the model files."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for pool in self._pools:
            await loop.run_in_executor(None, pool.shutdown, True)
        shutil.rmtree(self._folder, ignore_errors=True)


class RecognizerStream:
    """One utterance decoded while it is spoken (:meth:`OfflineRecognizer.open_stream`).

    :meth:`feed` the audio as it arrives, then :meth:`finish` for the transcript (its
    ``processing_time_ms`` is what was left after the end: the last audio and the final
    search), or :meth:`cancel`. All of a stream's calls go to the one process that holds its
    decoder, in order. The same audio gives the same transcript as
    :meth:`OfflineRecognizer.transcribe`: the same decoding, the same acceptance rules.
    """

    def __init__(self, owner: OfflineRecognizer, index: int, model: ModelFiles) -> None:
        self._owner = owner
        self._index = index
        self._model = model
        self._generation = owner._generation[index]
        self.stream_id = uuid.uuid4().hex
        self._pending: list[Future[None]] = []
        self._chunks: list[bytes] = []
        self._open = True

    @property
    def pcm(self) -> bytes:
        """The audio fed so far (the caller's to transcribe whole if the stream is lost)."""
        return b"".join(self._chunks)

    def feed(self, pcm: bytes) -> None:
        """Queue ``pcm`` (16 kHz, 16-bit mono) for the stream's decoder; returns at once.

        Raises:
            RuntimeError: after :meth:`finish` or :meth:`cancel`.
        """
        if not self._open:
            raise RuntimeError("the stream is finished")
        if not pcm:
            return
        self._chunks.append(pcm)
        if self._lost():
            return  # finish() says so; the audio is kept for the caller
        try:
            self._pending.append(
                self._owner._submit(
                    self._index, stream_feed, self._model, self.stream_id, pcm, replace=False
                )
            )
        except BrokenProcessPool:
            self._generation = -1

    def _lost(self) -> bool:
        return self._generation != self._owner._generation[self._index]

    async def drained(self) -> None:
        """Until the decoder has taken every audio fed so far (what the caller waits on to
        feed no faster than the process decodes).

        Raises:
            StreamLost: the decoding process died.
        """
        try:
            for pending in self._pending:
                await asyncio.wrap_future(pending)
        except BrokenProcessPool as err:
            raise StreamLost("the process decoding the stream died") from err

    async def finish(self) -> Transcript:
        """The transcript of everything fed, by the rules of
        :meth:`OfflineRecognizer.transcribe`.

        Raises:
            StreamLost: the decoding process died; transcribe :attr:`pcm` whole.
            RuntimeError: called twice, or after :meth:`cancel`.
        """
        if not self._open:
            raise RuntimeError("the stream is finished")
        self._open = False
        owner, started = self._owner, time.perf_counter()
        pcm = self.pcm
        duration = pcm_duration_ms(pcm, DECODE_RATE)
        try:
            if duration < MIN_SPEECH_MS or _rms(pcm) < _SILENCE_RMS:
                if not self._lost():
                    with contextlib.suppress(BrokenProcessPool):
                        owner._submit(self._index, stream_drop, self.stream_id, replace=False)
                return owner._transcript("", 0.0, started, duration, "no_speech")
            for pending in self._pending:
                await asyncio.wrap_future(pending)
            if self._lost():
                raise BrokenProcessPool("the stream's process died")
            heard, confidence = await owner._call(
                self._index, stream_end, self._model, self.stream_id, replace=False
            )
        except BrokenProcessPool as err:
            raise StreamLost("the process decoding the stream died") from err
        finally:
            owner._stream_closed(self._index)
        return owner._judged(heard, confidence, started, duration)

    def cancel(self) -> None:
        """Drop the stream (its decoder is freed); nothing after. Safe to call twice."""
        if not self._open:
            return
        self._open = False
        self._owner._stream_closed(self._index)
        if not self._lost():
            with contextlib.suppress(BrokenProcessPool, RuntimeError):
                self._owner._submit(self._index, stream_drop, self.stream_id, replace=False)


_T = TypeVar("_T")


def _process() -> ProcessPoolExecutor:
    """One decoding process (spawned lazily, on its first call)."""
    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_started,
        initargs=(os.getpid(),),
    )


def _worker_started(parent_pid: int) -> None:
    """In a worker, first thing: Ctrl-C reaches the whole process group, but stopping is the
    parent's to do (it shuts the pool down; a worker interrupted mid-wait would only print a
    traceback). And a worker dies with its parent: a hub killed with SIGKILL (or by the OOM
    killer) cannot shut its pool down, and its workers would otherwise wait for work forever,
    each holding a decoder's memory (Linux ``PR_SET_PDEATHSIG``; elsewhere they linger)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _rms(pcm: bytes) -> float:
    import array

    samples = array.array("h", pcm[: len(pcm) - len(pcm) % BYTES_PER_SAMPLE])[::4]
    if not samples:
        return 0.0
    return float((sum(s * s for s in samples) / len(samples)) ** 0.5)


# -- in the worker processes -------------------------------------------------------------


def build_model(
    sentences: list[str], folder: str, version: int, background: Sequence[str] = ()
) -> ModelFiles:
    """Write into ``folder`` the ARPA model of ``sentences`` and ``background``, the
    dictionary of their words, and the corpus hypotheses are checked against: ``sentences``
    only.

    Sentences with a word that has no pronunciation are dropped (and so the word).

    Raises:
        ValueError: nothing usable is left of ``sentences``.
    """
    normalised = list(dict.fromkeys(w for s in sentences if (w := normalize_words(s))))
    heard = list(dict.fromkeys(w for s in background if (w := normalize_words(s))))
    prons = lexicon(word for sentence in (*normalised, *heard) for word in sentence.split())
    usable = [s for s in normalised if all(word in prons for word in s.split())]
    if not usable:
        raise ValueError("no sentence to build the recogniser from")
    own = set(usable)
    modelled = usable + [
        s for s in heard if s not in own and all(word in prons for word in s.split())
    ]
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    lm_path, dict_path, corpus_path = path / "home.arpa", path / "home.dict", path / "corpus.txt"
    lm_path.write_text(arpa_trigram(modelled), encoding="utf-8")
    words = sorted({word for sentence in modelled for word in sentence.split()})
    with dict_path.open("w", encoding="utf-8") as out:
        for word in words:
            for index, phones in enumerate(prons[word]):
                suffix = f"({index + 1})" if index else ""
                out.write(f"{word}{suffix} {phones}\n")
    corpus_path.write_text("\n".join(usable) + "\n", encoding="utf-8")
    return ModelFiles(
        version=version,
        lm_path=str(lm_path),
        dict_path=str(dict_path),
        corpus_path=str(corpus_path),
        sentences=len(usable),
        words=len(words),
    )


@functools.cache
def _builder_digest() -> str:
    """The source of everything that shapes a built model, hashed: part of each cache key."""
    digest = hashlib.sha256()
    for module in (arpa, corpus, lexicon_module, sys.modules[__name__]):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def _cache_name(key: str) -> str:
    return hashlib.sha256(f"{_builder_digest()}\n{key}".encode()).hexdigest()[:32]


_META = "meta.json"
"""Written last into a cache entry: an entry without it is incomplete and not read."""


def _cached_model(entry: Path, version: int) -> ModelFiles | None:
    """The model in cache ``entry`` as ``version``; None when it is not (completely) there."""
    try:
        meta = json.loads((entry / _META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: pruned last
    return ModelFiles(
        version=version,
        lm_path=str(entry / "home.arpa"),
        dict_path=str(entry / "home.dict"),
        corpus_path=str(entry / "corpus.txt"),
        sentences=int(meta["sentences"]),
        words=int(meta["words"]),
    )


def _build_into_cache(
    sentences: list[str], entry: str, version: int, background: Sequence[str]
) -> ModelFiles:
    """:func:`build_model` into a private folder beside ``entry``, renamed to it when whole
    (two processes building the same entry: the first rename wins, the other's is
    dropped), then the cache pruned to :data:`CACHED_MODELS` entries."""
    target = Path(entry)
    building = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    model = build_model(sentences, str(building), version, background)
    meta = {"sentences": model.sentences, "words": model.words}
    (building / _META).write_text(json.dumps(meta), encoding="utf-8")
    try:
        building.rename(target)
    except OSError:  # built meanwhile by another process
        shutil.rmtree(building, ignore_errors=True)
    cached = _cached_model(target, version)
    if cached is None:
        raise OSError(f"the speech model cache entry {target} is unreadable")
    entries = sorted(
        (p for p in target.parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[CACHED_MODELS:]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    for left in target.parent.glob(".*"):  # builds of processes that died an hour ago
        with contextlib.suppress(OSError):
            if time.time() - left.stat().st_mtime > 3600:
                shutil.rmtree(left, ignore_errors=True)
    return cached


class _WorkerState:
    """A worker's decoders and the n-grams of its corpus; rebuilt when the version changes.

    ``decoder`` decodes whole utterances, ``scratch`` measures a stream's cepstral mean
    (:func:`_stream_begin`); ``streams`` holds each open stream, ``idle`` the current
    version's decoders free for the next stream (at most as many as streams were open at
    once)."""

    version = -1
    decoder: object = None
    scratch: object = None
    ngrams: frozenset[tuple[str, ...]] = frozenset()
    streams: dict[str, _Stream] = {}  # noqa: RUF012 (one per process)
    idle: list[object] = []  # noqa: RUF012


@dataclass(slots=True)
class _Stream:
    version: int
    decoder: object
    prefix: bytearray | None  # audio kept until :data:`CMN_PREFIX_MS`; None once decoding


CMN_PREFIX_MS = 1400
"""A stream is decoded from this much audio on, with the cepstral mean of that audio.

A whole utterance is decoded with its own mean (pocketsphinx's batch mode: every frame, then
the search); a stream cannot wait for every frame. On the bench's 174 utterances (one
decoder, docs/benchmarks.md 2026-12-08), commands heard exactly, clean / 25 / 15 dB SNR of
44 each, against the whole decode's 33 / 34 / 10: pocketsphinx's live mean (carried over
from the previous utterances) 27 / 30 / 5, reset to the model's at each utterance 18 / 5 /
0; the mean of the first 0.6 s 23 / 27 / 9, of 1.0 s 32 / 32 / 9, of 1.4 s 33 / 34 / 15
(out-of-domain accepted 0 / 0 / 5 against 0 / 1 / 4). The first 1.4 s, measured by a batch
pass whose words are not read, is close enough to the whole utterance's."""

_PREFIX_BYTES = DECODE_RATE * BYTES_PER_SAMPLE * CMN_PREFIX_MS // 1000

_STATE = _WorkerState()


def _ngrams(words: list[str]) -> list[tuple[str, ...]]:
    """The word n-grams of :data:`CHECK_ORDER` (sentence ends included) of a sentence."""
    padded = [SENTENCE_START, *words, SENTENCE_END]
    size = min(CHECK_ORDER, len(padded))
    return [tuple(padded[i : i + size]) for i in range(len(padded) - size + 1)]


def _new_decoder(model: ModelFiles, **options: object) -> object:
    import pocketsphinx

    return pocketsphinx.Decoder(
        lm=model.lm_path, dict=model.dict_path, loglevel="FATAL", samprate=DECODE_RATE, **options
    )


def _ensure(model: ModelFiles) -> object:
    if _STATE.version != model.version:
        _STATE.decoder = _new_decoder(model)
        _STATE.scratch = None
        corpus = Path(model.corpus_path).read_text(encoding="utf-8").split("\n")
        _STATE.ngrams = frozenset(t for line in corpus if line for t in _ngrams(line.split()))
        _STATE.version = model.version
        _STATE.idle = []
    return _STATE.decoder


def _heard(decoder: object) -> tuple[_Heard, float]:
    """End the decoder's utterance: the words heard and the share of their n-grams the
    corpus has (1.0: every one)."""
    decoder.end_utt()  # type: ignore[attr-defined]
    hyp = decoder.hyp()  # type: ignore[attr-defined]
    text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
    frames = decoder.n_frames()  # type: ignore[attr-defined]
    if not text:
        return _Heard("", frames), 0.0
    ngrams = _ngrams(text.split())
    known = sum(1 for gram in ngrams if gram in _STATE.ngrams)
    return _Heard(text, frames), known / len(ngrams)


def decode(model: ModelFiles, pcm: bytes, sample_rate: int) -> tuple[_Heard, float]:
    """Decode one whole utterance in this worker (:func:`_heard`)."""
    decoder = _ensure(model)
    if sample_rate != DECODE_RATE:
        pcm = _resample(pcm, sample_rate)
    decoder.start_utt()  # type: ignore[attr-defined]
    decoder.process_raw(pcm, False, True)  # type: ignore[attr-defined]
    return _heard(decoder)


def stream_feed(model: ModelFiles, stream_id: str, pcm: bytes) -> None:
    """Feed a stream's next audio (16 kHz): kept until :data:`CMN_PREFIX_MS`, then decoded
    as it comes. Its decoder is made (or taken idle) on the first call."""
    held = _STATE.streams.get(stream_id)
    if held is None:
        _ensure(model)
        decoder = _STATE.idle.pop() if _STATE.idle else _new_decoder(model)
        held = _STATE.streams[stream_id] = _Stream(model.version, decoder, bytearray())
    if held.prefix is None:
        held.decoder.process_raw(pcm, False, False)  # type: ignore[attr-defined]
        return
    held.prefix += pcm
    if len(held.prefix) >= _PREFIX_BYTES:
        _stream_begin(held, model)


def _stream_begin(held: _Stream, model: ModelFiles) -> None:
    """Start the stream's utterance with the cepstral mean of its first
    :data:`CMN_PREFIX_MS` (a batch pass of the scratch decoder; pocketsphinx blends it with
    the previous streams' as it does for whole utterances, so it follows the room), and
    decode them. The scratch's search is wasted (about 40 ms for 1.4 s; ending an utterance
    runs it), but comes while the user still speaks."""
    if _STATE.scratch is None:  # its words are never read: the first pass only (40 % less)
        _STATE.scratch = _new_decoder(model, fwdflat=False, bestpath=False)
    scratch, prefix = _STATE.scratch, bytes(held.prefix or b"")
    scratch.start_utt()  # type: ignore[attr-defined]
    scratch.process_raw(prefix, True, True)  # type: ignore[attr-defined]
    scratch.end_utt()  # type: ignore[attr-defined]
    held.decoder.set_cmn(scratch.get_cmn(False))  # type: ignore[attr-defined]
    held.decoder.start_utt()  # type: ignore[attr-defined]
    held.decoder.process_raw(prefix, False, False)  # type: ignore[attr-defined]
    held.prefix = None


def stream_end(model: ModelFiles, stream_id: str) -> tuple[_Heard, float]:
    """End a stream's utterance (:func:`_heard`, checked against the n-grams of the model
    this process has now) and free its decoder. An utterance shorter than
    :data:`CMN_PREFIX_MS` was only kept: it is decoded whole (:func:`decode`)."""
    held = _STATE.streams.pop(stream_id, None)
    if held is None:  # nothing was fed
        return _Heard("", 0), 0.0
    if held.version == _STATE.version:
        _STATE.idle.append(held.decoder)
    if held.prefix is not None:
        return decode(model, bytes(held.prefix), DECODE_RATE)
    return _heard(held.decoder)


def stream_drop(stream_id: str) -> None:
    """Forget a stream (cancelled, or too short to decode); its decoder is free again."""
    held = _STATE.streams.pop(stream_id, None)
    if held is None:
        return
    if held.prefix is None:
        held.decoder.end_utt()  # type: ignore[attr-defined]
    if held.version == _STATE.version:
        _STATE.idle.append(held.decoder)


def _resample(pcm: bytes, sample_rate: int) -> bytes:
    from xiaozhi_speech.audio import resample

    return resample(pcm, sample_rate, DECODE_RATE)
