"""Logging set-up and the per-call prefix.

Personal data (numbers, digits, transcripts) never goes into a message text: pass it as a
``redact`` extra and it is printed only when ``log.level`` is ``debug``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
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
    # the vonage SDK logs its Authorization header and the numbers it sends (debug) and the
    # API's answers (warning): hitl_sip.hub.carrier_control reports its errors itself
    logging.getLogger("vonage").setLevel(logging.ERROR)


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with ``[call <id>]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[call {self.extra['call_id'] if self.extra else '?'}] {msg}", kwargs


def call_logger(logger: logging.Logger, call_id: str) -> CallLogger:
    return CallLogger(logger, {"call_id": call_id})


def now_iso() -> str:
    """Now as an ISO-8601 UTC string with milliseconds (the wire format of every event)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


AUDIT_LOGGER = "hitl_sip.audit"


def audit_to(path: Path) -> None:
    """Append the audit trail (``hitl_sip.audit``: one JSON object per line, with its
    time) to ``path``, a file only the server's user reads (and no longer to stderr)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter('{"at": "%(asctime)s", "record": %(message)s}'))
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.setLevel(logging.INFO)
    audit.propagate = False  # the trail has its own file; stderr keeps the operational log
    audit.addHandler(handler)
