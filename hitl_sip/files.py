"""Files that hold personal data or secrets: private to the server's user.

``hitl-sip`` sets its umask to 077 at start (:func:`private_umask`), so everything it
creates — recordings, call records, the thread and account databases with their WAL files,
spills, keys — is 0600 in 0700 directories. The helpers here also tighten what an older
release left group- or world-readable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

UMASK = 0o077


def private_umask() -> None:
    os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (created when missing)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    tighten(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner can read (created empty when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    tighten(path, 0o600)
    return path


def tighten(path: Path, mode: int = 0o600) -> None:
    """Take away what group and others may do with ``path`` (it gets ``mode``)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        log.warning("%s was readable by others (mode %o): now %o", path, current, mode)
        path.chmod(mode)
