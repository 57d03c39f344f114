"""CachedTts: LRU bounds, one shared synthesis per key, failures not cached, disk round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hitl_sip.errors import SpeechError
from hitl_sip.media.wav import read_wav
from hitl_sip.speech.base import TtsEngine
from hitl_sip.speech.tts.cache import CachedTts
from hitl_sip.speech.tts.espeak_engine import EspeakTts
from hitl_sip.speech.tts.fake import FakeTts, TtsCall


def _file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_repeated_request_is_served_from_memory_without_synthesizing_again() -> None:
    fake = FakeTts()
    cache = CachedTts(fake)
    first = await cache.synthesize("Please hold.", 8000)
    second = await cache.synthesize("Please hold.", 8000)
    assert first == second == fake.expected_pcm("Please hold.", 8000)
    assert fake.calls == [TtsCall("Please hold.", 8000, None)]
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)


async def test_text_voice_and_rate_each_make_a_separate_entry() -> None:
    fake = FakeTts()
    cache = CachedTts(fake)
    await cache.synthesize("hello", 8000)
    await cache.synthesize("hello", 16000)
    await cache.synthesize("hello", 8000, voice="en-gb")
    await cache.synthesize("hello!", 8000)
    assert len(fake.calls) == 4
    assert len(cache) == 4


async def test_least_recently_used_entry_is_evicted_beyond_max_entries() -> None:
    fake = FakeTts()
    cache = CachedTts(fake, max_entries=2)
    await cache.synthesize("a", 8000)
    await cache.synthesize("b", 8000)
    await cache.synthesize("a", 8000)  # "b" is now the least recently used
    await cache.synthesize("c", 8000)
    assert cache.stats.evictions == 1
    await cache.synthesize("a", 8000)
    assert [call.text for call in fake.calls] == ["a", "b", "c"]
    await cache.synthesize("b", 8000)
    assert [call.text for call in fake.calls] == ["a", "b", "c", "b"]


async def test_byte_limit_evicts_oldest_entries_and_skips_audio_larger_than_the_cache() -> None:
    fake = FakeTts(ms_per_char=100)  # 1600 bytes per character at 8 kHz
    cache = CachedTts(fake, max_bytes=5000)
    await cache.synthesize("ab", 8000)  # 3200 bytes
    await cache.synthesize("c", 8000)  # 1600 bytes: 4800 in total
    assert cache.memory_bytes == 4800
    await cache.synthesize("d", 8000)  # 6400 would exceed: "ab" goes
    assert (len(cache), cache.memory_bytes) == (2, 3200)
    await cache.synthesize("abcd", 8000)  # 6400 bytes alone: not kept at all
    assert (len(cache), cache.memory_bytes) == (2, 3200)
    await cache.synthesize("abcd", 8000)
    assert [call.text for call in fake.calls].count("abcd") == 2


async def test_concurrent_requests_for_the_same_key_share_one_synthesis() -> None:
    release = asyncio.Event()
    fake = FakeTts(release=release)
    cache = CachedTts(fake)
    requests = asyncio.gather(*(cache.synthesize("Welcome!", 16000) for _ in range(5)))
    await fake.started.wait()
    release.set()
    results = await requests
    assert results == [fake.expected_pcm("Welcome!", 16000)] * 5
    assert len(fake.calls) == 1
    assert (cache.stats.misses, cache.stats.hits) == (1, 0)


async def test_a_cancelled_waiter_does_not_cancel_the_synthesis_others_wait_for() -> None:
    release = asyncio.Event()
    fake = FakeTts(release=release)
    cache = CachedTts(fake)
    leaving = asyncio.create_task(cache.synthesize("Welcome!", 8000))
    staying = asyncio.create_task(cache.synthesize("Welcome!", 8000))
    await fake.started.wait()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    release.set()
    assert await staying == fake.expected_pcm("Welcome!", 8000)
    assert len(fake.calls) == 1


async def test_when_every_waiter_is_cancelled_the_next_request_starts_afresh() -> None:
    release = asyncio.Event()
    fake = FakeTts(release=release)
    cache = CachedTts(fake)
    abandoned = asyncio.create_task(cache.synthesize("Welcome!", 8000))
    await fake.started.wait()
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    release.set()
    assert await cache.synthesize("Welcome!", 8000) == fake.expected_pcm("Welcome!", 8000)
    assert len(fake.calls) == 2
    assert fake.completed == 1  # the abandoned synthesis was cancelled, not completed


async def test_failures_are_not_cached_and_the_next_request_synthesizes_again() -> None:
    fake = FakeTts()
    cache = CachedTts(fake)
    fake.fail_next(SpeechError("service unavailable", retryable=True))
    with pytest.raises(SpeechError) as failure:
        await cache.synthesize("Goodbye.", 8000)
    assert failure.value.retryable
    assert len(cache) == 0
    assert await cache.synthesize("Goodbye.", 8000) == fake.expected_pcm("Goodbye.", 8000)
    assert len(fake.calls) == 2


async def test_concurrent_waiters_all_receive_the_shared_failure() -> None:
    release = asyncio.Event()
    fake = FakeTts(release=release)
    fake.fail_next(SpeechError("auth failed", retryable=False))
    cache = CachedTts(fake)
    requests = asyncio.gather(
        *(cache.synthesize("Hi", 8000) for _ in range(3)), return_exceptions=True
    )
    await fake.started.wait()
    release.set()
    results = await requests
    assert all(isinstance(r, SpeechError) and not r.retryable for r in results)
    assert len(fake.calls) == 1


async def test_disk_cache_serves_a_new_instance_without_synthesizing(tmp_path: Path) -> None:
    first = FakeTts("espeak")
    pcm = await CachedTts(first, directory=tmp_path / "tts").synthesize("Hello there", 16000)

    second = FakeTts("espeak")
    restarted = CachedTts(second, directory=tmp_path / "tts")
    assert await restarted.synthesize("Hello there", 16000) == pcm
    assert second.calls == []
    assert restarted.stats.disk_hits == 1
    assert await restarted.synthesize("Hello there", 16000) == pcm  # now from memory
    assert restarted.stats.hits == 1


async def test_disk_files_are_wavs_named_by_key_hash_with_no_temporary_left(
    tmp_path: Path,
) -> None:
    cache = CachedTts(FakeTts(), directory=tmp_path)
    pcm = await cache.synthesize("Hello there", 8000, voice="en-us")
    path = cache.path_for("Hello there", 8000, voice="en-us")
    assert path is not None
    assert len(path.stem) == 64 and all(c in "0123456789abcdef" for c in path.stem)
    assert "Hello" not in path.name
    assert read_wav(path) == (8000, pcm)
    assert _file_names(tmp_path) == [path.name]


async def test_unreadable_disk_file_is_synthesized_again_and_rewritten(tmp_path: Path) -> None:
    fake = FakeTts()
    cache = CachedTts(fake, directory=tmp_path)
    path = cache.path_for("Hello", 8000)
    assert path is not None
    path.write_bytes(b"RIFF\x00\x00")  # a torn write from some other tool
    pcm = await cache.synthesize("Hello", 8000)
    assert len(fake.calls) == 1
    assert read_wav(path) == (8000, pcm)


async def test_namespace_keeps_differently_configured_engines_apart_on_disk(
    tmp_path: Path,
) -> None:
    slow = CachedTts(FakeTts("espeak"), directory=tmp_path, namespace="wpm=120")
    await slow.synthesize("Hello", 8000)
    fast_engine = FakeTts("espeak")
    fast = CachedTts(fast_engine, directory=tmp_path, namespace="wpm=200")
    await fast.synthesize("Hello", 8000)
    assert len(fast_engine.calls) == 1
    assert len(_file_names(tmp_path)) == 2


def test_namespace_defaults_to_the_engines_audio_settings() -> None:
    engine = EspeakTts(words_per_minute=140)
    assert CachedTts(engine).namespace == engine.cache_namespace
    assert "wpm=140" in engine.cache_namespace
    assert CachedTts(FakeTts()).namespace == ""


def test_fake_tts_gives_60_ms_per_character_and_distinct_audio_per_text() -> None:
    fake = FakeTts()
    hello = fake.expected_pcm("hello", 8000)
    assert len(hello) == 2 * round(5 * 0.060 * 8000)
    assert len(fake.expected_pcm("hello", 16000)) == 2 * len(hello)
    assert fake.expected_pcm("hello", 8000) == hello
    assert fake.expected_pcm("world", 8000) != hello
    assert fake.expected_pcm(" \n", 8000) == b""


def test_cached_tts_is_a_tts_engine_named_after_the_wrapped_engine() -> None:
    cache = CachedTts(FakeTts("espeak"))
    assert isinstance(cache, TtsEngine)
    assert cache.name == "espeak"
