"""WAV I/O into mono s16le, resampling quality, and fixed-size framing."""

from __future__ import annotations

import os
import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from hitl_sip.media.wav import frames, load_pcm, read_wav, resample, write_wav
from hitl_sip.testing.analysis import dominant_frequency, rms_dbfs


def _tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def _samples(pcm: bytes) -> npt.NDArray[np.int16]:
    return np.frombuffer(pcm, dtype="<i2")


def _riff(fmt: bytes, data: bytes) -> bytes:
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _fmt(tag: int, channels: int, rate: int, bits: int) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


def test_write_then_read_returns_the_same_rate_and_samples(tmp_path: Path) -> None:
    pcm = _tone(440, 16000, 0.1)
    write_wav(tmp_path / "a.wav", 16000, pcm)
    assert read_wav(tmp_path / "a.wav") == (16000, pcm)


def test_written_file_is_readable_by_the_stdlib_as_mono_16_bit(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 8000, _tone(440, 8000, 0.1))
    with wave.open(str(tmp_path / "a.wav"), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
            1,
            2,
            8000,
            800,
        )


def test_stereo_is_mixed_down_to_the_channel_average(tmp_path: Path) -> None:
    stereo = np.array([[1000, 3000], [-2000, -4000], [32767, 32767]], dtype="<i2")
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(stereo.tobytes())
    rate, pcm = read_wav(tmp_path / "s.wav")
    assert rate == 44100
    assert _samples(pcm).tolist() == [2000, -3000, 32767]


def test_8_bit_unsigned_and_24_bit_pcm_are_scaled_to_16_bit(tmp_path: Path) -> None:
    (tmp_path / "u8.wav").write_bytes(_riff(_fmt(1, 1, 8000, 8), bytes([0, 128, 255])))
    assert _samples(read_wav(tmp_path / "u8.wav")[1]).tolist() == [-32768, 0, 32512]
    s24 = b"".join(v.to_bytes(3, "little", signed=True) for v in (0x123456, -0x800000, 255))
    (tmp_path / "s24.wav").write_bytes(_riff(_fmt(1, 1, 8000, 24), s24))
    assert _samples(read_wav(tmp_path / "s24.wav")[1]).tolist() == [0x1234, -32768, 0]


def test_float_wav_is_rejected_as_non_pcm(tmp_path: Path) -> None:
    data = np.zeros(4, dtype="<f4").tobytes()
    (tmp_path / "f.wav").write_bytes(_riff(_fmt(3, 1, 8000, 32), data))
    with pytest.raises(ValueError, match=r"WAV format 3 \(IEEE float\) is not supported"):
        read_wav(tmp_path / "f.wav")


def test_unsupported_sample_width_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "w.wav").write_bytes(_riff(_fmt(1, 1, 8000, 12), bytes(4)))
    with pytest.raises(ValueError, match="12-bit PCM is not supported"):
        read_wav(tmp_path / "w.wav")


def test_non_riff_and_data_less_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "n.wav").write_bytes(b"ID3\x03" + bytes(40))
    with pytest.raises(ValueError, match="not a RIFF/WAVE file"):
        read_wav(tmp_path / "n.wav")
    fmt = _fmt(1, 1, 8000, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    (tmp_path / "d.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(ValueError, match="has no 'data' chunk"):
        read_wav(tmp_path / "d.wav")


@pytest.mark.parametrize(
    ("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 16000), (48000, 8000)]
)
def test_resample_preserves_a_440_hz_tone_and_its_level(src: int, dst: int) -> None:
    out = resample(_tone(440, src), src, dst)
    assert len(out) // 2 == dst
    assert dominant_frequency(out, dst) == pytest.approx(440, abs=1)
    assert rms_dbfs(out) == pytest.approx(rms_dbfs(_tone(440, src)), abs=0.1)


def test_downsampling_removes_content_above_the_new_nyquist_frequency() -> None:
    aliased = resample(_tone(6000, 16000), 16000, 8000)  # would fold to 2 kHz
    assert rms_dbfs(aliased) < rms_dbfs(_tone(6000, 16000)) - 50


def test_resample_to_the_same_rate_returns_the_input() -> None:
    pcm = _tone(300, 8000, 0.05)
    assert resample(pcm, 8000, 8000) == pcm


def test_resample_rejects_odd_length_pcm_and_bad_rates() -> None:
    with pytest.raises(ValueError, match="whole number of 16-bit samples"):
        resample(b"\x00", 8000, 16000)
    with pytest.raises(ValueError, match="sample rates must be positive"):
        resample(b"", 0, 16000)


def test_frames_pads_only_the_last_frame_with_silence() -> None:
    chunks = list(frames(b"\x01" * 700, 320))
    assert [len(chunk) for chunk in chunks] == [320, 320, 320]
    assert chunks[2] == b"\x01" * 60 + bytes(260)


def test_frames_of_an_exact_multiple_add_no_padding_and_empty_input_yields_nothing() -> None:
    assert list(frames(b"\x02" * 640, 320)) == [b"\x02" * 320] * 2
    assert list(frames(b"", 320)) == []
    with pytest.raises(ValueError, match="frame size must be positive"):
        list(frames(b"\x00", 0))


def test_load_pcm_resamples_once_and_rereads_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "prompt.wav"
    write_wav(path, 16000, _tone(440, 16000, 0.2))
    first = load_pcm(path, 8000)
    assert first == resample(_tone(440, 16000, 0.2), 16000, 8000)
    assert load_pcm(path, 8000) is first  # served from memory, not read again
    assert load_pcm(path, 16000) == _tone(440, 16000, 0.2)  # each rate its own entry

    write_wav(path, 16000, _tone(1000, 16000, 0.3))  # the file is replaced
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000))
    again = load_pcm(path, 8000)
    assert len(again) == len(first) * 3 // 2
    assert dominant_frequency(again, 8000) == pytest.approx(1000, abs=20)
