"""UAS digest auth: RFC test vectors, client round trips, stale nonces, malformed headers."""

from __future__ import annotations

import base64
import hashlib
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest

from hitl_sip.config import Config, SipConfig, load_config
from hitl_sip.errors import ConfigError
from hitl_sip.hub.supervisor import load_digest_secret
from hitl_sip.sip.digest import (
    AuthStatus,
    DigestAuthenticator,
    compute_response,
    parse_auth_header,
)

SECRET = b"0123456789abcdef-test-secret"
REALM = "hitl-sip"
URI = "sip:+14155550100@hitl.example.com"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_auth(
    clock: FakeClock | None = None, algorithms: tuple[str, ...] = ("MD5", "SHA-256")
) -> DigestAuthenticator:
    return DigestAuthenticator(
        REALM,
        {"trunk": "s3cret", "other": "pw"},
        SECRET,
        nonce_ttl=300,
        clock=clock or FakeClock(),
        algorithms=algorithms,
    )


def client_authorization(
    challenge: str,
    *,
    username: str = "trunk",
    password: str = "s3cret",
    method: str = "INVITE",
    uri: str = URI,
    algorithm: str | None = None,
    cnonce: str = "0a4f113b",
    nc: str = "00000001",
) -> str:
    """What a UAC computes from a challenge, written out independently of the module."""
    _, params = parse_auth_header(challenge)
    nonce, realm = params["nonce"], params["realm"]
    algorithm = algorithm or params["algorithm"]
    base = algorithm.upper().removesuffix("-SESS")

    def h(text: str) -> str:
        data = text.encode()
        if base == "MD5":
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        return hashlib.sha256(data).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


# RFC 2617 §3.5, worked by hand: HA1 = MD5("Mufasa:testrealm@host.com:Circle Of Life"),
# HA2 = MD5("GET:/dir/index.html"), response = MD5(HA1:nonce:nc:cnonce:qop:HA2).
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa",\r\n'
    '                 realm="testrealm@host.com",\r\n'
    '                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n'
    '                 uri="/dir/index.html",\r\n'
    "                 qop=auth,\r\n"
    "                 nc=00000001,\r\n"
    '                 cnonce="0a4f113b",\r\n'
    '                 response="6629fae49393a05397450978507c4ef1",\r\n'
    '                 opaque="5ccc069c403ebaf9f0171e9517f40e41"'
).replace("\r\n", "")


