"""Sealed messages between hubs: Redis is a network others may write to.

Every message a hub publishes on Redis — its own cluster messages (hitl_sip.hub.cluster) and
python-socketio's Redis-manager packets — and its liveness mark travels as

    {"at": <ms since the epoch>, "body": "<the message text>", "mac": "<hex>"}

with ``mac = HMAC-SHA256(cluster.secret, "<at>.<body>")``. A receiver opens it before it
parses anything: a missing or wrong MAC, or a seal older (or newer) than ``MAX_AGE`` seconds
— a replay — is refused with the reason, counted, and never reaches a handler. The secret is
the same on every hub (``cluster.secret`` or ``HITL_SIP_CLUSTER_SECRET``); a Redis
password or ACL keeps strangers out of Redis in the first place (``cluster.redis_url``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

from hitl_sip.protocol.wire import MAX_BYTES, WireError

MAX_AGE = 60.0  # seconds either way: clock skew between hubs plus Redis latency


class Seal:
    def __init__(self, secret: bytes, *, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("a cluster secret has at least 32 bytes")
        self._secret = secret
        self.max_age = max_age
        self._clock = clock

    def _mac(self, at: int, body: str) -> str:
        return hmac.new(self._secret, f"{at}.{body}".encode(), hashlib.sha256).hexdigest()

    def seal(self, body: str) -> str:
        at = int(self._clock() * 1000)
        return json.dumps({"at": at, "body": body, "mac": self._mac(at, body)},
                          separators=(",", ":"))

    def open(self, data: str | bytes, max_bytes: int = MAX_BYTES) -> str:
        """The body of a sealed message; :class:`WireError` (``unsigned``, ``bad_signature``
        or ``stale``) when it is not one this cluster sealed lately."""
        if len(data) > max_bytes + 256:
            raise WireError("too_large", f"{len(data)} bytes, more than {max_bytes}")
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise WireError("unsigned", "not a sealed message") from e
        if not isinstance(value, dict) or set(value) != {"at", "body", "mac"}:
            raise WireError("unsigned", "not a sealed message")
        at, body, mac = value["at"], value["body"], value["mac"]
        if (isinstance(at, bool) or not isinstance(at, int) or not isinstance(body, str)
                or not isinstance(mac, str)):
            raise WireError("unsigned", "not a sealed message")
        if not hmac.compare_digest(mac.encode(), self._mac(at, body).encode()):
            raise WireError("bad_signature", "the seal does not match (another secret, or "
                            "a forged or altered message)")
        if abs(self._clock() * 1000 - at) > self.max_age * 1000:
            raise WireError("stale", f"sealed {abs(self._clock() - at / 1000):.0f} s away "
                            "from now (a replay, or clocks apart)")
        return body


class SealedJson:
    """The ``json`` module handed to python-socketio's Redis manager: its packets go out
    sealed and come in opened; a refused one decodes to nothing (the manager ignores it).
    Set :attr:`seal` (and :attr:`on_refused`, for a counter) before the manager starts."""

    seal: ClassVar[Seal | None] = None
    on_refused: ClassVar[Callable[[str], None] | None] = None

    @classmethod
    def dumps(cls, obj: Any, **kwargs: Any) -> str:
        assert cls.seal is not None, "SealedJson.seal is not set"
        return cls.seal.seal(json.dumps(obj, **kwargs))

    @classmethod
    def loads(cls, text: str | bytes, **_: Any) -> Any:
        assert cls.seal is not None, "SealedJson.seal is not set"
        try:
            body = cls.seal.open(text)
            return json.loads(body)
        except (WireError, ValueError, RecursionError) as e:
            reason = e.reason if isinstance(e, WireError) else "bad_json"
            if cls.on_refused is not None:
                cls.on_refused(reason)
            return None
