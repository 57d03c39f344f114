"""Streaming STT with the Azure Speech SDK (continuous recognition on a push stream).

The SDK is imported when a stream is created, so the package works without it (the
``azure`` extra). Audio goes into a ``PushAudioInputStream`` of s16le mono at the
stream's rate (a copy of ~1 µs per frame: push_frame never blocks). The SDK calls back on
its own threads; each callback only hands its data to the loop with
``call_soon_threadsafe``, and everything else happens on the loop:

* ``recognizing`` → INTERIM, ``recognized`` → FINAL (NoMatch results are skipped);
* START_OF_SPEECH / END_OF_SPEECH bracket each phrase, as pocketsphinx's do: in continuous
  recognition the service reports speech start and end once per session, so a phrase's
  first ``recognizing`` (or ``speech_start_detected``) starts speech and its
  ``recognized`` ends it; the two strictly alternate;
* ``canceled`` with an error → :class:`~hitl_sip.errors.SpeechError`, retryable for
  connection, timeout, throttling and service errors, not for authentication, permission
  or bad-request errors (:data:`RETRYABLE_CODES`);
* ``session_stopped`` ends the iteration after :meth:`AzureStream.end_input`; without it
  the stop is an error (retryable).

``flush()`` has no SDK counterpart: when a phrase is being recognised it writes
``segmentation_silence_ms`` + 200 ms of silence so the service closes the phrase, and waits
(at most ``flush_timeout``) for its result. ``audio_time`` leaves that silence out, so it
stays on the caller's audio clock.

``endpoint`` (``wss://...`` or, for tests, ``ws://127.0.0.1:PORT/...``) replaces
``region``; the key is then optional.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from hitl_sip.errors import ConfigError, SpeechError
from hitl_sip.speech.azure_codes import RETRYABLE_CODES
from hitl_sip.speech.base import QueuedEvents, SpeechEvent, SpeechEventType

__all__ = ["RETRYABLE_CODES", "AzureStream", "AzureStt"]

logger = logging.getLogger(__name__)

_TICKS_PER_SECOND = 10_000_000

_Posted = SpeechEvent | SpeechError | None


class AzureStt:
    """The ``azure`` engine. ``key`` + ``region``, or ``endpoint`` (+ optional ``key``)."""

    name = "azure"

    def __init__(
        self,
        key: str = "",
        region: str = "",
        *,
        endpoint: str = "",
        segmentation_silence_ms: int = 600,
        flush_timeout: float = 3.0,
    ) -> None:
        if not endpoint and not (key and region):
            raise ConfigError(
                "speech.azure_key", "Azure STT needs a key and a region, or an endpoint"
            )
        if endpoint and region:
            raise ConfigError("speech.azure_endpoint", "give either a region or an endpoint")
        self.key = key
        self.region = region
        self.endpoint = endpoint
        self.segmentation_silence_ms = segmentation_silence_ms
        self.flush_timeout = flush_timeout

    def stream(self, sample_rate: int, language: str = "en-US") -> AzureStream:
        """Start a stream; call from a coroutine (events are posted to its loop)."""
        try:
            import azure.cognitiveservices.speech as speechsdk  # noqa: PLC0415 - optional
        except ImportError as e:
            raise SpeechError(
                "azure: the azure-cognitiveservices-speech package is not installed",
                retryable=False,
            ) from e
        return AzureStream(self, speechsdk, sample_rate, language, asyncio.get_running_loop())

    def _speech_config(self, speechsdk: Any, language: str) -> Any:
        if self.endpoint:
            config = speechsdk.SpeechConfig(endpoint=self.endpoint, subscription=self.key or None)
        else:
            config = speechsdk.SpeechConfig(subscription=self.key, region=self.region)
        config.speech_recognition_language = language
        config.set_property(
            speechsdk.PropertyId.Speech_SegmentationSilenceTimeoutMs,
            str(self.segmentation_silence_ms),
        )
        return config


class AzureStream(QueuedEvents):
    """One continuous-recognition session; see the module docstring."""

    def __init__(
        self,
        engine: AzureStt,
        speechsdk: Any,
        sample_rate: int,
        language: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.sample_rate = sample_rate
        self.dropped_frames = 0  # the SDK buffers everything; kept for the common interface
        self._engine = engine
        self._sdk = speechsdk
        self._loop = loop
        self._events: asyncio.Queue[_Posted] = asyncio.Queue()
        self._pushed = 0.0  # seconds of caller audio
        self._written = 0.0  # seconds written to the SDK, flush silence included
        self._injected: list[tuple[float, float]] = []  # (SDK time, seconds of silence)
        self._phrase_open = False  # INTERIM seen, FINAL/NoMatch not yet
        self._in_speech = False  # START sent, END not yet: they alternate strictly
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._input_ended = False
        self._terminated = False  # an error or the end was posted
        self._closed = False
        try:
            audio_format = speechsdk.audio.AudioStreamFormat(
                samples_per_second=sample_rate, bits_per_sample=16, channels=1
            )
            self._push = speechsdk.audio.PushAudioInputStream(stream_format=audio_format)
            self._recognizer = speechsdk.SpeechRecognizer(
                speech_config=engine._speech_config(speechsdk, language),
                audio_config=speechsdk.audio.AudioConfig(stream=self._push),
            )
        except (RuntimeError, ValueError) as e:
            raise SpeechError(f"azure: cannot create the recognizer: {e}", retryable=False) from e
        self._connect()
        self._recognizer.start_continuous_recognition_async()

    # -- the SttStream API ----------------------------------------------------------------
    def push_frame(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError(f"PCM length must be whole 16-bit samples, got {len(pcm)} bytes")
        if self._input_ended or self._closed:
            return
        self._write(pcm)
        self._pushed += len(pcm) / 2 / self.sample_rate

    async def flush(self) -> None:
        if self._input_ended or self._closed or self._terminated or not self._phrase_open:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._flush_waiters.append(waiter)
        seconds = self._engine.segmentation_silence_ms / 1000 + 0.2
        self._injected.append((self._written, seconds))
        self._write(bytes(round(seconds * self.sample_rate) * 2))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._engine.flush_timeout)
        except TimeoutError:
            logger.debug("stt azure: flush got no result in %.1f s", self._engine.flush_timeout)
        finally:
            if waiter in self._flush_waiters:
                self._flush_waiters.remove(waiter)

    def end_input(self) -> None:
        if self._input_ended or self._closed:
            return
        self._input_ended = True
        self._push.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_flushers()
        recognizer = self._recognizer
        for signal in self._signals():
            signal.disconnect_all()
        await asyncio.to_thread(lambda: recognizer.stop_continuous_recognition_async().get())
        self._events.put_nowait(None)

    def _stream_closed(self) -> bool:
        return self._closed

    # -- audio clock ----------------------------------------------------------------------
    def _write(self, pcm: bytes) -> None:
        self._push.write(pcm)
        self._written += len(pcm) / 2 / self.sample_rate

    def _caller_time(self, ticks: int) -> float:
        """SDK offset (100 ns ticks) → seconds of caller audio (flush silence left out)."""
        sdk_time = ticks / _TICKS_PER_SECOND
        removed = 0.0
        for at, seconds in self._injected:
            if sdk_time <= at:
                break
            removed += min(seconds, sdk_time - at)
        return max(0.0, sdk_time - removed)

    # -- SDK callbacks (SDK threads: hand over to the loop, nothing else) -----------------
    def _signals(self) -> list[Any]:
        r = self._recognizer
        return [
            r.speech_start_detected,
            r.speech_end_detected,
            r.recognizing,
            r.recognized,
            r.canceled,
            r.session_started,
            r.session_stopped,
        ]

    def _connect(self) -> None:
        r = self._recognizer
        r.speech_start_detected.connect(self._threadsafe(self._on_speech_start))
        r.speech_end_detected.connect(self._threadsafe(self._on_speech_end))
        r.recognizing.connect(self._threadsafe(self._on_recognizing))
        r.recognized.connect(self._threadsafe(self._on_recognized))
        r.canceled.connect(self._threadsafe(self._on_canceled))
        r.session_started.connect(self._threadsafe(self._on_session_started))
        r.session_stopped.connect(self._threadsafe(self._on_session_stopped))

    def _threadsafe(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def callback(evt: Any) -> None:
            # a closed loop raises RuntimeError: then nobody is listening any more
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(handler, evt)

        return callback

    # -- the same events, on the loop -----------------------------------------------------
    def _post(self, item: _Posted) -> None:
        if self._terminated or self._closed:
            return
        if item is None or isinstance(item, SpeechError):
            self._terminated = True
            self._wake_flushers()
        self._events.put_nowait(item)

    def _wake_flushers(self) -> None:
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._flush_waiters.clear()

    def _on_session_started(self, evt: Any) -> None:
        logger.debug("stt azure: session %s started", evt.session_id)

    def _start_of_speech(self, ticks: int) -> None:
        if not self._in_speech:
            self._in_speech = True
            start = self._caller_time(ticks)
            self._post(SpeechEvent(SpeechEventType.START_OF_SPEECH, audio_time=start))

    def _end_of_speech(self, ticks: int) -> None:
        if self._in_speech:
            self._in_speech = False
            end = self._caller_time(ticks)
            self._post(SpeechEvent(SpeechEventType.END_OF_SPEECH, audio_time=end))

    def _on_speech_start(self, evt: Any) -> None:
        self._start_of_speech(evt.offset)

    def _on_speech_end(self, evt: Any) -> None:
        self._end_of_speech(evt.offset)

    def _on_recognizing(self, evt: Any) -> None:
        result = evt.result
        if result.text:
            self._phrase_open = True
            self._start_of_speech(result.offset)
            end = self._caller_time(result.offset + result.duration)
            self._post(SpeechEvent(SpeechEventType.INTERIM, result.text, audio_time=end))

    def _on_recognized(self, evt: Any) -> None:
        result = evt.result
        self._phrase_open = False
        end_ticks = result.offset + result.duration
        if result.reason == self._sdk.ResultReason.RecognizedSpeech and result.text:
            self._start_of_speech(result.offset)
            end = self._caller_time(end_ticks)
            logger.debug("stt azure: final at %.2f s", end, extra={"redact": result.text})
            self._post(SpeechEvent(SpeechEventType.FINAL, result.text, audio_time=end))
        self._end_of_speech(end_ticks)
        self._wake_flushers()

    def _on_canceled(self, evt: Any) -> None:
        details = evt.cancellation_details
        reason = details.reason
        if reason == self._sdk.CancellationReason.Error:
            code = details.code.name
            summary = (details.error_details or "").splitlines()
            message = f"azure: {code}: {summary[0] if summary else 'no details'}"
            logger.warning("stt azure: recognition canceled: %s", message)
            self._post(SpeechError(message, retryable=code in RETRYABLE_CODES))
        elif reason == self._sdk.CancellationReason.EndOfStream:
            self._post(None)

    def _on_session_stopped(self, evt: Any) -> None:
        if self._input_ended:
            self._post(None)
        else:
            self._post(SpeechError("azure: session stopped unexpectedly", retryable=True))