def test_rfc2617_example_by_hand() -> None:
    ha1 = hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    by_hand = hashlib.md5(
        f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}".encode()
    ).hexdigest()
    scheme, params = parse_auth_header(RFC2617_AUTHORIZATION)

    assert scheme == "Digest"
    assert by_hand == params["response"] == "6629fae49393a05397450978507c4ef1"
    assert (
        compute_response(
            algorithm="MD5",
            username=params["username"],
            realm=params["realm"],
            password="Circle Of Life",
            method="GET",
            uri=params["uri"],
            nonce=params["nonce"],
            nc=params["nc"],
            cnonce=params["cnonce"],
        )
        == params["response"]
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    assert (
        compute_response(
            algorithm=algorithm,
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_challenge_offers_realm_nonce_algorithm_and_qop() -> None:
    scheme, params = parse_auth_header(make_auth().challenge())

    assert scheme == "Digest"
    assert params["realm"] == REALM
    assert params["algorithm"] == "MD5"
    assert params["qop"] == "auth"
    assert params["nonce"]
    assert "stale" not in params


def test_stale_challenge_says_so() -> None:
    _, params = parse_auth_header(make_auth().challenge(stale=True))

    assert params["stale"] == "true"


def test_challenges_lists_one_value_per_algorithm() -> None:
    values = make_auth(algorithms=("SHA-256", "MD5")).challenges()

    assert [parse_auth_header(v)[1]["algorithm"] for v in values] == ["SHA-256", "MD5"]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_round_trip_with_a_client_computed_response(algorithm: str) -> None:
    auth = make_auth()
    header = client_authorization(auth.challenge(), algorithm=algorithm)

    result = auth.verify("INVITE", header)

    assert result.status is AuthStatus.OK
    assert result.ok
    assert result.username == "trunk"


def test_uppercase_hex_response_is_accepted() -> None:
    auth = make_auth()
    header = client_authorization(auth.challenge())
    response = parse_auth_header(header)[1]["response"]

    assert auth.verify("INVITE", header.replace(response, response.upper())).ok


def test_utf8_extended_username() -> None:
    auth = DigestAuthenticator(REALM, {"jäsen": "pw"}, SECRET, clock=FakeClock())
    header = client_authorization(auth.challenge(), username="jäsen", password="pw")
    header = header.replace('username="jäsen"', "username*=UTF-8''" + quote("jäsen"))

    result = auth.verify("INVITE", header)

    assert result.status is AuthStatus.OK
    assert result.username == "jäsen"


def test_missing_authorization() -> None:
    auth = make_auth()

    assert auth.verify("INVITE", None).status is AuthStatus.MISSING
    assert auth.verify("INVITE", "  ").status is AuthStatus.MISSING


def test_wrong_password_is_bad_credentials() -> None:
    auth = make_auth()
    header = client_authorization(auth.challenge(), password="guess")

    result = auth.verify("INVITE", header)

    assert result.status is AuthStatus.BAD_CREDENTIALS
    assert result.username is None
    assert "guess" not in result.detail


def test_unknown_user_is_bad_credentials() -> None:
    auth = make_auth()
    header = client_authorization(auth.challenge(), username="mallory")

    assert auth.verify("INVITE", header).status is AuthStatus.BAD_CREDENTIALS


def test_response_is_bound_to_the_method() -> None:
    auth = make_auth()
    header = client_authorization(auth.challenge(), method="INVITE")

    assert auth.verify("BYE", header).status is AuthStatus.BAD_CREDENTIALS


def test_realm_mismatch_is_bad_credentials() -> None:
    auth = make_auth()
    header = client_authorization(auth.challenge()).replace(f'realm="{REALM}"', 'realm="other"')

    result = auth.verify("INVITE", header)

    assert result.status is AuthStatus.BAD_CREDENTIALS
    assert result.detail == "realm mismatch"


def test_nonce_from_another_secret_is_not_accepted() -> None:
    other = DigestAuthenticator(
        REALM, {"trunk": "s3cret"}, b"another-secret-of-16+", clock=FakeClock()
    )
    header = client_authorization(other.challenge())

    result = make_auth().verify("INVITE", header)

    assert result.status is AuthStatus.BAD_CREDENTIALS
    assert result.detail == "nonce not made with this secret"


@pytest.mark.parametrize("nonce", ["abc", "65535.AAAAAAAAAAAAAAAAAAAAAA", ""])
def test_forged_nonce_is_not_accepted(nonce: str) -> None:
    auth = make_auth()
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5, qop="auth"'

    assert auth.verify("INVITE", client_authorization(challenge)).status is (
        AuthStatus.BAD_CREDENTIALS
    )


def test_expired_nonce_with_right_password_is_stale() -> None:
    clock = FakeClock()
    auth = make_auth(clock)
    header = client_authorization(auth.challenge())

    clock.now += 299
    assert auth.verify("INVITE", header).ok
    clock.now += 2
    result = auth.verify("INVITE", header)

    assert result.status is AuthStatus.STALE_NONCE
    assert result.username == "trunk"


def test_expired_nonce_with_wrong_password_is_bad_credentials() -> None:
    clock = FakeClock()
    auth = make_auth(clock)
    header = client_authorization(auth.challenge(), password="guess")
    clock.now += 3600

    assert auth.verify("INVITE", header).status is AuthStatus.BAD_CREDENTIALS


def test_algorithm_not_enabled_is_refused() -> None:
    auth = make_auth(algorithms=("SHA-256",))
    header = client_authorization(auth.challenge(), algorithm="MD5")

    result = auth.verify("INVITE", header)

    assert result.status is AuthStatus.MALFORMED
    assert "refused" in result.detail


def test_missing_algorithm_means_md5() -> None:
    auth = make_auth()
    header = client_authorization(auth.challenge()).replace(", algorithm=MD5", "")

    assert auth.verify("INVITE", header).ok


@pytest.mark.parametrize(
    ("mangle", "detail"),
    [
        (lambda h: "Basic dHJ1bms6czNjcmV0", "unsupported scheme"),
        (lambda h: h.replace('uri="', 'uri="x'), ""),  # wrong response, not malformed
        (lambda h: h.replace(", qop=auth", ""), "missing parameter 'qop'"),
        (lambda h: h.replace("qop=auth", "qop=auth-int"), "only auth"),
        (lambda h: h.replace("nc=00000001", "nc=1"), "'nc' must be 8 hex digits"),
        (lambda h: h.replace(', cnonce="0a4f113b"', ""), "missing parameter 'cnonce'"),
        (lambda h: h.replace('username="trunk", ', ""), "missing parameter 'username'"),
        (lambda h: h.replace(", response=", ", resp="), "missing parameter 'response'"),
        (lambda h: h.replace("algorithm=MD5", "algorithm=SHA-512-256"), "refused"),
        (lambda h: h + ', username="x"', "duplicate parameter 'username'"),
        (lambda h: h + ', opaque="unterminated', "unterminated quoted value"),
        (lambda h: h + ", userhash=true", "userhash"),
        (lambda h: h.replace("Digest ", "Digest,"), "space after the auth scheme"),
    ],
)
def test_malformed_authorization(mangle: Callable[[str], str], detail: str) -> None:
    auth = make_auth()
    header = mangle(client_authorization(auth.challenge()))

    result = auth.verify("INVITE", header)

    if detail:
        assert result.status is AuthStatus.MALFORMED
        assert detail in result.detail
    else:
        assert result.status is AuthStatus.BAD_CREDENTIALS


def test_parse_auth_header_handles_escapes_commas_and_spacing() -> None:
    scheme, params = parse_auth_header(
        r'Digest  username = "a\"b,c" ,, realm="r, \\ s",nonce=abc , QOP=auth,'
    )

    assert scheme == "Digest"
    assert params == {"username": 'a"b,c', "realm": "r, \\ s", "nonce": "abc", "qop": "auth"}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", "missing auth scheme"),
        ('"Digest"', "missing auth scheme"),
        ("Digest realm", "expected '=' after parameter 'realm'"),
        ("Digest realm=", "expected a token or quoted value"),
        ('Digest realm="x" nonce="y"', "expected ',' after parameter 'realm'"),
        ("Digest =x", "expected a parameter name"),
        ('Digest realm="x', "unterminated quoted value of parameter 'realm'"),
        ("Digest a=1, a=2", "duplicate parameter 'a'"),
    ],
)
def test_parse_auth_header_errors(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_auth_header(value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"secret": b"short"}, "at least 16 bytes"),
        ({"realm": ""}, "realm"),
        ({"realm": 'a"b'}, "realm"),
        ({"algorithms": ("SHA-512",)}, "unsupported algorithm"),
        ({"algorithms": ()}, "at least one algorithm"),
        ({"nonce_ttl": 0}, "nonce_ttl"),
    ],
)
def test_constructor_validates(kwargs: dict[str, object], error: str) -> None:
    args: dict[str, object] = {"realm": REALM, "credentials": {}, "secret": SECRET, **kwargs}
    with pytest.raises(ValueError, match=error):
        DigestAuthenticator(**args)  # type: ignore[arg-type]


