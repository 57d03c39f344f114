"""Trunk profiles: one TOML file per carrier kind (``sip_profiles/*.toml``), validated on load.

Schema — every section is optional, defaults shown; an unknown key is an error (typos must
not pass silently), and every error is a ``ConfigError`` naming the key (``profile.rtp.port_end``)::

    name = "twilio"              # required: letters, digits, '-' or '_'
    [allow]                      # source-IP allow-list for every SIP request
    cidrs = []                   # IPv4/IPv6 networks ("54.172.60.0/30", "::1"); no host bits
    allow_any = false            # true admits every source; otherwise empty cidrs admit none
    [auth]                       # inbound digest auth (RFC 7616: MD5, SHA-256, qop=auth)
    enabled = false
    realm = "hitl-sip"
    users = {}                   # username = password; env HITL_SIP_TRUNK_AUTH_USERS="u:p,u2:p2"
                                 # replaces the table when set (no ',' in passwords there)
    [register]                   # outbound REGISTER to the provider
    enabled = false
    registrar = ""               # sip:/sips: URI; required when enabled
    username = ""                # required when enabled
    password = ""                # env HITL_SIP_TRUNK_PASSWORD wins; required when enabled
    aor = ""                     # sip:/sips: URI; "" = sip:<username>@<registrar host>
    expires = 300                # 60–86400 seconds
    retry_interval = 30          # 5–3600 seconds
    [codecs]
    order = ["PCMU", "PCMA"]     # preference order; allowed: PCMU, PCMA, G722; no repeats
    [nat]
    public_address = ""          # IP or host name put in Contact/Via and SDP c=; "" = bound address
    [rtp]
    port_start = 10000           # 1024–65535
    port_end = 20000             # inclusive, 1024–65535, > port_start, ≥ 4 ports (one call slot)
    srtp = "off"                 # "off": RTP/AVP only; "optional": SRTP when the offer has it;
                                 # "mandatory": SDES SRTP (RFC 4568) only, a plain offer gets 488
    [headers]
    map = {}                     # header name = metadata key (snake_case), e.g. X-Twilio-CallSid
    prefixes = []                # header-name prefixes kept under their own name ("X-Vonage-")
    passthrough_x = false        # keep every other X- header under its own name
    [numbers]
    default_country_code = ""    # 1–3 digits ("1", "44", "49"); "" = national numbers stay raw
    [dtmf]
    payload_types = [101]        # 96–127; informative only, the PT negotiated in SDP counts
    [transfer]                   # an agent's transfer to a phone number (transfer_call)
    refer = false                # the carrier takes a blind REFER on our leg (Twilio: only
                                 # when enabled on the trunk, else 603)
    refer_host = ""              # the Refer-To host[:port] (sip:+E164@host); "" = the host
                                 # of the trunk's Contact in the call
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, TypeVar

from hitl_sip.errors import ConfigError
from hitl_sip.sip.acl import AllowList, Network, parse_cidr
from hitl_sip.sip.digest import DigestAuthenticator
from hitl_sip.sip.metadata import HeaderMapping
from hitl_sip.sip.uri import SipUri

AUTH_USERS_ENV = "HITL_SIP_TRUNK_AUTH_USERS"
PASSWORD_ENV = "HITL_SIP_TRUNK_PASSWORD"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HEADER_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_METADATA_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_COUNTRY_CODE_RE = re.compile(r"[1-9][0-9]{0,2}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

_T = TypeVar("_T")


class Codec(StrEnum):
    PCMU = "PCMU"
    PCMA = "PCMA"
    G722 = "G722"


class Srtp(StrEnum):
    """Media encryption toward the trunk: SDES-keyed SRTP (RFC 4568) in ``RTP/SAVP``."""

    OFF = "off"  # plain RTP/AVP; an SRTP-only offer fails
    OPTIONAL = "optional"  # SRTP when the offer has it, plain RTP otherwise
    # SRTP only: an RTP/AVP offer gets 488, an RTP/SAVP one without a=crypto 406 (pjsua's)
    MANDATORY = "mandatory"


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = False
    realm: str = "hitl-sip"
    users: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RegisterSettings:
    enabled: bool = False
    registrar: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    aor: str | None = None
    expires: int = 300
    retry_interval: int = 30


@dataclass(frozen=True)
class RtpPortRange:
    """An inclusive UDP port range; each call slot takes ``PORTS_PER_SLOT`` ports."""

    PORTS_PER_SLOT: ClassVar[int] = 4

    start: int = 10000
    end: int = 20000

    @property
    def slots(self) -> int:
        return (self.end - self.start + 1) // self.PORTS_PER_SLOT


@dataclass(frozen=True)
class TransferSettings:
    """``[transfer]``: how an agent's transfer to a phone number may leave by SIP."""

    refer: bool = False
    refer_host: str | None = None  # None: the host of the trunk's Contact in the call


