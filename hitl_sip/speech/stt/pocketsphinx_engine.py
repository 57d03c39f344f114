"""Embedded, offline streaming STT with pocketsphinx 5 and the en-us model from its wheel.

Each stream owns one worker thread (decoding is CPU-bound: ~0.1× real time for 16 kHz input
here, ~0.15× for 8 kHz) fed by a bounded inbox: :meth:`PocketsphinxStream.push_frame` only
appends under a lock, and when more than ``max_buffered`` seconds wait it drops the oldest
audio and counts it in ``dropped_frames``. The worker hands events to the loop with
``call_soon_threadsafe``.

Endpointing is pocketsphinx's WebRTC-style :class:`pocketsphinx.Vad` (``vad_mode`` 0-3)
classifying 20 ms frames, with a small state machine on top:

* speech starts when ``start_frames`` of the last ``start_window`` seconds are speech; the
  decoder then gets ``preroll`` seconds of audio from before that moment, so word onsets
  are not clipped, and START_OF_SPEECH carries the time of the first speech frame;
* quiet frames inside an utterance are held back and decoded only if speech resumes; when
  at most a tenth of the last ``end_silence`` seconds is speech the utterance ends, the
  decoder gets just ``tail`` seconds of the quiet, and FINAL (the hypothesis) and
  END_OF_SPEECH carry the end time of the last speech frame. The FINAL thus reaches the
  loop about ``end_silence`` after the speaker stopped. (Feeding the decoder less line
  noise matters: its cepstral mean normalisation adapts to whatever it hears.)
* every ``interim_interval`` seconds of speech the partial hypothesis, when it changed, is
  sent as INTERIM; an utterance longer than ``max_utterance`` is cut with a FINAL and
  decoding carries on (no END/START pair in between);
* ``flush()`` and ``end_input()`` end a running utterance at once, the same way.

FINAL is sent only with words in it: a noise burst yields START/END with no FINAL.
pocketsphinx gives no useful per-utterance confidence, so ``confidence`` is None.

The model wants 16 kHz; 8 kHz input is upsampled on the worker with a streaming
windowed-sinc filter (4 ms of delay, compensated in ``audio_time``). Decoders (~90 MB,
~0.25 s to load) are pooled per engine and input rate and reused by later streams; a new
one starts from a cepstral mean measured for its rate (:data:`CMN_PRIORS`).

Search effort is a ``speed`` preset (:data:`SPEED_PRESETS`: ``accurate`` is
pocketsphinx's own settings, ``balanced`` and ``fast`` cap the search; the worker takes
``speech.stt_speed``, ``balanced`` by default); explicit ``decoder_options`` override it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hitl_sip.errors import SpeechError
from hitl_sip.media.wav import resample
from hitl_sip.speech.base import QueuedEvents, SpeechEvent, SpeechEventType

__all__ = ["SPEED_PRESETS", "PocketsphinxStream", "PocketsphinxStt", "speed_options"]

logger = logging.getLogger(__name__)

MODEL_RATE = 16000
SUPPORTED_RATES = (8000, 16000)
FEED_BYTES = 2 * MODEL_RATE * 40 // 1000  # 40 ms of audio per decoder call (see _feed)
_FRAME_SECONDS = 0.02
_FRAME_BYTES = MODEL_RATE * 2 * 20 // 1000
# Streaming upsampler: each call filters [context | chunk] and keeps the samples whose
# filter support lies inside it. The resampler's kernel reaches 18 input samples either
# side for 8 -> 16 kHz, so 32 samples of look-ahead delay and 64 of context cover it.
_UPSAMPLE_DELAY = 32
_UPSAMPLE_CONTEXT = 64

# Starting cepstral means per input rate, for new decoders of the built-in model.
# pocketsphinx adapts its cepstral mean normalisation at the end of each utterance, so the
# first utterance a decoder hears is decoded with the starting value, and the model's own
# (40,3,-1) fits neither channel, least of all G.711's 300-3400 Hz band. Measured by
# decoding pocketsphinx-testdata's numbers.raw and something.raw (two speakers, not in the
# tests' WER corpus) at 16 kHz, and through 8 kHz µ-law upsampled to 16 kHz. Decoding each
# corpus clip with a new decoder, WER after G.711 went from 0.76 to 0.53 with the prior
# (16 kHz: 0.37 either way). Pooled decoders are kept per input rate, so a later call
# starts from the mean adapted to the earlier calls on that kind of channel.
CMN_PRIORS = {
    16000: "46.32,-0.80,-3.03,5.10,3.22,-0.95,-2.29,-2.05,-2.87,1.47,-3.78,-0.46,0.22",
    8000: "40.48,19.05,-28.33,27.14,-8.76,-1.53,8.65,-17.79,11.23,-6.61,-3.24,4.64,-7.03",
}

_stream_ids = itertools.count(1)

OptionValue = str | int | float | bool

# Decoder options per speed preset, chosen by measurement (bench/README.md: stt_speed.py,
# and stt_vad.py --stt-speed): the speech process's CPU per stream on a typical G.711 call
# behind the voice-activity gate, against the WER of pocketsphinx-testdata's recordings
# (96 words, so 0.01 is one word). The search, not the acoustic scoring, is the cost:
# pocketsphinx's defaults keep up to 30000 HMMs active per frame; ``maxhmmpf`` caps that
# (and so what a frame can cost: DTMF without the gate went from ~40-50 % of a core to
# 15 %), ``maxwpf`` caps word exits per frame, and a narrower word-exit beam (``wbeam``;
# ``lponlybeam`` for the phone-lookahead pass) drops unlikely word ends early.
# ``balanced``: ~45 % of ``accurate``'s CPU, WER after G.711 0.385 as before (16 kHz
# 0.271 vs 0.281). ``fast`` also skips the flat-lexicon second pass (``fwdflat``) that
# end_utt runs over the utterance: ~a third of the CPU, the FINAL sooner, WER
# after G.711 0.427. Both lose more on a new decoder's first utterance (cold cepstral
# mean; after G.711 0.54 -> 0.62 / 0.64). Frame downsampling (``ds``), fewer Gaussians
# (``topn``) or narrower HMM beams saved less CPU for more WER.
SPEED_PRESETS: Mapping[str, Mapping[str, OptionValue]] = {
    "accurate": {},
    "balanced": {"maxhmmpf": 2500, "maxwpf": 5, "wbeam": 1e-20, "lponlybeam": 1e-20},
    "fast": {
        "maxhmmpf": 2500,
        "maxwpf": 5,
        "wbeam": 1e-20,
        "lponlybeam": 1e-20,
        "fwdflat": False,
    },
}


def speed_options(
    speed: str, decoder_options: Mapping[str, OptionValue] | None = None
) -> dict[str, OptionValue]:
    """The decoder options of preset ``speed``, with ``decoder_options`` over them."""
    try:
        preset = SPEED_PRESETS[speed]
    except KeyError:
        raise ValueError(
            f"pocketsphinx: unknown speed {speed!r}; expected one of {', '.join(SPEED_PRESETS)}"
        ) from None
    return {**preset, **(decoder_options or {})}


@dataclass(frozen=True)
class EndpointSettings:
    """Endpointing and pacing knobs of a stream (seconds unless said otherwise)."""

    end_silence: float = 0.6
    start_window: float = 0.2
    start_frames: int = 6
    preroll: float = 0.2
    tail: float = 0.1
    vad_mode: int = 2
    interim_interval: float | None = 0.5
    max_utterance: float | None = 20.0
    max_buffered: float = 5.0

    def __post_init__(self) -> None:
        if self.end_silence < 0.1:
            raise ValueError(f"end_silence must be at least 0.1 s, got {self.end_silence}")
        window = round(self.start_window / _FRAME_SECONDS)
        if not 1 <= self.start_frames <= window:
            raise ValueError(
                f"start_frames must be between 1 and {window} (start_window), "
                f"got {self.start_frames}"
            )
        if not 0 <= self.vad_mode <= 3:
            raise ValueError(f"vad_mode must be 0..3, got {self.vad_mode}")
        if self.max_buffered <= 0:
            raise ValueError(f"max_buffered must be positive, got {self.max_buffered}")


class PocketsphinxStt:
    """The ``pocketsphinx`` engine: one decoder per stream, pooled between streams.

    ``speed`` picks the search settings from :data:`SPEED_PRESETS` (``accurate``:
    pocketsphinx's own). ``decoder_options`` go to :class:`pocketsphinx.Decoder` over the
    preset's (e.g. ``hmm``, ``lm``, ``dict`` for another model); without ``hmm`` the
    wheel's en-us model is used and only English language tags are accepted.
    """

    name = "pocketsphinx"

    def __init__(
        self,
        *,
        end_silence: float = 0.6,
        vad_mode: int = 2,
        interim_interval: float | None = 0.5,
        max_utterance: float | None = 20.0,
        max_buffered: float = 5.0,
        preroll: float = 0.2,
        tail: float = 0.1,
        decoder_options: Mapping[str, OptionValue] | None = None,
        pool_size: int = 2,
        speed: str = "accurate",
    ) -> None:
        self.settings = EndpointSettings(
            end_silence=end_silence,
            vad_mode=vad_mode,
            interim_interval=interim_interval,
            max_utterance=max_utterance,
            max_buffered=max_buffered,
            preroll=preroll,
            tail=tail,
        )
        self.speed = speed
        self._decoder_options: dict[str, OptionValue] = {"loglevel": "FATAL"}
        self._decoder_options.update(speed_options(speed, decoder_options))
        self.builtin_model = "hmm" not in self._decoder_options
        self._pool_size = pool_size
        self._idle: dict[int, list[Any]] = {}  # by input rate: the channels differ
        self._pool_lock = threading.Lock()

    def stream(self, sample_rate: int, language: str = "en-US") -> PocketsphinxStream:
        """Start a stream; call from a coroutine (the stream posts events to its loop)."""
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(f"pocketsphinx: sample rate {sample_rate} not in {SUPPORTED_RATES}")
        if self.builtin_model and not language.lower().startswith("en"):
            raise SpeechError(
                f"pocketsphinx: no model for language {language!r} (only en-us is built in)",
                retryable=False,
            )
        return PocketsphinxStream(self, sample_rate, asyncio.get_running_loop())

    def preload(self, sample_rate: int, count: int = 1) -> None:
        """Load ``count`` decoders for ``sample_rate`` streams now (blocking, ~0.25 s each)."""
        decoders = [self._new_decoder(sample_rate) for _ in range(count)]
        for decoder in decoders:
            self._release_decoder(sample_rate, decoder)

    def _new_decoder(self, sample_rate: int) -> Any:
        import pocketsphinx  # type: ignore[import-untyped]  # noqa: PLC0415 - loaded when used

        decoder = pocketsphinx.Decoder(**self._decoder_options)
        if self.builtin_model:
            decoder.set_cmn(CMN_PRIORS[sample_rate])
        return decoder

    def _acquire_decoder(self, sample_rate: int) -> Any:
        """A pooled decoder, adapted to earlier calls at this rate, or a new one."""
        with self._pool_lock:
            idle = self._idle.get(sample_rate)
            if idle:
                return idle.pop()
        return self._new_decoder(sample_rate)

    def _release_decoder(self, sample_rate: int, decoder: Any) -> None:
        with self._pool_lock:
            idle = self._idle.setdefault(sample_rate, [])
            if len(idle) < self._pool_size:
                idle.append(decoder)


class _Upsampler:
    """Streaming integer-ratio upsampler to 16 kHz built on :func:`resample`."""

    def __init__(self, src_rate: int) -> None:
        self.src_rate = src_rate
        self.up = MODEL_RATE // src_rate
        self.delay = _UPSAMPLE_DELAY / src_rate if self.up > 1 else 0.0
        self._context = bytes(2 * _UPSAMPLE_CONTEXT)

    def process(self, pcm: bytes) -> bytes:
        if self.up == 1:
            return pcm
        combined = self._context + pcm
        out = resample(combined, self.src_rate, MODEL_RATE)
        samples = len(pcm) // 2
        first = (_UPSAMPLE_CONTEXT - _UPSAMPLE_DELAY) * self.up
        self._context = combined[-2 * _UPSAMPLE_CONTEXT :]
        return out[2 * first : 2 * (first + samples * self.up)]

    def finish(self) -> bytes:
        """The delayed tail: the output still owed for the last input samples."""
        return self.process(bytes(2 * _UPSAMPLE_DELAY)) if self.up > 1 else b""


@dataclass
class _Audio:
    time: float  # input-clock time of the first sample
    pcm: bytes


@dataclass
class _Flush:
    future: asyncio.Future[None]


class _End:
    pass


_Item = _Audio | _Flush | _End
# What the worker posts to the loop: an event, an error, or None for the end.
_Posted = SpeechEvent | SpeechError | None


class _Stopped(Exception):
    """The stream was closed (or its loop is gone) while the worker was busy."""


class _Recognizer:
    """Endpointing state machine plus decoder, fed 16 kHz audio; runs on the worker."""

    def __init__(
        self,
        decoder: Any,
        vad: Any,
        settings: EndpointSettings,
        emit: Callable[[SpeechEvent], None],
        stream_id: int,
    ) -> None:
        self.decoder = decoder
        self.vad = vad
        self.settings = settings
        self.emit = emit
        self.stream_id = stream_id
        self.start_window = round(settings.start_window / _FRAME_SECONDS)
        self.end_window = round(settings.end_silence / _FRAME_SECONDS)
        preroll_frames = max(round(settings.preroll / _FRAME_SECONDS), self.start_window)
        # (start time, frame) of recent frames while no utterance runs
        self.preroll: deque[tuple[float, bytes]] = deque(maxlen=preroll_frames)
        # (start time, is speech) of the last start_window frames while no utterance runs
        self.start_flags: deque[tuple[float, bool]] = deque(maxlen=self.start_window)
        self.end_flags: deque[bool] = deque(maxlen=self.end_window)
        # non-speech frames of the running utterance not yet decoded: they go to the decoder
        # when speech resumes, and only the first tail_frames of them when the utterance ends
        self.held: list[bytes] = []
        self.tail_frames = round(settings.tail / _FRAME_SECONDS)
        self.pending = bytearray()
        self.pending_time = 0.0
        self.in_utterance = False
        self.decoding = False  # between the decoder's start_utt and end_utt
        self.utterance_start = 0.0
        self.last_speech_end = 0.0
        self.next_interim = 0.0
        self.last_interim = ""
        self.clock = 0.0  # end time of the audio seen so far

    # -- audio in -------------------------------------------------------------------------
    def audio(self, pcm: bytes, time: float) -> None:
        expected = self.pending_time + len(self.pending) / 2 / MODEL_RATE
        if not self.pending or abs(time - expected) > 0.001:
            # first audio, or a gap left by dropped frames: restart the frame clock
            self.pending_time = time - len(self.pending) / 2 / MODEL_RATE
        self.pending += pcm
        whole = len(self.pending) // _FRAME_BYTES * _FRAME_BYTES
        for at in range(0, whole, _FRAME_BYTES):
            start = self.pending_time + at / 2 / MODEL_RATE
            self._frame(bytes(self.pending[at : at + _FRAME_BYTES]), start)
        del self.pending[:whole]
        self.pending_time += whole / 2 / MODEL_RATE
        self.clock = self.pending_time + len(self.pending) / 2 / MODEL_RATE

    def _frame(self, frame: bytes, start: float) -> None:
        speech = bool(self.vad.is_speech(frame))
        end = start + _FRAME_SECONDS
        if not self.in_utterance:
            self.preroll.append((start, frame))
            self.start_flags.append((start, speech))
            if sum(flag for _, flag in self.start_flags) >= self.settings.start_frames:
                self._start(first_speech=next(t for t, flag in self.start_flags if flag), now=end)
            return
        self.end_flags.append(speech)
        if speech:
            if self.held:
                self._feed(b"".join(self.held))
                self.held.clear()
            self._feed(frame)
            self.last_speech_end = end
        else:
            self.held.append(frame)
        if len(self.end_flags) == self.end_window and sum(self.end_flags) <= self.end_window // 10:
            self._end(self.last_speech_end)
        elif (
            self.settings.max_utterance is not None
            and end - self.utterance_start >= self.settings.max_utterance
        ):
            self._feed(b"".join(self.held))
            self.held.clear()
            self._final(end)
            self._begin_decoding()
            self.utterance_start = end
        elif self.settings.interim_interval is not None and end >= self.next_interim:
            self.next_interim = end + self.settings.interim_interval
            hyp = self.decoder.hyp()
            text = hyp.hypstr.strip() if hyp is not None else ""
            if text and text != self.last_interim:
                self.last_interim = text
                self.emit(SpeechEvent(SpeechEventType.INTERIM, text, audio_time=end))

    def _feed(self, pcm: bytes) -> None:
        # pocketsphinx holds the GIL while it decodes; held-back audio (the pause before
        # speech resumes, the pre-roll) can be half a second, which would stall the media
        # clock's callbacks and the event loop for tens of ms. Piece by piece, another
        # thread gets the GIL between pieces.
        for start in range(0, len(pcm), FEED_BYTES):  # an empty buffer is never fed
            self.decoder.process_raw(pcm[start:start + FEED_BYTES], False, False)

    def _start(self, first_speech: float, now: float) -> None:
        self.in_utterance = True
        self.utterance_start = self.preroll[0][0]
        self.last_speech_end = now
        self.next_interim = now + (self.settings.interim_interval or 0.0)
        self.last_interim = ""
        self.end_flags.clear()
        self._begin_decoding()
        self._feed(b"".join(frame for _, frame in self.preroll))
        self.preroll.clear()
        self.start_flags.clear()
        start = max(0.0, first_speech)  # the upsampler's delay can put it a little before 0
        self.emit(SpeechEvent(SpeechEventType.START_OF_SPEECH, audio_time=start))

    def _begin_decoding(self) -> None:
        self.decoder.start_utt()
        self.decoding = True

    def _final(self, audio_time: float) -> None:
        self.decoder.end_utt()
        self.decoding = False
        hyp = self.decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        self.last_interim = ""
        if text:
            logger.debug(
                "stt %d: final at %.2f s, %d words",
                self.stream_id,
                audio_time,
                len(text.split()),
                extra={"redact": text},
            )
            self.emit(SpeechEvent(SpeechEventType.FINAL, text, audio_time=audio_time))

    def _end(self, audio_time: float) -> None:
        self.in_utterance = False
        self.end_flags.clear()
        self._feed(b"".join(self.held[: self.tail_frames]))
        self.held.clear()
        self._final(audio_time)
        self.emit(SpeechEvent(SpeechEventType.END_OF_SPEECH, audio_time=audio_time))

    # -- control --------------------------------------------------------------------------
    def finish(self, *, end_of_input: bool) -> None:
        """Force the pending utterance out (flush or end of input)."""
        if self.in_utterance:
            # held frames are quiet after the last speech: the speech ended there
            self._end(self.last_speech_end if self.held else self.clock)
        if end_of_input:
            self.pending.clear()
        self.preroll.clear()
        self.start_flags.clear()

    def abandon(self) -> None:
        """Stop mid-utterance without emitting anything (stream closed)."""
        self.in_utterance = False
        if self.decoding:
            self.decoding = False
            self.decoder.end_utt()


class PocketsphinxStream(QueuedEvents):
    """One recognition stream; see the module docstring for the endpointing rules."""

    def __init__(
        self, engine: PocketsphinxStt, sample_rate: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.sample_rate = sample_rate
        self.dropped_frames = 0
        self._engine = engine
        self._settings = engine.settings
        self._loop = loop
        self._id = next(_stream_ids)
        self._cond = threading.Condition()
        self._inbox: deque[_Item] = deque()
        self._buffered_bytes = 0
        self._max_bytes = int(self._settings.max_buffered * sample_rate) * 2
        self._pushed_samples = 0
        self._input_ended = False
        self._stopping = False  # aclose asked the worker to stop
        self._finished = False  # the worker left its loop (set under the lock)
        self._closed = False
        self._events: asyncio.Queue[_Posted] = asyncio.Queue()
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._work, name=f"stt-pocketsphinx-{self._id}", daemon=True
        )
        self._thread.start()

    # -- the SttStream API ----------------------------------------------------------------
    def push_frame(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError(f"PCM length must be whole 16-bit samples, got {len(pcm)} bytes")
        with self._cond:
            if self._input_ended or self._stopping or self._finished:
                return
            time = self._pushed_samples / self.sample_rate
            self._pushed_samples += len(pcm) // 2
            self._inbox.append(_Audio(time, bytes(pcm)))
            self._buffered_bytes += len(pcm)
            while self._buffered_bytes > self._max_bytes:
                self._drop_oldest_audio()
            self._cond.notify()

    async def flush(self) -> None:
        """Return once the pending utterance (if any) was sent as FINAL + END_OF_SPEECH."""
        future: asyncio.Future[None] = self._loop.create_future()
        with self._cond:
            if self._input_ended or self._stopping or self._finished:
                return
            self._inbox.append(_Flush(future))
            self._cond.notify()
        await future

    def end_input(self) -> None:
        with self._cond:
            if self._input_ended:
                return
            self._input_ended = True
            self._inbox.append(_End())
            self._cond.notify()

    async def aclose(self) -> None:
        self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify()
        await asyncio.shield(self._done)

    def _stream_closed(self) -> bool:
        return self._closed

    # -- the worker thread ----------------------------------------------------------------
    def _drop_oldest_audio(self) -> None:
        for index, item in enumerate(self._inbox):
            if isinstance(item, _Audio):
                del self._inbox[index]
                self._buffered_bytes -= len(item.pcm)
                self.dropped_frames += 1
                return

    def _post(self, item: _Posted) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError as e:  # the loop is closed: nobody is listening any more
            raise _Stopped from e

    def _emit(self, event: SpeechEvent) -> None:
        if self._stopping:
            raise _Stopped
        self._post(event)

    def _resolve(self, future: asyncio.Future[None]) -> None:
        def settle() -> None:
            if not future.done():
                future.set_result(None)

        # a closed loop raises RuntimeError: then nobody awaits the future any more
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle)

    def _work(self) -> None:
        recognizer: _Recognizer | None = None
        error: SpeechError | None = None
        try:
            try:
                import pocketsphinx  # type: ignore[import-untyped]  # noqa: PLC0415

                decoder = self._engine._acquire_decoder(self.sample_rate)
                vad = pocketsphinx.Vad(self._settings.vad_mode, MODEL_RATE, _FRAME_SECONDS)
            except Exception as e:
                error = SpeechError(f"pocketsphinx: cannot load the decoder: {e}", retryable=False)
                logger.warning("stt %d: %s", self._id, error)
                return
            recognizer = _Recognizer(decoder, vad, self._settings, self._emit, self._id)
            self._loop_items(recognizer, _Upsampler(self.sample_rate))
            self._engine._release_decoder(self.sample_rate, decoder)
        except _Stopped:
            if recognizer is not None:
                recognizer.abandon()
                self._engine._release_decoder(self.sample_rate, recognizer.decoder)
        except Exception as e:
            logger.warning("stt %d: pocketsphinx failed", self._id, exc_info=True)
            error = SpeechError(f"pocketsphinx: decoding failed: {e}", retryable=True)
        finally:
            with self._cond:
                self._finished = True
                leftovers = list(self._inbox)
                self._inbox.clear()
            for item in leftovers:
                if isinstance(item, _Flush):
                    self._resolve(item.future)
            with contextlib.suppress(_Stopped):
                self._post(error)
            self._resolve(self._done)

    def _loop_items(self, recognizer: _Recognizer, upsampler: _Upsampler) -> None:
        while True:
            with self._cond:
                while not self._inbox and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    raise _Stopped
                items = list(self._inbox)
                self._inbox.clear()
                self._buffered_bytes = 0
            for item in items:
                if self._stopping:
                    raise _Stopped
                if isinstance(item, _Audio):
                    recognizer.audio(upsampler.process(item.pcm), item.time - upsampler.delay)
                elif isinstance(item, _Flush):
                    recognizer.finish(end_of_input=False)
                    self._resolve(item.future)
                else:
                    recognizer.audio(upsampler.finish(), recognizer.clock)
                    recognizer.finish(end_of_input=True)
                    return
