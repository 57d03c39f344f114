"""Agent session tokens (PROTOCOL.md §1 connect ``auth: {token}``, §3 ``POST /api/login``).

A token is ``base64url(payload) + "." + base64url(HMAC-SHA256(secret, base64url(payload)))``
without padding, the payload a compact JSON object ``{sub, name, ver, exp, iat, jti}``
(``sub`` the agent id, ``ver`` the account's token version when it was issued, ``exp``/``iat``
Unix seconds). The signature proves only that a hub issued it: whether it still opens a
session — the account exists, is enabled, has not moved to a newer token version, and the
token was not logged out — is the session check's job (hitl_sip.hub.sessions).

The secret comes from, in order:

1. ``HITL_SIP_TOKEN_SECRET`` — at least 32 bytes, written as hex or base64 (standard or
   URL-safe). Give every hub behind one load balancer the same value so a token issued by
   one is accepted by the others (e.g. ``openssl rand -hex 32``).
2. ``<data_dir>/token.key`` — 32 random bytes created on first start (mode 0600, written
   atomically) and reused afterwards, so tokens survive a hub restart. Delete the file to
   invalidate every token issued so far.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from hitl_sip.errors import ConfigError, HitlSipError

log = logging.getLogger(__name__)

SECRET_ENV = "HITL_SIP_TOKEN_SECRET"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 32
DEFAULT_TTL = 12 * 3600.0
MAX_TOKEN_CHARS = 4096

TokenErrorReason = Literal["malformed", "bad_signature", "expired"]

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


class TokenError(HitlSipError):
    """A token was refused; ``reason`` is ``malformed``, ``bad_signature`` or ``expired``."""

    def __init__(self, reason: TokenErrorReason) -> None:
        super().__init__(reason)
        self.reason: TokenErrorReason = reason


@dataclass(frozen=True)
class TokenClaims:
    sub: str  # the agent id
    name: str
    ver: int  # the account's token version at issue
    exp: float
    iat: float
    jti: str

    @property
    def agent_id(self) -> str:
        return self.sub

    @property
    def expires_at(self) -> str:
        return iso_utc(self.exp)


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies agent tokens. ``clock`` returns Unix seconds (tests inject one)."""

    def __init__(
        self, secret: bytes, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"token secret is {len(secret)} bytes; at least {MIN_SECRET_BYTES} required"
            )
        if ttl <= 0:
            raise ValueError("token ttl must be positive")
        self._secret = bytes(secret)
        self.ttl = ttl
        self._clock = clock

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest()
        return _b64url_encode(mac)

    def issue(self, agent_id: str, name: str, version: int = 1) -> tuple[str, str]:
        """A fresh token for the agent and its expiry as an ISO-8601 UTC string."""
        iat = round(self._clock(), 3)
        exp = round(iat + self.ttl, 3)
        payload = {
            "sub": agent_id,
            "name": name,
            "ver": version,
            "exp": exp,
            "iat": iat,
            "jti": secrets.token_hex(16),
        }
        body = _b64url_encode(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._sign(body)}", iso_utc(exp)

    def verify(self, token: str) -> TokenClaims:
        """The token's claims; ``TokenError`` if it is malformed, forged or expired."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("malformed")
        body, dot, signature = token.partition(".")
        if not dot or not _B64URL.fullmatch(body) or not _B64URL.fullmatch(signature):
            raise TokenError("malformed")
        # Compare the encoded MACs: no decoding of attacker input before the check, and no
        # second spelling of one signature is accepted.
        if not hmac.compare_digest(self._sign(body).encode(), signature.encode()):
            raise TokenError("bad_signature")
        claims = _claims(body)
        if self._clock() >= claims.exp:
            raise TokenError("expired")
        return claims


def _claims(body: str) -> TokenClaims:
    try:
        payload: Any = json.loads(_b64url_decode(body))
    except ValueError as e:  # bad base64, bad UTF-8 and bad JSON are all ValueErrors
        raise TokenError("malformed") from e
    if not isinstance(payload, dict):
        raise TokenError("malformed")
    sub, name, jti = payload.get("sub"), payload.get("name"), payload.get("jti")
    exp, iat, ver = payload.get("exp"), payload.get("iat"), payload.get("ver", 0)
    if not (isinstance(sub, str) and isinstance(name, str) and isinstance(jti, str)):
        raise TokenError("malformed")
    if isinstance(ver, bool) or not isinstance(ver, int):
        raise TokenError("malformed")
    return TokenClaims(sub=sub, name=name, ver=ver, exp=_number(exp), iat=_number(iat),
                       jti=jti)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError("malformed")
    return float(value)


def parse_secret(text: str) -> bytes:
    """Decode a secret given as hex or base64 (standard or URL-safe, padding optional)."""
    text = text.strip()
    if _HEX.fullmatch(text):
        secret = bytes.fromhex(text)
    else:
        try:
            normalised = text.replace("-", "+").replace("_", "/").rstrip("=")
            secret = base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError("must be hex or base64") from e
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"decodes to {len(secret)} bytes; at least {MIN_SECRET_BYTES} required")
    return secret


def load_or_create_secret(path: Path, env: Mapping[str, str] | None = None, *,
                          what: str = "token key") -> bytes:
    """The token secret: ``HITL_SIP_TOKEN_SECRET`` when set, else the key file at ``path``
    (created with 32 random bytes, mode 0600, when missing). ``ConfigError`` names the
    environment variable or the file when either is unusable."""
    environ = os.environ if env is None else env
    configured = environ.get(SECRET_ENV)
    if configured:
        try:
            return parse_secret(configured)
        except ValueError as e:
            raise ConfigError(SECRET_ENV, str(e)) from e
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        try:
            # link() publishes the complete file and, unlike rename(), never replaces a key
            # another process created meanwhile: the first writer wins and all read it.
            os.link(tmp, path)
        except FileExistsError:
            return _read_secret(path)
        except OSError:  # a file system without hard links: rename is still atomic
            os.replace(tmp, path)
        log.info("created %s %s", what, path)
        return secret
    finally:
        tmp.unlink(missing_ok=True)


def _read_secret(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(
            str(path),
            f"token key is {len(data)} bytes; at least {MIN_SECRET_BYTES} required"
            " (delete the file to create a new one)",
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("token key %s is readable by others (mode %o); chmod 600 it", path, mode)
    return data