@dataclass(frozen=True)
class TrunkProfile:
    """A validated trunk profile; see the module docstring for the TOML schema."""

    name: str
    allow_list: AllowList = field(default_factory=AllowList)
    auth: AuthSettings = field(default_factory=AuthSettings)
    register: RegisterSettings = field(default_factory=RegisterSettings)
    codecs: tuple[Codec, ...] = (Codec.PCMU, Codec.PCMA)
    public_address: str | None = None
    rtp: RtpPortRange = field(default_factory=RtpPortRange)
    srtp: Srtp = Srtp.OFF
    header_mapping: HeaderMapping = field(default_factory=HeaderMapping)
    default_country_code: str | None = None
    dtmf_payload_types: tuple[int, ...] = (101,)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    source: Path | None = None

    def authenticator(
        self, secret: bytes, *, nonce_ttl: float = 300, clock: Callable[[], float] = time.time
    ) -> DigestAuthenticator | None:
        """The inbound digest authenticator, or None when ``[auth]`` is disabled."""
        if not self.auth.enabled:
            return None
        return DigestAuthenticator(
            self.auth.realm, self.auth.users, secret, nonce_ttl=nonce_ttl, clock=clock
        )


def load_profile(
    name_or_path: str, profiles_dir: Path, *, env: Mapping[str, str] | None = None
) -> TrunkProfile:
    """Load ``profiles_dir/<name>.toml`` for a bare name (``twilio``), else the file at the path.

    ``env`` defaults to ``os.environ`` (for the ``HITL_SIP_TRUNK_*`` overrides).
    """
    if _NAME_RE.fullmatch(name_or_path):
        path = profiles_dir / f"{name_or_path}.toml"
    else:
        path = Path(name_or_path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError("profile", f"profile file not found: {path}") from e
    except OSError as e:
        raise ConfigError("profile", f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError
        raise ConfigError("profile", f"{path}: invalid TOML: {e}") from e
    return profile_from_dict(data, env=env, source=path)


def parse_profile(text: str, *, env: Mapping[str, str] | None = None) -> TrunkProfile:
    """Validate a profile given as TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("profile", f"invalid TOML: {e}") from e
    return profile_from_dict(data, env=env)


def profile_from_dict(
    data: Mapping[str, object],
    *,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> TrunkProfile:
    """Validate an already-decoded profile table."""
    environ: Mapping[str, str] = os.environ if env is None else env
    root = _Table(data, "profile")
    root.check_keys(
        "name", "allow", "auth", "register", "codecs", "nat", "rtp", "headers", "numbers", "dtmf",
        "transfer",
    )
    if "name" not in data:
        raise ConfigError("profile.name", 'required: the profile name, e.g. name = "twilio"')
    name = root.get("name", str, "")
    if not _NAME_RE.fullmatch(name):
        raise ConfigError("profile.name", "must be 1–64 letters, digits, '-' or '_'")
    return TrunkProfile(
        name=name,
        allow_list=_allow(root.table("allow")),
        auth=_auth(root.table("auth"), environ),
        register=_register(root.table("register"), environ),
        codecs=_codecs(root.table("codecs")),
        public_address=_nat(root.table("nat")),
        rtp=_rtp(root.table("rtp")),
        srtp=_srtp(root.table("rtp")),
        header_mapping=_headers(root.table("headers")),
        default_country_code=_numbers(root.table("numbers")),
        dtmf_payload_types=_dtmf(root.table("dtmf")),
        transfer=_transfer(root.table("transfer")),
        source=source,
    )


_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", list: "a list"}


class _Table:
    """A TOML table being validated; ``key`` is its dotted path."""

    def __init__(self, data: Mapping[str, object], key: str) -> None:
        self.data = data
        self.key = key

    def sub(self, name: str) -> str:
        return f"{self.key}.{name}"

    def check_keys(self, *allowed: str) -> None:
        for name in self.data:
            if name not in allowed:
                raise ConfigError(self.sub(name), f"unknown key; allowed: {', '.join(allowed)}")

    def table(self, name: str) -> _Table:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(self.sub(name), "must be a table ([section] or { … })")
        return _Table(value, self.sub(name))

    def get(self, name: str, kind: type[_T], default: _T) -> _T:
        value = self.data.get(name, default)
        # bool is an int subclass: `port_start = true` must not pass as 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.sub(name), f"must be {_TYPE_NAMES.get(kind, kind.__name__)}")
        return value

    def str_list(self, name: str, default: list[str]) -> list[str]:
        values = self.get(name, list, default)
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise ConfigError(f"{self.sub(name)}[{index}]", "must be a string")
        return [str(value) for value in values]

    def int_in(self, name: str, default: int, low: int, high: int, what: str = "") -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            raise ConfigError(self.sub(name), f"must be {low}–{high}{what}, got {value}")
        return value

    def str_table(self, name: str) -> dict[str, str]:
        table = self.table(name)
        out: dict[str, str] = {}
        for key, value in table.data.items():
            if not isinstance(value, str):
                raise ConfigError(table.sub(key), "must be a string")
            out[key] = value
        return out


def _allow(section: _Table) -> AllowList:
    section.check_keys("cidrs", "allow_any")
    networks: list[Network] = []
    for index, entry in enumerate(section.str_list("cidrs", [])):
        try:
            networks.append(parse_cidr(entry))
        except ValueError as e:
            raise ConfigError(
                f"{section.sub('cidrs')}[{index}]", f'{e} (expected e.g. "54.172.60.0/30")'
            ) from e
    return AllowList(tuple(networks), section.get("allow_any", bool, False))


def _check_realm(key: str, realm: str) -> str:
    if not realm or any(ord(ch) < 32 or ch in '"\\' for ch in realm):
        raise ConfigError(key, "must be non-empty, without quotes, '\\' or control characters")
    return realm


def _check_username(key: str, username: str) -> None:
    if not username or any(ord(ch) < 32 or ch in ':"\\' for ch in username):
        raise ConfigError(key, "username must be non-empty, without ':', quotes or control chars")


def _auth(section: _Table, env: Mapping[str, str]) -> AuthSettings:
    section.check_keys("enabled", "realm", "users")
    enabled = section.get("enabled", bool, False)
    realm = _check_realm(section.sub("realm"), section.get("realm", str, "hitl-sip"))
    users = section.str_table("users")
    for username, password in users.items():
        _check_username(f"{section.sub('users')}.{username}", username)
        if not password:
            raise ConfigError(f"{section.sub('users')}.{username}", "password must not be empty")
    from_env = env.get(AUTH_USERS_ENV, "")
    if from_env.strip():
        users = _users_from_env(from_env)
    if enabled and not users:
        raise ConfigError(
            section.sub("users"),
            f"digest auth is enabled but no users are set (users table or {AUTH_USERS_ENV})",
        )
    return AuthSettings(enabled, realm, users)


def _users_from_env(value: str) -> dict[str, str]:
    key = f"env.{AUTH_USERS_ENV}"
    users: dict[str, str] = {}
    entries = [entry.strip() for entry in value.split(",")]
    for index, entry in enumerate(e for e in entries if e):
        username, sep, password = entry.partition(":")
        if not sep or not password:
            raise ConfigError(key, f"entry {index} must be 'user:password'")
        _check_username(key, username)
        if username in users:
            raise ConfigError(key, f"entry {index} repeats a username")
        users[username] = password
    return users


def _sip_uri(key: str, text: str, *, need_user: bool) -> SipUri:
    try:
        uri = SipUri.parse(text)
    except ValueError as e:
        raise ConfigError(key, f"must be a sip: or sips: URI ({e})") from e
    if uri.scheme not in ("sip", "sips"):
        raise ConfigError(key, "must be a sip: or sips: URI")
    if need_user and uri.user is None:
        raise ConfigError(key, "must include a user part (sip:user@host)")
    return uri


def _register(section: _Table, env: Mapping[str, str]) -> RegisterSettings:
    section.check_keys(
        "enabled", "registrar", "username", "password", "aor", "expires", "retry_interval"
    )
    enabled = section.get("enabled", bool, False)
    registrar = section.get("registrar", str, "").strip()
    username = section.get("username", str, "").strip()
    password = section.get("password", str, "")
    password = env.get(PASSWORD_ENV) or password
    aor = section.get("aor", str, "").strip()
    expires = section.int_in("expires", 300, 60, 86400, " seconds")
    retry = section.int_in("retry_interval", 30, 5, 3600, " seconds")
    registrar_uri = (
        _sip_uri(section.sub("registrar"), registrar, need_user=False) if registrar else None
    )
    if aor:
        _sip_uri(section.sub("aor"), aor, need_user=True)
    if username:
        _check_username(section.sub("username"), username)
    if enabled:
        if registrar_uri is None:
            raise ConfigError(section.sub("registrar"), "required when register is enabled")
        if not username:
            raise ConfigError(section.sub("username"), "required when register is enabled")
        if not password:
            raise ConfigError(
                section.sub("password"),
                f"required when register is enabled (set it or {PASSWORD_ENV})",
            )
        if not aor:
            aor = f"{registrar_uri.scheme}:{username}@{registrar_uri.host}"
    return RegisterSettings(
        enabled=enabled,
        registrar=registrar or None,
        username=username or None,
        password=password or None,
        aor=aor or None,
        expires=expires,
        retry_interval=retry,
    )


def _codecs(section: _Table) -> tuple[Codec, ...]:
    section.check_keys("order")
    names = section.str_list("order", [Codec.PCMU.value, Codec.PCMA.value])
    if not names:
        raise ConfigError(section.sub("order"), "must list at least one codec")
    allowed = ", ".join(codec.value for codec in Codec)
    codecs: list[Codec] = []
    for index, name in enumerate(names):
        key = f"{section.sub('order')}[{index}]"
        try:
            codec = Codec(name.upper())
        except ValueError as e:
            raise ConfigError(key, f"unknown codec {name!r}; allowed: {allowed}") from e
        if codec in codecs:
            raise ConfigError(key, f"codec {codec.value} is listed twice")
        codecs.append(codec)
    return tuple(codecs)


def _nat(section: _Table) -> str | None:
    section.check_keys("public_address")
    key = section.sub("public_address")
    value = section.get("public_address", str, "").strip()
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(value) or len(value) > 253:
            raise ConfigError(key, "must be an IP address or a host name (no port)") from None
        return value.lower()
    if address.is_unspecified:
        raise ConfigError(key, 'must not be the unspecified address; use "" for the bound one')
    return str(address)


def _rtp(section: _Table) -> RtpPortRange:
    section.check_keys("port_start", "port_end", "srtp")
    start = section.int_in("port_start", 10000, 1024, 65535)
    end = section.int_in("port_end", 20000, 1024, 65535)
    minimum = start + RtpPortRange.PORTS_PER_SLOT - 1
    if end < minimum:
        raise ConfigError(
            section.sub("port_end"),
            f"must be ≥ port_start + {RtpPortRange.PORTS_PER_SLOT - 1} ({minimum}): one call "
            f"slot takes {RtpPortRange.PORTS_PER_SLOT} ports",
        )
    return RtpPortRange(start, end)


def _srtp(section: _Table) -> Srtp:
    value = section.get("srtp", str, Srtp.OFF.value)
    try:
        return Srtp(value.strip().lower())
    except ValueError as e:
        allowed = ", ".join(f'"{s.value}"' for s in Srtp)
        raise ConfigError(section.sub("srtp"),
                          f"unknown value {value!r}; allowed: {allowed}") from e


def _headers(section: _Table) -> HeaderMapping:
    section.check_keys("map", "prefixes", "passthrough_x")
    exact = section.str_table("map")
    seen: set[str] = set()
    for header, key in exact.items():
        where = f"{section.sub('map')}.{header}"
        if not _HEADER_TOKEN_RE.fullmatch(header):
            raise ConfigError(where, "header name must be a SIP token (letters, digits, -._…)")
        if header.lower() in seen:
            raise ConfigError(where, "header listed twice (names are case-insensitive)")
        seen.add(header.lower())
        if not _METADATA_KEY_RE.fullmatch(key):
            raise ConfigError(where, "metadata key must be snake_case: [a-z][a-z0-9_]*, ≤ 64")
    prefixes = section.str_list("prefixes", [])
    for index, prefix in enumerate(prefixes):
        if not _HEADER_TOKEN_RE.fullmatch(prefix):
            raise ConfigError(
                f"{section.sub('prefixes')}[{index}]", "must be a non-empty header-name prefix"
            )
    return HeaderMapping(exact, tuple(prefixes), section.get("passthrough_x", bool, False))


def _numbers(section: _Table) -> str | None:
    section.check_keys("default_country_code")
    value = section.get("default_country_code", str, "").strip().removeprefix("+")
    if not value:
        return None
    if not _COUNTRY_CODE_RE.fullmatch(value):
        raise ConfigError(
            section.sub("default_country_code"),
            'must be 1–3 digits not starting with 0 ("1", "44", "49") or ""',
        )
    return value


def _dtmf(section: _Table) -> tuple[int, ...]:
    section.check_keys("payload_types")
    values = section.get("payload_types", list, [101])
    out: list[int] = []
    for index, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool) or not 96 <= value <= 127:
            raise ConfigError(
                f"{section.sub('payload_types')}[{index}]", "must be a dynamic payload type 96–127"
            )
        out.append(value)
    return tuple(out)


def _transfer(section: _Table) -> TransferSettings:
    section.check_keys("refer", "refer_host")
    host = section.get("refer_host", str, "").strip().lower()
    if host:
        problem = 'must be a host name or IP address with an optional port ("example.pstn' \
                  '.twilio.com", "203.0.113.7:5060", "[2001:db8::1]:5060")'
        try:
            uri = SipUri.parse(f"sip:{host}")
        except ValueError as e:
            raise ConfigError(section.sub("refer_host"), problem) from e
        if uri.user is not None or uri.params or uri.headers or uri.serialize() != f"sip:{host}":
            raise ConfigError(section.sub("refer_host"), problem)
        if not (_HOSTNAME_RE.fullmatch(uri.host) or _is_ip(uri.host)) or len(uri.host) > 253:
            raise ConfigError(section.sub("refer_host"), problem)
    return TransferSettings(section.get("refer", bool, False), host or None)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
