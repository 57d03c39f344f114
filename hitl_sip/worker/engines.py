"""Builds the speech engines and the flow a worker's calls use, from the configuration."""

from __future__ import annotations

from hitl_sip.bot.flow import Flow, load_flow
from hitl_sip.config import Config
from hitl_sip.speech.base import SttEngine, TtsEngine
from hitl_sip.speech.stt.azure_engine import AzureStt
from hitl_sip.speech.stt.pocketsphinx_engine import PocketsphinxStt
from hitl_sip.speech.stt.process import ProcessStt
from hitl_sip.speech.stt.resilient import ResilientStt
from hitl_sip.speech.stt.vad import VadGatedStt, VadSettings
from hitl_sip.speech.tts.azure_engine import AzureTts
from hitl_sip.speech.tts.cache import CachedTts
from hitl_sip.speech.tts.espeak_engine import EspeakTts


def build_tts(config: Config) -> TtsEngine:
    s = config.speech
    engine: TtsEngine
    if s.tts == "azure":
        engine = AzureTts(key=s.azure_key, region=s.azure_region or None,
                          endpoint=s.azure_endpoint or None,
                          voice=s.voice or "en-US-JennyNeural")
    else:
        engine = EspeakTts(voice=s.voice or "en-us")
    directory = config.resolve_path(s.tts_cache_dir) if s.tts_cache_dir else None
    return CachedTts(engine, directory=directory)


def build_stt(config: Config) -> SttEngine:
    """The configured engine behind the voice-activity gate (``speech.vad``: only speech
    reaches it, on every leg), restarted with backoff when a stream fails (retryable).

    The embedded recogniser's gate runs in its speech process (:class:`ProcessStt`), off the
    media worker's cores and GIL; Azure's runs here, so only speech is sent out."""
    gate = VadSettings(threshold=config.speech.vad_threshold) if config.speech.vad else None
    if config.speech.stt != "azure":
        # in a child process: pocketsphinx holds the GIL while it decodes (see process.py)
        return ResilientStt(ProcessStt(pool_size=2 * config.worker.max_calls, gate=gate,
                                       speed=config.speech.stt_speed))
    engine = _base_stt(config)
    if gate is not None:
        engine = VadGatedStt(engine, gate)
    return ResilientStt(engine)


def preload_stt(config: Config, engine: SttEngine) -> None:
    """Load the embedded recogniser's decoders and the gate's detectors before calls
    arrive (blocking, ~0.25 s and ~40 ms each: loading a decoder holds the GIL, which would
    stall the media of a live call)."""
    rate, calls = config.worker.clock_rate, config.worker.max_calls
    layer: object = engine
    while layer is not None:
        # decoders: one per call for the bot phase; the agents' streams (a bridged call has
        # two) load on demand in the speech process, where loading stalls no media. The
        # gate's detectors load where the gate runs (~40-70 ms each): one for every stream a
        # full worker can hold, caller and agent legs (ProcessStt: in its child)
        if isinstance(layer, VadGatedStt):
            layer.preload(rate, count=2 * calls)
        elif isinstance(layer, PocketsphinxStt | ProcessStt):
            layer.preload(rate, count=calls)
        layer = getattr(layer, "engine", None)


def _base_stt(config: Config) -> SttEngine:
    s = config.speech
    region = "" if s.azure_endpoint else s.azure_region
    return AzureStt(key=s.azure_key, region=region, endpoint=s.azure_endpoint)


def build_flow(config: Config) -> Flow | None:
    """The flow file's Flow, or None when an external engine drives calls."""
    if config.bot.flow == "external":
        return None
    return load_flow(config.resolve_path(config.bot.flow))
