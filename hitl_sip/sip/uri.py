"""SIP/tel URIs and name-addr header values (From, To, Contact, Diversion…), RFC 3261 §19/§20.

Error messages never echo user parts or numbers (they may end up in logs).

``NameAddr.parse('"Alice" <sip:+14155550100@host;user=phone>;tag=abc')`` gives the display
name, the URI (scheme, user, host, port, URI params) and the header params (``tag``…).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

SCHEMES = ("sip", "sips", "tel")

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_PARAM_VALUE_RE = re.compile(r"[^;?\s\"<>]*")

Params = dict[str, str | None]


@dataclass(frozen=True)
class SipUri:
    """A ``sip:``/``sips:``/``tel:`` URI. For ``tel:`` the number is ``user`` and host is ``""``.

    ``user`` is percent-decoded; param names are lower-cased, a flag param (``;lr``) maps to None.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: Params = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        if not text:
            raise ValueError("empty URI")
        colon = text.find(":")
        if colon <= 0:
            raise ValueError("URI without scheme (expected sip:, sips: or tel:)")
        scheme = text[:colon].lower()
        if scheme not in SCHEMES:
            raise ValueError(f"unsupported URI scheme {scheme[:20]!r}: expected sip, sips or tel")
        rest = text[colon + 1 :]
        if scheme == "tel":
            return _parse_tel(rest)
        return _parse_sip(scheme, rest)

    def serialize(self) -> str:
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        if self.scheme == "tel":
            return f"tel:{self.user}{params}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        headers = "&".join(f"{k}={v}" for k, v in self.headers.items())
        return f"{self.scheme}:{userinfo}{host}{port}{params}" + (f"?{headers}" if headers else "")


@dataclass(frozen=True)
class NameAddr:
    """A name-addr (``"Name" <uri>;params``) or addr-spec (``uri;params``) header value.

    In the addr-spec form every ``;param`` after the URI is a header param (RFC 3261 §20.10).
    """

    display_name: str | None
    uri: SipUri
    params: Params = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return self.uri.scheme

    @property
    def user(self) -> str | None:
        return self.uri.user

    @property
    def host(self) -> str:
        return self.uri.host

    @property
    def port(self) -> int | None:
        return self.uri.port

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise ValueError("empty name-addr")
        if text == "*":
            raise ValueError("wildcard '*' is not a name-addr")
        display: str | None = None
        if text.startswith('"'):
            display, end = _read_quoted(text, 0)
            rest = text[end:].lstrip()
            if not rest.startswith("<"):
                raise ValueError("expected '<' after the quoted display name")
            uri_text, after = _read_angle(rest)
        elif "<" in text:
            # Unquoted display names should be tokens; accept any text, as carriers send UTF-8.
            lt = text.index("<")
            if '"' in text[:lt]:
                raise ValueError("stray '\"' in display name")
            display = " ".join(text[:lt].split()) or None
            uri_text, after = _read_angle(text[lt:])
        else:
            semi = text.find(";")
            if semi < 0:
                uri_text, after = text, ""
            else:
                uri_text, after = text[:semi], text[semi:]
            if any(ch in uri_text for ch in " \t,?"):
                raise ValueError("an addr-spec with spaces, ',' or '?' must be in '<…>'")
        after = after.strip()
        if after and not after.startswith(";"):
            raise ValueError("unexpected text after the URI: expected ';param'")
        params = _parse_params(after[1:], allow_quoted=True) if after else {}
        return cls(display_name=display or None, uri=SipUri.parse(uri_text), params=params)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string starting at ``text[start] == '"'``; return (value, index after)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                break
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise ValueError(f"unterminated quoted string starting at offset {start}")


def _read_angle(text: str) -> tuple[str, str]:
    """Split ``<uri>rest`` into (uri, rest)."""
    gt = text.find(">")
    if gt < 0:
        raise ValueError("missing '>' after '<'")
    uri = text[1:gt].strip()
    if not uri:
        raise ValueError("empty URI inside '<>'")
    return uri, text[gt + 1 :]


def _parse_params(text: str, *, allow_quoted: bool) -> Params:
    """Parse ``a=1;b;c="x;y"`` (text after the first ';'); duplicates are an error."""
    params: Params = {}
    i = 0
    while True:
        j = i
        while j < len(text) and text[j] not in ";=":
            j += 1
        name = text[i:j].strip().lower()
        if not name:
            raise ValueError("empty parameter name")
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad parameter name {name[:40]!r}")
        value: str | None = None
        if j < len(text) and text[j] == "=":
            j += 1
            while j < len(text) and text[j] in " \t":
                j += 1
            if allow_quoted and j < len(text) and text[j] == '"':
                value, j = _read_quoted(text, j)
                while j < len(text) and text[j] in " \t":
                    j += 1
                if j < len(text) and text[j] != ";":
                    raise ValueError(f"unexpected text after quoted value of {name!r}")
            else:
                k = text.find(";", j)
                k = len(text) if k < 0 else k
                value = text[j:k].strip()
                if not value:
                    raise ValueError(f"parameter {name!r} has '=' but no value")
                if not _PARAM_VALUE_RE.fullmatch(value):
                    raise ValueError(f"bad value for parameter {name!r}")
                j = k
        if name in params:
            raise ValueError(f"duplicate parameter {name!r}")
        params[name] = value
        if j >= len(text):
            return params
        i = j + 1  # skip ';'


def _parse_host(hostport: str) -> tuple[str, int | None]:
    if not hostport:
        raise ValueError("empty host")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 reference: missing ']'")
        host = hostport[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as e:
            raise ValueError(f"bad IPv6 address {host[:60]!r}") from e
        rest = hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected text after IPv6 reference: {rest[:20]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port = hostport.partition(":")
        port_text = port if sep else None
        if not _HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"bad host {host[:60]!r}")
    port_value: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port {port_text[:20]!r}: expected 1–65535")
        port_value = int(port_text)
    return host.lower(), port_value


def _parse_sip(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, sep, pw = userinfo.partition(":")
        if not user_text:
            raise ValueError("empty user part before '@'")
        if any(ch in user_text for ch in ' \t<>"'):
            raise ValueError("bad character in user part")
        user = unquote(user_text)
        password = pw if sep else None
    headers: dict[str, str] = {}
    rest, qmark, header_text = rest.partition("?")
    if qmark:
        for item in header_text.split("&"):
            hname, eq, hvalue = item.partition("=")
            if not hname or not eq:
                raise ValueError("bad URI header: expected name=value")
            headers[unquote(hname)] = unquote(hvalue)
    hostport, semi, param_text = rest.partition(";")
    host, port = _parse_host(hostport)
    params = _parse_params(param_text, allow_quoted=False) if semi else {}
    return SipUri(scheme, user, host, port, password, params, headers)


def _parse_tel(rest: str) -> SipUri:
    number, semi, param_text = rest.partition(";")
    if not number:
        raise ValueError("empty tel: number")
    if not _TEL_NUMBER_RE.fullmatch(number) or "+" in number[1:]:
        raise ValueError("bad tel: number: expected [+]digits with - . ( ) separators")
    params = _parse_params(param_text, allow_quoted=False) if semi else {}
    return SipUri("tel", number, "", None, None, params, {})
