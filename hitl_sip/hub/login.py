"""``POST /api/login`` (PROTOCOL.md §3) and the bearer-token helper for agent endpoints.

Wrong password and unknown user get the same 401 in the same time (the store hashes a
dummy for unknown names). Failed attempts are throttled per client address and per user
name: after ``limit`` failures within ``window`` seconds either key is answered 429
(``unavailable``, with ``Retry-After``) until the oldest failure ages out. Attempts count
as failures while they are being verified, so parallel guesses cannot overtake the
counter. The per-name key lets anyone delay one agent's login by guessing; that is the
price of stopping a distributed guess at one account. The client address is the TCP
peer: behind a reverse proxy, configure aiohttp's forwarded-header handling first.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from hitl_sip.hub.agents import AgentStore
from hitl_sip.hub.tokens import TokenClaims, TokenError, TokenSigner

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 256
MAX_BODY_BYTES = 8 * 1024
UNAUTHORIZED_MESSAGE = "invalid username or password"


class LoginThrottle:
    """Failure counts per key within a sliding window; in memory, at most ``max_keys`` keys
    (the least recently failed are forgotten first). ``clock`` is monotonic seconds."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until every key may try again; 0 when none is throttled."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            stamps = self._failures.get(key)
            if stamps is None:
                continue
            while stamps and stamps[0] <= now - self.window:
                stamps.popleft()
            if not stamps:
                del self._failures[key]
            elif len(stamps) >= self.limit:
                wait = max(wait, stamps[0] + self.window - now)
        return wait

    def record(self, keys: Iterable[str]) -> float:
        """Count a failure against every key; returns its time stamp (for ``forgive``)."""
        now = self._clock()
        for key in keys:
            stamps = self._failures.get(key)
            if stamps is None:
                # Only the latest ``limit`` failures matter to the decision.
                stamps = self._failures[key] = deque(maxlen=self.limit)
            stamps.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return now

    def forgive(self, key: str, stamp: float) -> None:
        """Withdraw one failure recorded at ``stamp`` (the attempt succeeded after all)."""
        stamps = self._failures.get(key)
        if stamps is None:
            return
        if stamp in stamps:
            stamps.remove(stamp)
        if not stamps:
            del self._failures[key]

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)


AGENT_STORE = web.AppKey("agent_store", AgentStore)
TOKEN_SIGNER = web.AppKey("token_signer", TokenSigner)
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def error(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _parse_credentials(raw: bytes) -> tuple[str, str] | str:
    """``(username, password)``, or the message of a 400."""
    try:
        body: Any = json.loads(raw)
    except ValueError:
        return "body must be JSON"
    if not isinstance(body, dict):
        return "body must be a JSON object"
    fields: list[str] = []
    for field in ("username", "password"):
        value = body.get(field)
        if not isinstance(value, str) or not value:
            return f"{field} is required and must be a non-empty string"
        if len(value) > MAX_FIELD_CHARS:
            return f"{field} must be at most {MAX_FIELD_CHARS} characters"
        fields.append(value)
    return fields[0], fields[1]


async def login(request: web.Request) -> web.Response:
    store = request.app[AGENT_STORE]
    signer = request.app[TOKEN_SIGNER]
    throttle = request.app[LOGIN_THROTTLE]
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error("bad_request", f"body must be at most {MAX_BODY_BYTES} bytes", 400)
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        return error("bad_request", f"body must be at most {MAX_BODY_BYTES} bytes", 400)
    parsed = _parse_credentials(raw)
    if isinstance(parsed, str):
        return error("bad_request", parsed, 400)
    username, password = parsed
    ip_key = f"ip:{request.remote or '?'}"
    user_key = f"user:{username.casefold()}"
    wait = throttle.retry_after((ip_key, user_key))
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        log.warning("login throttled from %s", request.remote, extra={"redact": username})
        return error(
            "unavailable",
            f"too many failed logins; retry in {seconds} s",
            429,
            headers={"Retry-After": str(seconds)},
        )
    stamp = throttle.record((ip_key, user_key))
    agent = await store.averify(username, password)
    if agent is None:
        log.info("login failed from %s", request.remote, extra={"redact": username})
        return error("unauthorized", UNAUTHORIZED_MESSAGE, 401)
    throttle.forgive(ip_key, stamp)
    throttle.reset(user_key)
    token, expires_at = signer.issue(agent.agent_id, agent.name)
    log.info("agent %s logged in from %s", agent.agent_id, request.remote)
    return web.json_response(
        {"token": token, "expiresAt": expires_at, "agentId": agent.agent_id, "name": agent.name},
        headers={"Cache-Control": "no-store"},
    )


def setup_login(
    app: web.Application,
    store: AgentStore,
    signer: TokenSigner,
    throttle: LoginThrottle | None = None,
) -> None:
    """Add ``POST /api/login``; the store, signer and throttle are kept under the
    ``AGENT_STORE``, ``TOKEN_SIGNER`` and ``LOGIN_THROTTLE`` app keys."""
    app[AGENT_STORE] = store
    app[TOKEN_SIGNER] = signer
    app[LOGIN_THROTTLE] = throttle if throttle is not None else LoginThrottle()
    app.router.add_post("/api/login", login)


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def bearer_agent(request: web.Request, signer: TokenSigner) -> TokenClaims | None:
    """The claims of a valid agent token in ``Authorization: Bearer``; None when the header
    is missing or the token is malformed, forged or expired."""
    token = bearer_token(request)
    if token is None:
        return None
    try:
        return signer.verify(token)
    except TokenError as e:
        log.debug("bearer token refused: %s", e.reason)
        return None
