"""JSON at the process edges, with limits: size first, then nesting, then the parser.

Python's ``json`` recurses once per nesting level: a payload nested 5,000 levels deep
raises ``RecursionError`` (a traceback, and no answer to the sender). Every edge that
parses JSON from outside the process — the worker link, the Redis cluster channel, the
Socket.IO namespaces — goes through :func:`loads`, which refuses oversized text and deep
nesting *before* parsing, with a :class:`WireError` whose ``reason`` is a short, fixed
label (for a counter) and whose message says what was wrong without echoing the payload.

The nesting check scans only the structural characters: a regular expression skips
strings (escapes included) at C speed, so a 1 MiB message costs about a millisecond.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, ClassVar

from hitl_sip.errors import HitlSipError

MAX_DEPTH = 32  # objects/arrays inside each other; the deepest real payload is 5
MAX_BYTES = 1 << 20  # worker link and cluster messages (status with metrics is the largest)
MAX_SOCKET_BYTES = 256 * 1024  # one Socket.IO event (an SDP offer is ~5-10 KB)

_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class WireError(HitlSipError, ValueError):
    """A payload refused at an edge: ``reason`` is one of ``too_large``, ``too_deep``,
    ``bad_json``, ``bad_message`` (a label for counters); the message is for the log."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def depth(text: str) -> int:
    """The deepest nesting of objects/arrays in ``text`` (strings skipped)."""
    level = deepest = 0
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            level += 1
            deepest = max(deepest, level)
        elif token in "]}":
            level -= 1
    return deepest


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    if depth(text) > max_depth:
        raise WireError("too_deep", f"nested deeper than {max_depth} levels")


def loads(data: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from outside the process, or raise :class:`WireError`."""
    if len(data) > max_bytes:
        raise WireError("too_large", f"{len(data)} bytes, more than {max_bytes}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise WireError("bad_json", f"not UTF-8 at byte {e.start}") from e
    else:
        text = data
    check_depth(text, max_depth)
    try:
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError, and lone surrogates
        raise WireError("bad_json", f"not JSON: {str(e)[:80]}") from e
    except RecursionError as e:  # pragma: no cover - check_depth bounds the nesting
        raise WireError("too_deep", "nested too deeply") from e


def loads_object(data: str | bytes, *, max_bytes: int = MAX_BYTES,
                 max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    value = loads(data, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(value, dict):
        raise WireError("bad_message", f"expected a JSON object, got {type(value).__name__}")
    return value


REFUSED_EVENT = "payload_refused"


class SocketJson:
    """The ``json`` module python-socketio and python-engineio use for our server.

    A packet whose JSON is refused decodes as the event ``payload_refused`` with the
    reason: the packet's id is kept, so a namespace that handles ``payload_refused``
    answers the sender's acknowledgement with ``bad_request`` instead of dropping it (and a
    refused ``connect`` payload carries no token, so the connection is refused).
    ``on_refused`` is called with the reason, for a counter.
    """

    on_refused: ClassVar[Callable[[str], None] | None] = None
    max_bytes: ClassVar[int] = MAX_SOCKET_BYTES

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        return json.dumps(obj, **kwargs)

    @classmethod
    def loads(cls, text: str | bytes, **_: Any) -> Any:
        try:
            return loads(text, max_bytes=cls.max_bytes)
        except WireError as e:
            if cls.on_refused is not None:
                cls.on_refused(e.reason)
            return [REFUSED_EVENT, {"reason": e.reason, "message": str(e)}]
