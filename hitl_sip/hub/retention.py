"""Retention: caller data is not kept past ``retention_days`` (default 30).

The hub sweeps at start and then hourly: recordings and call records (files under
``<data_dir>/recordings``) last modified before the cutoff, and the local threads whose
newest turn is older — their turns, end, CRM data and who could read them. A thread still
waiting for alive5 past the cutoff is dropped too (logged: retention wins over delivery).
What each sweep removed is counted (``hitl_sip_hub_retention_removed_total{kind}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from hitl_sip.files import private_dir, tighten
from hitl_sip.hub.threads import ThreadStore
from hitl_sip.metrics import Counter

log = logging.getLogger(__name__)

SWEEP_EVERY = 3600.0  # seconds
DAY = 86400.0


def sweep_files(directory: Path, cutoff: float) -> int:
    """Delete the regular files in ``directory`` last modified before ``cutoff`` (Unix
    time) and make the others, and the directory, private (an older release left them
    readable by others); the number deleted."""
    removed = 0
    if not directory.is_dir():
        return 0
    private_dir(directory)
    for path in list(directory.iterdir()):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            if path.lstat().st_mtime < cutoff:
                path.unlink()
                removed += 1
            else:
                tighten(path)
        except FileNotFoundError:  # a worker finished with it meanwhile
            continue
    return removed


async def sweep(data_dir: Path, store: ThreadStore, days: int, counter: Counter | None = None,
                now: float | None = None) -> tuple[int, int]:
    """One sweep: (files removed, threads removed)."""
    cutoff = (time.time() if now is None else now) - days * DAY
    files = await asyncio.to_thread(sweep_files, data_dir / "recordings", cutoff)
    iso = datetime.fromtimestamp(cutoff, UTC).isoformat(timespec="milliseconds")
    threads, undelivered = await store.sweep(iso.replace("+00:00", "Z"))
    if undelivered:
        log.warning("retention: %d threads removed before alive5 acknowledged them "
                    "(older than %d days)", undelivered, days)
    if files or threads:
        log.info("retention: removed %d recordings/call records and %d threads older than "
                 "%d days", files, threads, days)
    if counter is not None:
        counter.inc(files, kind="file")
        counter.inc(threads, kind="thread")
    return files, threads


async def sweep_forever(data_dir: Path, store: ThreadStore, days: int,
                        counter: Counter | None = None) -> None:
    while True:
        await sweep(data_dir, store, days, counter)
        await asyncio.sleep(SWEEP_EVERY)
