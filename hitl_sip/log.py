"""Logging set-up and the per-call prefix.

Personal data (numbers, digits, transcripts) never goes into a message text: pass it as a
``redact`` extra and it is printed only when ``log.level`` is ``debug``.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"


class _RedactFilter(logging.Filter):
    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        redact = getattr(record, "redact", None)
        if redact and self.show:
            record.msg = f"{record.msg} {redact}"
        return True


def setup_logging(level: str, process_name: str | None = None) -> None:
    if process_name:
        multiprocessing.current_process().name = process_name
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_RedactFilter(show=level == "debug"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with ``[call <id>]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[call {self.extra['call_id'] if self.extra else '?'}] {msg}", kwargs


def call_logger(logger: logging.Logger, call_id: str) -> CallLogger:
    return CallLogger(logger, {"call_id": call_id})


def now_iso() -> str:
    """Now as an ISO-8601 UTC string with milliseconds (the wire format of every event)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
