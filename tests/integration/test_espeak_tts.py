"""EspeakTts against the real espeak-ng program (and stand-in executables for its failures)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import TtsEngine
from hitl_sip.speech.tts.espeak_engine import EspeakTts
from hitl_sip.testing.analysis import rms_dbfs

ESPEAK = shutil.which("espeak-ng")
pytestmark = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed")

PROMPT = "Please hold while I connect you to an agent right now."  # 11 words


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _frame_levels(pcm: bytes, rate: int, ms: int = 20) -> list[float]:
    size = rate * ms // 1000
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    levels = []
    for start in range(0, len(samples) - size + 1, size):
        frame = samples[start : start + size]
        rms = math.sqrt(float(np.mean(frame * frame)))
        levels.append(max(-80.0, 20 * math.log10(max(rms, 1e-9) / 32768)))
    return levels


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_prompt_is_speech_like_at_the_corpus_level_with_no_leading_silence(
    rate: int,
) -> None:
    engine = EspeakTts()
    assert isinstance(engine, TtsEngine)
    pcm = await engine.synthesize(PROMPT, rate)

    seconds = len(pcm) / 2 / rate
    assert 2.0 < seconds < 5.5, f"{seconds:.2f} s for 11 words at 160 wpm"
    assert abs(rms_dbfs(pcm) - (-20.0)) < 1.5
    samples = np.frombuffer(pcm, dtype="<i2")
    assert int(np.max(np.abs(samples.astype(np.int32)))) <= 32768 * 10 ** (-1 / 20) + 1

    levels = _frame_levels(pcm, rate, ms=10)
    first_loud = next(i for i, level in enumerate(levels) if level > -45.0)
    assert first_loud * 10 <= 30, f"audible speech starts after {first_loud * 10} ms"
    # speech is modulated: syllables and pauses, not a steady tone or noise
    assert float(np.std(levels)) > 6.0
    quiet = sum(level < -40.0 for level in levels) / len(levels)
    assert 0.02 < quiet < 0.6


async def test_16k_and_8k_renditions_have_the_same_duration() -> None:
    engine = EspeakTts()
    narrow, wide = await asyncio.gather(
        engine.synthesize(PROMPT, 8000), engine.synthesize(PROMPT, 16000)
    )
    assert abs(len(wide) / 2 / 16000 - len(narrow) / 2 / 8000) < 0.005


async def test_faster_speaking_rate_gives_shorter_audio() -> None:
    slow = await EspeakTts(words_per_minute=120).synthesize(PROMPT, 8000)
    fast = await EspeakTts(words_per_minute=240).synthesize(PROMPT, 8000)
    assert len(fast) < 0.7 * len(slow)


@pytest.mark.parametrize(
    "text",
    [
        'He said "don\'t" & left; $(rm -rf /) `id` <b>bold</b>',
        "first line\nsecond line\r\n\tthird",
        "Café naïve, ñandú — 日本 😀",
        "--help -v xx -w {out}",
        "null\x00byte and bell\x07",
    ],
    ids=["quotes-and-shell", "newlines", "unicode", "option-like", "control-chars"],
)
async def test_odd_text_is_spoken_as_text(text: str, tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    pcm = await EspeakTts().synthesize(text.replace("{out}", str(out)), 8000)
    assert len(pcm) / 2 / 8000 > 0.5
    assert abs(rms_dbfs(pcm) - (-20.0)) < 1.5
    assert not out.exists()  # no part of the text was taken as an option


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n"])
async def test_empty_or_blank_text_gives_empty_pcm_without_running_espeak(text: str) -> None:
    engine = EspeakTts(executable="/nonexistent/espeak-ng")  # would fail if it were run
    assert await engine.synthesize(text, 8000) == b""


async def test_text_with_nothing_to_pronounce_gives_empty_pcm() -> None:
    assert await EspeakTts().synthesize("...", 16000) == b""


async def test_text_over_the_length_limit_is_a_value_error() -> None:
    engine = EspeakTts(max_chars=50)
    with pytest.raises(ValueError, match="51 characters long, the limit is 50"):
        await engine.synthesize("x" * 51, 8000)


async def test_missing_executable_is_a_non_retryable_speech_error() -> None:
    engine = EspeakTts(executable="/nonexistent/bin/espeak-ng")
    with pytest.raises(SpeechError, match="cannot be run as '/nonexistent/bin/espeak-ng'") as e:
        await engine.synthesize("hello", 8000)
    assert not e.value.retryable


async def test_unknown_voice_is_a_non_retryable_speech_error() -> None:
    with pytest.raises(SpeechError, match="voice does not exist") as e:
        await EspeakTts().synthesize("hello", 8000, voice="xx-nosuchvoice")
    assert not e.value.retryable


async def test_voice_name_that_could_be_an_option_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="voice name"):
        await EspeakTts().synthesize("hello", 8000, voice="--stdout")


async def test_a_failing_program_is_a_retryable_speech_error(tmp_path: Path) -> None:
    failing = _script(tmp_path / "espeak", "cat >/dev/null\necho 'out of memory' >&2\nexit 3\n")
    with pytest.raises(SpeechError, match="exited with status 3: out of memory") as e:
        await EspeakTts(executable=failing).synthesize("hello", 8000)
    assert e.value.retryable


async def test_output_that_is_not_a_wav_is_a_retryable_speech_error(tmp_path: Path) -> None:
    garbage = _script(tmp_path / "espeak", "cat >/dev/null\necho 'this is not audio'\n")
    with pytest.raises(SpeechError, match="not a WAV file") as e:
        await EspeakTts(executable=garbage).synthesize("hello", 8000)
    assert e.value.retryable


async def test_a_hung_program_is_killed_and_reported_as_retryable(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    hung = _script(tmp_path / "espeak", f"echo $$ > {pid_file}\nexec tail -f /dev/null\n")
    with pytest.raises(SpeechError, match="did not finish within 1 s") as e:
        await EspeakTts(executable=hung, timeout=1.0).synthesize("hello", 8000)
    assert e.value.retryable
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


async def test_no_more_than_max_concurrency_processes_run_at_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    wrapper = _script(
        tmp_path / "espeak",
        f'echo start >> {log}\n{ESPEAK} "$@"\nstatus=$?\necho end >> {log}\nexit $status\n',
    )
    engine = EspeakTts(executable=wrapper, max_concurrency=2)
    results = await asyncio.gather(*(engine.synthesize(f"Caller {i}", 8000) for i in range(6)))
    assert all(len(pcm) > 0 for pcm in results)
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    assert peak <= 2
    assert log.read_text().split().count("start") == 6