def test_challenge_for_a_disabled_algorithm_is_an_error() -> None:
    with pytest.raises(ValueError, match="not enabled"):
        make_auth(algorithms=("MD5",)).challenge(algorithm="SHA-256")


# -- one secret, several workers (issue 13): the 401 and the retry may meet different workers


def worker_auth(secret: bytes, clock: FakeClock) -> DigestAuthenticator:
    """A second worker's authenticator: its own instance, clock and copy of the users."""
    return DigestAuthenticator(REALM, {"trunk": "s3cret"}, secret, nonce_ttl=300, clock=clock)


def test_nonce_from_one_worker_verifies_on_another_with_the_same_secret() -> None:
    clock = FakeClock()
    challenging, retried = worker_auth(SECRET, clock), worker_auth(SECRET, FakeClock(clock.now + 2))

    for algorithm in ("MD5", "SHA-256"):
        header = client_authorization(challenging.challenge(algorithm=algorithm))
        result = retried.verify("INVITE", header)

        assert result.status is AuthStatus.OK, result.detail
        assert result.username == "trunk"


def test_nonce_from_a_worker_with_another_secret_is_refused() -> None:
    clock = FakeClock()
    header = client_authorization(worker_auth(SECRET, clock).challenge())

    result = worker_auth(b"a-different-32-byte-secret-here!", clock).verify("INVITE", header)

    assert result.status is AuthStatus.BAD_CREDENTIALS
    assert result.detail == "nonce not made with this secret"


