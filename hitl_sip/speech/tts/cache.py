"""A caching wrapper for any TTS engine: in-memory LRU plus an optional directory on disk.

Prompts such as greetings and hold messages are spoken on every call; synthesizing them
once removes both the latency and the cost. ``CachedTts`` keys audio by (engine name,
namespace, text, voice, sample rate):

- the in-memory cache is an LRU bounded by entry count and by total PCM bytes;
- concurrent requests for the same key share one synthesis (no thundering herd); the
  synthesis is cancelled only when every waiter has gone;
- failures are never cached: the next request tries again;
- with ``directory`` set, audio is also stored as WAV files named by the SHA-256 of the key
  and written atomically (temporary file, fsync, rename), so prompts survive restarts. A
  file that cannot be read back is ignored and rewritten. The directory is not size-bounded.

``namespace`` separates engines with the same name but settings that change the audio
(espeak speed, default voice); by default it is the engine's ``cache_namespace`` attribute
when it has one, so changing those settings never serves stale audio from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from hitl_sip.media.wav import read_wav, write_wav
from hitl_sip.speech.base import TtsEngine

__all__ = ["CacheStats", "CachedTts"]

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

# Bumped when the meaning of a disk file changes, so old files are simply never looked up.
_DISK_FORMAT = 1

_Key = tuple[str, str, str, str | None, int]


@dataclass
class CacheStats:
    """Counters since construction: memory hits, disk hits, engine syntheses, evictions."""

    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    evictions: int = 0


@dataclass
class _Flight:
    task: asyncio.Task[bytes]
    waiters: int = 0


class CachedTts:
    """A :class:`~hitl_sip.speech.base.TtsEngine` that caches another engine's audio."""

    def __init__(
        self,
        engine: TtsEngine,
        *,
        max_entries: int = 256,
        max_bytes: int = 64 * 1024 * 1024,
        directory: StrPath | None = None,
        namespace: str | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if namespace is None:
            attr = getattr(engine, "cache_namespace", "")
            namespace = attr if isinstance(attr, str) else ""
        self.engine = engine
        self.name = engine.name
        self.namespace = namespace
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.directory = Path(directory) if directory is not None else None
        self.stats = CacheStats()
        self._memory: OrderedDict[_Key, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._flights: dict[_Key, _Flight] = {}

    def __len__(self) -> int:
        """Entries held in memory."""
        return len(self._memory)

    @property
    def memory_bytes(self) -> int:
        """PCM bytes held in memory."""
        return self._memory_bytes

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk are kept)."""
        self._memory.clear()
        self._memory_bytes = 0

    def path_for(self, text: str, sample_rate: int, voice: str | None = None) -> Path | None:
        """The disk file for a request, or None without a directory."""
        return self._path(self._key(text, sample_rate, voice))

    async def synthesize(self, text: str, sample_rate: int, voice: str | None = None) -> bytes:
        key = self._key(text, sample_rate, voice)
        pcm = self._memory.get(key)
        if pcm is not None:
            self._memory.move_to_end(key)
            self.stats.hits += 1
            return pcm

        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(asyncio.create_task(self._fill(key)))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda task: self._landed(key, task))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # every requester was cancelled: stop the work, and let the next request
                # start afresh instead of joining a task that is being cancelled
                if self._flights.get(key) is flight:
                    del self._flights[key]
                flight.task.cancel()

    def _key(self, text: str, sample_rate: int, voice: str | None) -> _Key:
        return (self.name, self.namespace, text, voice, sample_rate)

    def _landed(self, key: _Key, task: asyncio.Task[bytes]) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight.task is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved by the waiters; marked here in case all left

    async def _fill(self, key: _Key) -> bytes:
        _name, _namespace, text, voice, sample_rate = key
        path = self._path(key)
        if path is not None:
            pcm = await asyncio.to_thread(_read_file, path, sample_rate)
            if pcm is not None:
                self.stats.disk_hits += 1
                self._remember(key, pcm)
                return pcm
        self.stats.misses += 1
        pcm = await self.engine.synthesize(text, sample_rate, voice)
        self._remember(key, pcm)
        if path is not None:
            await asyncio.to_thread(_write_file, path, sample_rate, pcm)
        return pcm

    def _remember(self, key: _Key, pcm: bytes) -> None:
        if len(pcm) > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= len(old)
        self._memory[key] = pcm
        self._memory_bytes += len(pcm)
        while len(self._memory) > self.max_entries or self._memory_bytes > self.max_bytes:
            _evicted_key, evicted = self._memory.popitem(last=False)
            self._memory_bytes -= len(evicted)
            self.stats.evictions += 1

    def _path(self, key: _Key) -> Path | None:
        if self.directory is None:
            return None
        encoded = json.dumps([_DISK_FORMAT, *key], ensure_ascii=True).encode("ascii")
        return self.directory / f"{hashlib.sha256(encoded).hexdigest()}.wav"


def _read_file(path: Path, sample_rate: int) -> bytes | None:
    try:
        rate, pcm = read_wav(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("TTS cache file %s is unreadable, synthesizing again: %s", path.name, e)
        return None
    if rate != sample_rate:
        log.warning(
            "TTS cache file %s holds %d Hz audio, expected %d Hz; synthesizing again",
            path.name,
            rate,
            sample_rate,
        )
        return None
    return pcm


def _write_file(path: Path, sample_rate: int, pcm: bytes) -> None:
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(tmp, sample_rate, pcm)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        # the audio is still served from memory; only persistence is lost
        log.warning("TTS cache could not write %s: %s", path.name, e)
        with contextlib.suppress(OSError):
            tmp.unlink()
