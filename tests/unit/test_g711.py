"""G.711 must be bit-exact with the ITU reference (as implemented by CPython's audioop)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from hitl_sip.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2").tobytes()
EVERY_CODE = bytes(range(256))


def test_ulaw_encode_matches_reference_for_every_16_bit_sample() -> None:
    assert ulaw_encode(EVERY_SAMPLE) == audioop.lin2ulaw(EVERY_SAMPLE, 2)


def test_alaw_encode_matches_reference_for_every_16_bit_sample() -> None:
    assert alaw_encode(EVERY_SAMPLE) == audioop.lin2alaw(EVERY_SAMPLE, 2)


def test_ulaw_decode_matches_reference_for_every_code() -> None:
    assert ulaw_decode(EVERY_CODE) == audioop.ulaw2lin(EVERY_CODE, 2)


def test_alaw_decode_matches_reference_for_every_code() -> None:
    assert alaw_decode(EVERY_CODE) == audioop.alaw2lin(EVERY_CODE, 2)


def test_silence_encodes_to_the_standard_idle_codes() -> None:
    silence = bytes(320)
    assert ulaw_encode(silence) == b"\xff" * 160
    assert alaw_encode(silence) == b"\xd5" * 160


def test_encoded_frame_has_one_byte_per_sample_and_decodes_to_two() -> None:
    frame = np.full(160, 1234, dtype="<i2").tobytes()
    assert len(ulaw_encode(frame)) == 160
    assert len(alaw_encode(frame)) == 160
    assert len(ulaw_decode(ulaw_encode(frame))) == 320
    assert len(alaw_decode(alaw_encode(frame))) == 320


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_round_trip_of_a_tone_keeps_telephone_quality_snr(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes]
) -> None:
    t = np.arange(8000) / 8000
    tone = np.round(8000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    restored = np.frombuffer(decode(encode(tone.tobytes())), dtype="<i2").astype(np.float64)
    error = restored - tone
    snr_db = 10 * np.log10(np.sum(tone.astype(np.float64) ** 2) / np.sum(error**2))
    assert snr_db > 35


def test_odd_length_pcm_is_rejected_with_its_length() -> None:
    with pytest.raises(ValueError, match="3 bytes"):
        ulaw_encode(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="whole number of 16-bit samples"):
        alaw_encode(b"\x00")