def test_nonce_from_another_worker_goes_stale_there_too() -> None:
    clock = FakeClock()
    header = client_authorization(worker_auth(SECRET, clock).challenge())
    later = FakeClock(clock.now + 301)
    other = worker_auth(SECRET, later)

    result = other.verify("INVITE", header)

    assert result.status is AuthStatus.STALE_NONCE
    _, params = parse_auth_header(other.challenge(stale=result.status is AuthStatus.STALE_NONCE))
    assert params["stale"] == "true"
    assert other.verify("INVITE", client_authorization(other.challenge())).ok


def test_nonce_with_its_timestamp_moved_forward_is_refused() -> None:
    clock = FakeClock()
    nonce = parse_auth_header(worker_auth(SECRET, clock).challenge())[1]["nonce"]
    stamp, mac = nonce.split(".")
    later = FakeClock(clock.now + 3600)
    renewed = f"{int(later.now):x}.{mac}"  # the old MAC on a fresh timestamp
    challenge = f'Digest realm="{REALM}", nonce="{renewed}", algorithm=MD5, qop="auth"'

    result = worker_auth(SECRET, later).verify("INVITE", client_authorization(challenge))

    assert int(stamp, 16) == int(clock.now)
    assert result.status is AuthStatus.BAD_CREDENTIALS
    assert result.detail == "nonce not made with this secret"


def test_nonce_is_bound_to_the_realm() -> None:
    clock = FakeClock()
    nonce = parse_auth_header(worker_auth(SECRET, clock).challenge())[1]["nonce"]
    elsewhere = DigestAuthenticator("other-realm", {"trunk": "s3cret"}, SECRET, clock=clock)
    challenge = f'Digest realm="other-realm", nonce="{nonce}", algorithm=MD5, qop="auth"'

    result = elsewhere.verify("INVITE", client_authorization(challenge))

    assert result.status is AuthStatus.BAD_CREDENTIALS
    assert result.detail == "nonce not made with this secret"


def config_in(data_dir: Path, digest_secret: str = "") -> Config:
    return replace(Config(), data_dir=str(data_dir),
                   sip=replace(SipConfig(), digest_secret=digest_secret))


def test_hub_creates_the_digest_key_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_digest_secret(config_in(tmp_path / "data"))
    key = tmp_path / "data" / "digest.key"

    assert len(first) == 32
    assert key.read_bytes() == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_digest_secret(config_in(tmp_path / "data")) == first
    assert load_digest_secret(config_in(tmp_path / "elsewhere")) != first


def test_configured_digest_secret_wins_over_the_key_file(tmp_path: Path) -> None:
    shared = bytes(range(32))

    assert load_digest_secret(config_in(tmp_path, shared.hex())) == shared
    assert not (tmp_path / "digest.key").exists()


def test_hub_ignores_the_agent_token_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITL_SIP_TOKEN_SECRET", "ab" * 32)

    assert load_digest_secret(config_in(tmp_path)) == (tmp_path / "digest.key").read_bytes()


@pytest.mark.parametrize("value", ["not a secret!", "ab" * 16])
def test_bad_digest_secret_is_a_config_error_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"HITL_SIP_SIP_DIGEST_SECRET": value})

    assert "sip.digest_secret" in str(caught.value)
    assert value not in str(caught.value)


def test_digest_secret_may_be_base64() -> None:
    text = base64.b64encode(bytes(range(32))).decode()

    assert load_config(None, env={"HITL_SIP_SIP_DIGEST_SECRET": text}).sip.digest_secret == text
