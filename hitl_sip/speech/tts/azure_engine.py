"""Azure neural text-to-speech through the Speech SDK (``pip install hitl-sip[azure]``).

The SDK is imported on first use, so the package works without it. Audio is requested as
raw PCM at the call's rate (``Raw8Khz16BitMonoPcm``, ``Raw16Khz16BitMonoPcm``; 24 and
48 kHz too), so nothing is resampled here. Every request is sent as SSML with the text
XML-escaped, which lets each call choose its voice while synthesizers (and their warm
websocket connections) are pooled per sample rate, at most ``max_concurrency`` in use.

Nothing blocks the event loop: ``speak_ssml_async`` returns at once and the SDK's
completed/canceled events, raised on its own thread, resolve an asyncio future with
``call_soon_threadsafe``. A request without an answer within ``timeout`` seconds is
stopped; a synthesizer whose request failed is not reused but closed on a worker thread
(closing a connection can block for up to a second). ``await engine.aclose()`` at shutdown
closes the pooled connections.

A canceled result becomes ``SpeechError``; ``retryable`` follows
``CancellationDetails.error_code``: connection failures, timeouts, service errors and
throttling (429) are retryable, authentication/authorization failures and bad requests
are not. Empty or whitespace-only text yields empty PCM without a request; text longer
than ``max_chars`` raises ``ValueError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from hitl_sip.errors import SpeechError
from hitl_sip.speech.azure_codes import RETRYABLE_CODES

__all__ = ["AzureTts"]

log = logging.getLogger(__name__)

_FORMATS = {
    8000: "Raw8Khz16BitMonoPcm",
    16000: "Raw16Khz16BitMonoPcm",
    24000: "Raw24Khz16BitMonoPcm",
    48000: "Raw48Khz16BitMonoPcm",
}
_RETRYABLE_ERRORS = RETRYABLE_CODES
_DETAILS_LIMIT = 400
# Characters XML 1.0 forbids (and other controls): the service would reject the SSML.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffe\uffff]")
_LOCALE_RE = re.compile(r"[a-z]{2,3}-[A-Z]{2}")


def _import_sdk() -> Any:
    try:
        import azure.cognitiveservices.speech as speechsdk  # noqa: PLC0415
    except ImportError as e:
        raise SpeechError(
            "Azure TTS needs the Speech SDK: pip install 'hitl-sip[azure]' "
            "(azure-cognitiveservices-speech)",
            retryable=False,
        ) from e
    return speechsdk


def build_ssml(text: str, voice: str) -> str:
    """SSML speaking ``text`` (escaped) with ``voice``; the locale comes from the voice name."""
    locale = voice[:5] if _LOCALE_RE.fullmatch(voice[:5]) else "en-US"
    return (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
        f'xml:lang="{locale}"><voice name={quoteattr(voice)}>{escape(text)}</voice></speak>'
    )


class _Synth:
    """One pooled SDK synthesizer and the future of the request it is serving."""

    def __init__(self, sdk: Any, config: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: asyncio.Future[Any] | None = None
        self.request: Any = None  # the SDK's ResultFuture, kept alive until done
        self.synth = sdk.SpeechSynthesizer(speech_config=config, audio_config=None)
        self.connection = sdk.Connection.from_speech_synthesizer(self.synth)
        self.synth.synthesis_completed.connect(self._on_result)
        self.synth.synthesis_canceled.connect(self._on_result)

    def _on_result(self, event: Any) -> None:  # runs on an SDK thread
        future = self.pending
        if future is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has been closed
            self.loop.call_soon_threadsafe(_resolve, future, event.result)

    def speak(self, ssml: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        self.pending = future
        self.request = self.synth.speak_ssml_async(ssml)
        return future

    def finish(self) -> None:
        self.pending = None
        self.request = None

    def stop(self) -> None:
        """Abandon the request in progress (returns at once); late events go nowhere."""
        if self.pending is not None and not self.pending.done():
            self.synth.stop_speaking_async()
        self.finish()

    def close(self) -> None:
        """Disconnect the events and close the websocket. May block (up to ~1 s): use a thread.

        Explicit because the SDK's synthesizer sits in a reference cycle, so dropping it
        would leave the connection open until the garbage collector runs.
        """
        self.synth.synthesis_completed.disconnect_all()
        self.synth.synthesis_canceled.disconnect_all()
        with contextlib.suppress(RuntimeError):
            self.connection.close()


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


class AzureTts:
    """A :class:`~hitl_sip.speech.base.TtsEngine` backed by Azure neural voices.

    Give ``key`` and ``region``, or an ``endpoint`` (``wss://…`` or ``ws://…``, with ``key``
    unless the endpoint needs none, e.g. a local container).
    """

    name = "azure"

    def __init__(
        self,
        *,
        key: str | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        voice: str = "en-US-JennyNeural",
        max_chars: int = 2000,
        max_concurrency: int = 4,
        timeout: float = 15.0,
    ) -> None:
        if endpoint is None and not (key and region):
            raise ValueError("AzureTts needs key and region, or an endpoint")
        if not voice.strip():
            raise ValueError("voice must not be empty")
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._key = key
        self.region = region
        self.endpoint = endpoint
        self.voice = voice
        self.max_chars = max_chars
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrency)
        self._idle: dict[int, list[_Synth]] = {}
        self._closing: set[asyncio.Future[None]] = set()

    @classmethod
    def from_env(cls, **kwargs: Any) -> AzureTts:
        """Configure from AZURE_SPEECH_KEY with AZURE_SPEECH_REGION or AZURE_SPEECH_ENDPOINT."""
        return cls(
            key=os.environ.get("AZURE_SPEECH_KEY") or None,
            region=os.environ.get("AZURE_SPEECH_REGION") or None,
            endpoint=os.environ.get("AZURE_SPEECH_ENDPOINT") or None,
            **kwargs,
        )

    def __repr__(self) -> str:  # never show the key
        where = self.endpoint or self.region
        return f"AzureTts(voice={self.voice!r}, at={where!r})"

    @property
    def cache_namespace(self) -> str:
        """The settings that change the audio, for :class:`~hitl_sip.speech.tts.cache.CachedTts`."""
        return f"voice={self.voice}"

    async def synthesize(self, text: str, sample_rate: int, voice: str | None = None) -> bytes:
        output_format = _FORMATS.get(sample_rate)
        if output_format is None:
            rates = ", ".join(str(rate) for rate in _FORMATS)
            raise ValueError(f"Azure TTS cannot produce {sample_rate} Hz PCM (only {rates})")
        if len(text) > self.max_chars:
            raise ValueError(f"text is {len(text)} characters long, the limit is {self.max_chars}")
        voice = self.voice if voice is None else voice
        if not voice.strip():
            raise ValueError("voice must not be empty")
        spoken = " ".join(_CONTROL_RE.sub(" ", text).split())
        spoken = spoken.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
        if not spoken:
            return b""

        sdk = _import_sdk()
        ssml = build_ssml(spoken, voice)
        started = time.monotonic()
        async with self._slots:
            synth = self._take(sdk, sample_rate, output_format)
            reusable = False
            try:
                try:
                    future = synth.speak(ssml)
                except RuntimeError as e:
                    raise SpeechError(
                        f"Azure Speech SDK refused the request: {e}", retryable=True
                    ) from e
                try:
                    async with asyncio.timeout(self.timeout):
                        result = await future
                except TimeoutError as e:
                    raise SpeechError(
                        f"Azure TTS gave no result within {self.timeout:g} s", retryable=True
                    ) from e
                pcm = _audio(sdk, result)
                reusable = True
            finally:
                if reusable:
                    synth.finish()
                    self._idle.setdefault(sample_rate, []).append(synth)
                else:
                    self._retire(synth)
        log.debug(
            "Azure TTS: %d chars -> %.2f s at %d Hz in %.0f ms",
            len(spoken),
            len(pcm) / 2 / sample_rate,
            sample_rate,
            (time.monotonic() - started) * 1000,
            extra={"redact": {"text": spoken}},
        )
        return pcm

    async def aclose(self) -> None:
        """Close the pooled synthesizers' connections and wait for every close to finish."""
        for pool in self._idle.values():
            for synth in pool:
                self._retire(synth)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _retire(self, synth: _Synth) -> None:
        """Stop ``synth`` and close it on a worker thread; aclose() waits for that."""
        synth.stop()
        closing = asyncio.get_running_loop().run_in_executor(None, synth.close)
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _take(self, sdk: Any, sample_rate: int, output_format: str) -> _Synth:
        pool = self._idle.get(sample_rate)
        if pool:
            return pool.pop()
        try:
            if self.endpoint is not None:
                config = sdk.SpeechConfig(endpoint=self.endpoint, subscription=self._key)
            else:
                config = sdk.SpeechConfig(subscription=self._key, region=self.region)
            config.speech_synthesis_voice_name = self.voice
            config.set_speech_synthesis_output_format(
                getattr(sdk.SpeechSynthesisOutputFormat, output_format)
            )
            return _Synth(sdk, config, asyncio.get_running_loop())
        except (RuntimeError, ValueError) as e:
            raise SpeechError(
                f"Azure Speech SDK rejected the configuration: {e}", retryable=False
            ) from e


def _audio(sdk: Any, result: Any) -> bytes:
    """The PCM of a completed result, or the SpeechError its cancellation calls for."""
    if result.reason == sdk.ResultReason.SynthesizingAudioCompleted:
        audio = bytes(result.audio_data)
        return audio[: len(audio) - len(audio) % 2]
    if result.reason != sdk.ResultReason.Canceled:
        raise SpeechError(
            f"Azure TTS returned an unexpected result: {result.reason}", retryable=True
        )
    details = result.cancellation_details
    if details.reason != sdk.CancellationReason.Error:
        raise SpeechError(
            f"Azure TTS synthesis was canceled ({details.reason.name})", retryable=True
        )
    code = str(details.error_code.name)
    text = str(details.error_details or "").strip().replace("\n", " ")[:_DETAILS_LIMIT]
    raise SpeechError(f"Azure TTS failed ({code}): {text}", retryable=code in _RETRYABLE_ERRORS)
