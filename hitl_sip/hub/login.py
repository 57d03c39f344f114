"""``POST /api/login`` and ``POST /api/logout`` (PROTOCOL.md §3, §6) and the bearer-token
helper for agent endpoints.

Only ``application/json`` is read (``415`` otherwise): a web page can make a browser send a
``text/plain`` or form POST to any origin without a pre-flight, so nothing but a deliberate
client reaches the password check. Wrong password and unknown user get the same 401 in the
same time (the store hashes a dummy for unknown names).

Failed attempts are throttled per (client address, user name) and per client address, each
with exponential backoff: after ``per_user`` (or ``per_address``) failures in a row, the
next attempt from that key waits 1 s after the latest failure, then 2 s, 4 s … up to
``max_wait``; a streak is forgotten ``window`` seconds after its last failure. There is no
lock on a user name alone, so nobody can keep an agent out by guessing from elsewhere.
Attempts count as failures while they are being verified, so parallel guesses cannot
overtake the counter. The client address is the TCP peer: behind a reverse proxy,
configure aiohttp's forwarded-header handling first.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hitl_sip.hub.sessions import Session, SessionError, Sessions, audit
from hitl_sip.protocol.wire import WireError, loads

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 256
MAX_BODY_BYTES = 8 * 1024
MAX_BODY_DEPTH = 4  # the body is one flat object; anything deeper is not a login
UNAUTHORIZED_MESSAGE = "invalid username or password"


@dataclass
class _Streak:
    count: int
    last: float


class LoginThrottle:
    """Failure streaks per key with exponential backoff; in memory, at most ``max_keys``
    keys (the least recently failed are forgotten first). ``clock`` is monotonic seconds.
    Keys are ``("user", address, name)`` (limit ``per_user``) or ``("ip", address)``
    (limit ``per_address``)."""

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 900.0,
        max_wait: float = 300.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(per_user, per_address, max_keys) < 1 or window <= 0 or max_wait < 1:
            raise ValueError("limits, window, max_wait and max_keys must be positive")
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self.max_wait = max_wait
        self.max_keys = max_keys
        self._clock = clock
        self._streaks: OrderedDict[tuple[str, ...], _Streak] = OrderedDict()

    def __len__(self) -> int:
        return len(self._streaks)

    def _limit(self, key: tuple[str, ...]) -> int:
        return self.per_user if key[0] == "user" else self.per_address

    def retry_after(self, keys: Iterable[tuple[str, ...]]) -> float:
        """Seconds until every key may try again; 0 when none is throttled."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            streak = self._streaks.get(key)
            if streak is None:
                continue
            if now - streak.last > self.window:
                del self._streaks[key]
                continue
            excess = streak.count - self._limit(key)
            if excess >= 0:
                wait = max(wait, streak.last + min(self.max_wait, 2.0**excess) - now)
        return wait

    def record(self, keys: Iterable[tuple[str, ...]]) -> None:
        """Count a failure against every key."""
        now = self._clock()
        for key in keys:
            streak = self._streaks.get(key)
            if streak is None or now - streak.last > self.window:
                streak = self._streaks[key] = _Streak(0, now)
            streak.count += 1
            streak.last = now
            self._streaks.move_to_end(key)
        while len(self._streaks) > self.max_keys:
            self._streaks.popitem(last=False)

    def forgive(self, key: tuple[str, ...]) -> None:
        """Withdraw one failure (the attempt succeeded after all)."""
        streak = self._streaks.get(key)
        if streak is not None:
            streak.count -= 1
            if streak.count <= 0:
                del self._streaks[key]

    def reset(self, key: tuple[str, ...]) -> None:
        self._streaks.pop(key, None)


SESSIONS = web.AppKey("sessions", Sessions)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def error(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _parse_credentials(raw: bytes) -> tuple[str, str] | str:
    """``(username, password)``, or the message of a 400. The wire's parser refuses an
    oversized or deeply nested body before parsing (no ``RecursionError``)."""
    try:
        body: Any = loads(raw, max_bytes=MAX_BODY_BYTES, max_depth=MAX_BODY_DEPTH)
    except WireError as e:
        if e.reason == "bad_json":
            return "body must be JSON"
        return f"body: {e}"
    if not isinstance(body, dict):
        return "body must be a JSON object"
    fields: list[str] = []
    for field in ("username", "password"):
        value = body.get(field)
        if not isinstance(value, str) or not value:
            return f"{field} is required and must be a non-empty string"
        if len(value) > MAX_FIELD_CHARS:
            return f"{field} must be at most {MAX_FIELD_CHARS} characters"
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate (``"\ud800"`` is valid JSON)
            return f"{field} must be valid Unicode"
        fields.append(value)
    return fields[0], fields[1]


async def login(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    throttle = request.app[LOGIN_THROTTLE]
    if request.content_type != "application/json":
        return error("bad_request", "the body must be JSON (Content-Type: application/json)",
                     415)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error("bad_request", f"body must be at most {MAX_BODY_BYTES} bytes", 400)
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        return error("bad_request", f"body must be at most {MAX_BODY_BYTES} bytes", 400)
    parsed = _parse_credentials(raw)
    if isinstance(parsed, str):
        return error("bad_request", parsed, 400)
    username, password = parsed
    address = request.remote or "?"
    ip_key, user_key = ("ip", address), ("user", address, username.casefold())
    wait = throttle.retry_after((ip_key, user_key))
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        log.warning("login throttled from %s", address, extra={"redact": username})
        audit("login_throttled", address=address)
        return error(
            "unavailable",
            f"too many failed logins; retry in {seconds} s",
            429,
            headers={"Retry-After": str(seconds)},
        )
    throttle.record((ip_key, user_key))
    agent = await sessions.store.averify(username, password)
    if agent is None:
        log.info("login failed from %s", address, extra={"redact": username})
        audit("login_failed", address=address)
        return error("unauthorized", UNAUTHORIZED_MESSAGE, 401)
    throttle.forgive(ip_key)
    throttle.reset(user_key)
    token, expires_at = sessions.issue(agent)
    log.info("agent %s logged in from %s", agent.agent_id, address)
    audit("login", agent=agent.agent_id, role=agent.role.value, address=address)
    return web.json_response(
        {"token": token, "expiresAt": expires_at, "agentId": agent.agent_id, "name": agent.name,
         "role": agent.role.value},
        headers={"Cache-Control": "no-store"},
    )


async def logout(request: web.Request) -> web.Response:
    """End the bearer token's session: REST refuses it and its sockets are closed."""
    session = await bearer_session(request)
    if session is None:
        return error("unauthorized", "a valid agent token is required", 401)
    await request.app[SESSIONS].logout(session)
    audit("logout", agent=session.agent_id, address=request.remote or "?")
    return web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})


def setup_login(
    app: web.Application,
    sessions: Sessions,
    throttle: LoginThrottle | None = None,
) -> None:
    """Add ``POST /api/login`` and ``POST /api/logout``; the sessions and the throttle are
    kept under the ``SESSIONS`` and ``LOGIN_THROTTLE`` app keys."""
    app[SESSIONS] = sessions
    app[LOGIN_THROTTLE] = throttle if throttle is not None else LoginThrottle()
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def bearer_session(request: web.Request) -> Session | None:
    """The session of the ``Authorization: Bearer`` agent token; None when the header is
    missing or the token opens no session (malformed, forged, expired, logged out, or its
    account removed or changed)."""
    token = bearer_token(request)
    if token is None or SESSIONS not in request.app:
        return None
    try:
        return await request.app[SESSIONS].check(token)
    except SessionError as e:
        log.debug("bearer token refused: %s", e.reason)
        return None
