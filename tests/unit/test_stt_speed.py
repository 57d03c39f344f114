"""pocketsphinx search presets: ``speech.stt_speed`` -> decoder options, explicit options win."""

from __future__ import annotations

import pocketsphinx  # type: ignore[import-untyped]
import pytest

from hitl_sip.config import STT_SPEEDS, SpeechConfig, load_config
from hitl_sip.errors import ConfigError
from hitl_sip.speech.stt.pocketsphinx_engine import SPEED_PRESETS, PocketsphinxStt, speed_options
from hitl_sip.speech.stt.process import ProcessStt
from hitl_sip.worker.engines import build_stt


def test_the_config_offers_exactly_the_engine_presets_and_defaults_to_balanced() -> None:
    assert tuple(SPEED_PRESETS) == STT_SPEEDS
    assert SpeechConfig().stt_speed == "balanced"
    assert load_config(None, env={}).speech.stt_speed == "balanced"


def test_preset_options_are_pocketsphinx_config_keys_of_the_same_type() -> None:
    defaults = pocketsphinx.Config()
    for options in SPEED_PRESETS.values():
        for key, value in options.items():
            assert key in defaults, key
            assert type(defaults[key]) is type(value), key


def test_presets_map_to_decoder_options() -> None:
    assert speed_options("accurate") == {}  # pocketsphinx's own settings
    balanced = speed_options("balanced")
    assert balanced == {"maxhmmpf": 2500, "maxwpf": 5, "wbeam": 1e-20, "lponlybeam": 1e-20}
    # fast: the same capped search without the flat-lexicon second pass
    assert speed_options("fast") == {**balanced, "fwdflat": False}


def test_explicit_decoder_options_override_the_preset() -> None:
    options = speed_options("fast", {"maxhmmpf": 9000, "fwdflat": True, "lw": 7.0})
    assert options == {**SPEED_PRESETS["fast"], "maxhmmpf": 9000, "fwdflat": True, "lw": 7.0}
    assert SPEED_PRESETS["fast"]["maxhmmpf"] == 2500  # the preset itself is untouched

    engine = PocketsphinxStt(speed="balanced", decoder_options={"wbeam": 1e-30})
    assert engine._decoder_options == {
        "loglevel": "FATAL",
        **SPEED_PRESETS["balanced"],
        "wbeam": 1e-30,
    }
    assert engine.builtin_model


def test_the_engine_defaults_to_pocketsphinx_settings() -> None:
    engine = PocketsphinxStt()
    assert engine.speed == "accurate"
    assert engine._decoder_options == {"loglevel": "FATAL"}


def test_an_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown speed 'turbo'"):
        speed_options("turbo")
    with pytest.raises(ValueError, match="accurate, balanced, fast"):
        PocketsphinxStt(speed="turbo")


def test_config_refuses_an_unknown_speed_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"HITL_SIP_SPEECH_STT_SPEED": "turbo"})
    assert info.value.key == "speech.stt_speed"
    assert "accurate, balanced, fast" in str(info.value)


@pytest.mark.parametrize("speed", STT_SPEEDS)
def test_the_worker_engine_gets_the_configured_preset(speed: str) -> None:
    config = load_config(None, env={"HITL_SIP_SPEECH_STT_SPEED": speed})
    engine = build_stt(config)
    inner = getattr(engine, "engine", None)
    assert isinstance(inner, ProcessStt)  # the child starts on first use: none here
    assert inner.speed == speed
