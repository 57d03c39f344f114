"""UAS-side HTTP digest authentication for SIP requests (RFC 2617, RFC 7616, RFC 8760).

Nonces are stateless: ``<hex timestamp>.<HMAC-SHA256(secret, timestamp:realm)>``, so any
authenticator with the same secret checks them. Behind the SIP front the authenticated retry
is a new transaction and may reach another worker than the one that sent the 401: the hub
gives every worker the same secret (``<data_dir>/digest.key`` or ``sip.digest_secret``, the
latter shared by several hubs), so a nonce from any of them verifies on all. A right answer
to a nonce older than ``nonce_ttl`` gets 401 ``stale=true``; a nonce not made with the secret
is refused.

Accepted residual risk: nonce counts are not tracked, not even per worker (a count seen by
one worker is unknown to the others without shared state), so a captured ``Authorization``
can be replayed until its nonce expires (``nonce_ttl``, 300 s by default). The response binds
the method and request URI, and the IP allow-list limits who can send one. Only ``qop=auth``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote


class AuthStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"
    BAD_CREDENTIALS = "bad_credentials"
    STALE_NONCE = "stale_nonce"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class AuthResult:
    """The outcome of ``verify``; ``username`` is set on OK and STALE_NONCE, ``detail`` on errors.

    ``detail`` names the problem (never a password) and is safe for logs.
    """

    status: AuthStatus
    username: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
ALGORITHMS = tuple(_HASHES)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!#$%&'*+^_`|~]+")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_NONCE_RE = re.compile(r"([0-9a-f]{1,16})\.([A-Za-z0-9_\-]{22})")
_MAX_CLOCK_SKEW = 5.0


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Parse ``Digest a=b, c="q \\"x\\", y"`` into (scheme, {lower-case name: unquoted value}).

    Raises ValueError with the offset of the first problem; duplicate parameters are an error.
    """
    text = value.strip()
    match = _TOKEN_RE.match(text)
    if match is None:
        raise ValueError("missing auth scheme")
    scheme = match.group()
    i = match.end()
    if i < len(text) and text[i] not in " \t":
        raise ValueError(f"offset {i}: expected a space after the auth scheme")
    params: dict[str, str] = {}
    n = len(text)
    while True:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            return scheme, params
        match = _TOKEN_RE.match(text, i)
        if match is None:
            raise ValueError(f"offset {i}: expected a parameter name")
        name = match.group().lower()
        i = match.end()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            raise ValueError(f"offset {i}: expected '=' after parameter {name!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            chars: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted value of parameter {name!r}")
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                elif ch == '"':
                    i += 1
                    break
                else:
                    chars.append(ch)
                    i += 1
            param = "".join(chars)
        else:
            match = _TOKEN_RE.match(text, i)
            if match is None:
                raise ValueError(f"offset {i}: expected a token or quoted value for {name!r}")
            param = match.group()
            i = match.end()
        if name in params:
            raise ValueError(f"duplicate parameter {name!r}")
        params[name] = param
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise ValueError(f"offset {i}: expected ',' after parameter {name!r}")


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The ``response`` a client sends (RFC 7616 §3.4.1), for MD5/SHA-256 and their -sess."""
    base, sess, _ = algorithm.upper().partition("-SESS")
    digest = _HASHES.get(base)
    if digest is None:
        raise ValueError(f"unsupported algorithm {algorithm[:20]!r}")

    def h(text: str) -> str:
        return digest(text.encode("utf-8"))

    ha1 = h(f"{username}:{realm}:{password}")
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestAuthenticator:
    """Challenges and verifies ``Authorization`` headers against ``credentials`` (user → password).

    ``algorithms`` lists what clients may use, in order of preference; ``challenge()`` offers the
    first, ``challenges()`` one header value per algorithm (RFC 8760 §2.4).
    """

    def __init__(
        self,
        realm: str,
        credentials: Mapping[str, str],
        secret: bytes,
        nonce_ttl: float = 300,
        clock: Callable[[], float] = time.time,
        *,
        algorithms: Sequence[str] = ("MD5", "SHA-256"),
    ) -> None:
        if not realm or any(ord(ch) < 32 or ch == '"' for ch in realm):
            raise ValueError("realm must be non-empty without quotes or control characters")
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        if not algorithms:
            raise ValueError("at least one algorithm is required")
        for algorithm in algorithms:
            if algorithm not in _HASHES:
                raise ValueError(f"unsupported algorithm {algorithm!r}: use one of {ALGORITHMS}")
        self.realm = realm
        self._credentials = dict(credentials)
        self._secret = secret
        self._nonce_ttl = nonce_ttl
        self._clock = clock
        self._algorithms = tuple(algorithms)

    def challenge(self, stale: bool = False, algorithm: str | None = None) -> str:
        """A ``WWW-Authenticate`` value with a fresh nonce (``stale=true`` after a stale nonce)."""
        algorithm = algorithm or self._algorithms[0]
        if algorithm not in self._algorithms:
            raise ValueError(f"algorithm {algorithm!r} is not enabled")
        parts = [
            f"Digest realm={_quote(self.realm)}",
            f"nonce={_quote(self._make_nonce(self._clock()))}",
            f"algorithm={algorithm}",
            'qop="auth"',
        ]
        if stale:
            parts.append("stale=true")
        return ", ".join(parts)

    def challenges(self, stale: bool = False) -> list[str]:
        """One ``WWW-Authenticate`` value per enabled algorithm, most preferred first."""
        return [self.challenge(stale, algorithm) for algorithm in self._algorithms]

    def verify(self, method: str, authorization: str | None) -> AuthResult:
        """Check an ``Authorization`` header value for a request with ``method``."""
        if authorization is None or not authorization.strip():
            return AuthResult(AuthStatus.MISSING)
        scheme = authorization.split(None, 1)[0].split(",", 1)[0]
        if scheme.lower() != "digest":  # e.g. Basic, whose token68 is no auth-param list
            return AuthResult(AuthStatus.MALFORMED, detail=f"unsupported scheme {scheme[:20]!r}")
        try:
            _, params = parse_auth_header(authorization)
        except ValueError as e:
            return AuthResult(AuthStatus.MALFORMED, detail=str(e))
        problem = _check_params(params)
        if problem:
            return AuthResult(AuthStatus.MALFORMED, detail=problem)
        algorithm = params.get("algorithm", "MD5")
        base = algorithm.upper().removesuffix("-SESS")
        if base not in self._algorithms:
            return AuthResult(AuthStatus.MALFORMED, detail=f"algorithm {algorithm[:20]!r} refused")

        username = params.get("username")
        if username is None:
            username = _decode_ext_value(params["username*"])
            if username is None:
                return AuthResult(AuthStatus.MALFORMED, detail="bad username* encoding")
        if params["realm"] != self.realm:
            return AuthResult(AuthStatus.BAD_CREDENTIALS, detail="realm mismatch")
        password = self._credentials.get(username)
        expected = compute_response(
            algorithm=algorithm,
            username=username,
            realm=self.realm,
            password=password if password is not None else "\x00unknown",
            method=method,
            uri=params["uri"],
            nonce=params["nonce"],
            nc=params["nc"],
            cnonce=params["cnonce"],
        )
        matches = hmac.compare_digest(expected.encode(), params["response"].lower().encode())
        if password is None:
            return AuthResult(AuthStatus.BAD_CREDENTIALS, detail="unknown username")
        issued = self._nonce_time(params["nonce"])
        if issued is None:
            return AuthResult(AuthStatus.BAD_CREDENTIALS,
                              detail="nonce not made with this secret")
        if not matches:
            return AuthResult(AuthStatus.BAD_CREDENTIALS, detail="wrong response")
        age = self._clock() - issued
        if age > self._nonce_ttl or age < -_MAX_CLOCK_SKEW:
            return AuthResult(AuthStatus.STALE_NONCE, username=username, detail="nonce expired")
        return AuthResult(AuthStatus.OK, username=username)

    def _mac(self, stamp: str) -> str:
        mac = hmac.new(self._secret, f"{stamp}:{self.realm}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")

    def _make_nonce(self, now: float) -> str:
        stamp = format(max(int(now), 0), "x")
        return f"{stamp}.{self._mac(stamp)}"

    def _nonce_time(self, nonce: str) -> int | None:
        match = _NONCE_RE.fullmatch(nonce)
        if match is None:
            return None
        stamp, mac = match.groups()
        if not hmac.compare_digest(mac.encode(), self._mac(stamp).encode()):
            return None
        return int(stamp, 16)


def _check_params(params: Mapping[str, str]) -> str:
    """Why the Authorization params are unusable, or "" when they are complete."""
    if "username" not in params and "username*" not in params:
        return "missing parameter 'username'"
    if "username" in params and "username*" in params:
        return "both 'username' and 'username*' given"
    for name in ("realm", "nonce", "uri", "response"):
        if name not in params:
            return f"missing parameter {name!r}"
    if params.get("userhash", "false").lower() != "false":
        return "userhash is not supported"
    qop = params.get("qop")
    if qop is None:
        return "missing parameter 'qop' (qop=auth is required)"
    if qop.lower() != "auth":
        return f"qop {qop[:20]!r} is not supported (only auth)"
    if "cnonce" not in params or not params["cnonce"]:
        return "missing parameter 'cnonce'"
    if not _NC_RE.fullmatch(params.get("nc", "")):
        return "parameter 'nc' must be 8 hex digits"
    return ""


def _decode_ext_value(value: str) -> str | None:
    """Decode an RFC 8187 ``UTF-8''percent-encoded`` value."""
    charset, sep, rest = value.partition("''")
    if not sep or charset.upper() != "UTF-8":
        return None
    try:
        return unquote(rest, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
