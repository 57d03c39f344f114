"""Agent tokens: what verifies, what is refused and why, and where the secret comes from."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hitl_sip.errors import ConfigError
from hitl_sip.hub.tokens import (
    SECRET_ENV,
    TokenError,
    TokenSigner,
    load_or_create_secret,
    parse_secret,
)

SECRET = bytes(range(32))


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def reason(signer: TokenSigner, token: str) -> str:
    with pytest.raises(TokenError) as info:
        signer.verify(token)
    return info.value.reason


def test_an_issued_token_verifies_to_its_claims() -> None:
    clock = FakeClock()
    signer = TokenSigner(SECRET, ttl=3600, clock=clock)
    token, expires_at = signer.issue("agent-1", "alice")
    claims = signer.verify(token)
    assert (claims.sub, claims.agent_id, claims.name) == ("agent-1", "agent-1", "alice")
    assert claims.iat == clock.now and claims.exp == clock.now + 3600
    assert expires_at == "2023-11-14T23:13:20Z" == claims.expires_at
    assert len(claims.jti) == 32


def test_the_token_is_base64url_json_dot_base64url_hmac_sha256() -> None:
    token, _ = TokenSigner(SECRET, clock=FakeClock()).issue("agent-1", "alice", 7)
    body, signature = token.split(".")
    payload = json.loads(unb64url(body))
    assert set(payload) == {"sub", "name", "ver", "exp", "iat", "jti"}
    assert payload["ver"] == 7  # the account's token version
    expected = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
    assert unb64url(signature) == expected
    assert "=" not in token


def test_every_token_gets_its_own_id() -> None:
    signer = TokenSigner(SECRET, clock=FakeClock())
    first, _ = signer.issue("agent-1", "alice")
    second, _ = signer.issue("agent-1", "alice")
    assert signer.verify(first).jti != signer.verify(second).jti


def test_the_default_lifetime_is_twelve_hours() -> None:
    clock = FakeClock()
    claims = TokenSigner(SECRET, clock=clock).verify(
        TokenSigner(SECRET, clock=clock).issue("a", "alice")[0]
    )
    assert claims.exp - claims.iat == 12 * 3600


def test_a_token_signed_with_another_secret_is_refused_as_bad_signature() -> None:
    clock = FakeClock()
    forged, _ = TokenSigner(b"x" * 32, clock=clock).issue("agent-1", "alice")
    assert reason(TokenSigner(SECRET, clock=clock), forged) == "bad_signature"


def test_a_tampered_payload_is_refused_as_bad_signature() -> None:
    signer = TokenSigner(SECRET, clock=FakeClock())
    token, _ = signer.issue("agent-1", "alice")
    body, signature = token.split(".")
    payload = json.loads(unb64url(body))
    payload["sub"] = "agent-2"
    payload["exp"] += 10**6
    tampered = b64url(json.dumps(payload).encode()) + "." + signature
    assert reason(signer, tampered) == "bad_signature"


def test_a_flipped_signature_character_is_refused_as_bad_signature() -> None:
    signer = TokenSigner(SECRET, clock=FakeClock())
    token, _ = signer.issue("agent-1", "alice")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert reason(signer, flipped) == "bad_signature"


def test_a_token_is_refused_as_expired_once_the_clock_reaches_exp() -> None:
    clock = FakeClock()
    signer = TokenSigner(SECRET, ttl=60, clock=clock)
    token, _ = signer.issue("agent-1", "alice")
    clock.now += 59.999
    assert signer.verify(token).name == "alice"
    clock.now += 0.001
    assert reason(signer, token) == "expired"


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "abc.",
        ".abc",
        "a.b.c",
        "ab$c.def",
        "abc.de+f",
        "abc.def=",
        "x" * 5000 + ".abc",
        "é.abc",
    ],
)
def test_malformed_strings_are_refused_as_malformed(token: str) -> None:
    assert reason(TokenSigner(SECRET, clock=FakeClock()), token) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"sub": "a", "name": "n", "exp": "soon", "iat": 1, "jti": "j"}',
        b'{"sub": 1, "name": "n", "exp": 2e9, "iat": 1, "jti": "j"}',
        b'{"name": "n", "exp": 2e9, "iat": 1, "jti": "j"}',
        b'{"sub": "a", "name": "n", "exp": true, "iat": 1, "jti": "j"}',
        b'{"sub": "a", "name": "n", "exp": NaN, "iat": 1, "jti": "j"}',
        b"\xff\xfe",
    ],
)
def test_a_correctly_signed_but_malformed_payload_is_refused_as_malformed(
    payload: bytes,
) -> None:
    body = b64url(payload)
    signature = b64url(hmac.new(SECRET, body.encode(), hashlib.sha256).digest())
    signer = TokenSigner(SECRET, clock=FakeClock())
    assert reason(signer, f"{body}.{signature}") == "malformed"


def test_a_short_secret_or_non_positive_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="31 bytes; at least 32"):
        TokenSigner(b"x" * 31)
    with pytest.raises(ValueError, match="ttl"):
        TokenSigner(SECRET, ttl=0)


def test_the_secret_file_is_created_private_with_32_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "data" / "token.key"
    secret = load_or_create_secret(path, env={})
    assert len(secret) == 32
    assert path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]  # no temp file left


def test_the_secret_file_is_reused_so_tokens_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    clock = FakeClock()
    token, _ = TokenSigner(load_or_create_secret(path, env={}), clock=clock).issue("a", "alice")
    restarted = TokenSigner(load_or_create_secret(path, env={}), clock=clock)
    assert restarted.verify(token).name == "alice"


def test_a_truncated_secret_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    path.write_bytes(b"short")
    with pytest.raises(ConfigError) as info:
        load_or_create_secret(path, env={})
    assert info.value.key == str(path)


def test_the_environment_secret_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    secret = os.urandom(32)
    assert load_or_create_secret(path, env={SECRET_ENV: secret.hex()}) == secret
    assert not path.exists()


@pytest.mark.parametrize(
    "encode",
    [
        bytes.hex,
        lambda b: b.hex().upper(),
        lambda b: base64.b64encode(b).decode(),
        lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
    ],
)
def test_the_environment_secret_may_be_hex_or_base64(encode: Callable[[bytes], str]) -> None:
    secret = bytes(range(100, 148))
    assert parse_secret(encode(secret)) == secret


@pytest.mark.parametrize(
    "value", ["ab" * 31, "not a secret!", base64.b64encode(b"x" * 31).decode()]
)
def test_a_weak_or_garbled_environment_secret_is_a_configuration_error(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_or_create_secret(tmp_path / "token.key", env={SECRET_ENV: value})
    assert info.value.key == SECRET_ENV
