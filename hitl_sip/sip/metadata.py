"""Caller metadata from an incoming INVITE: numbers, display name, Call-ID, mapped headers.

Which headers become metadata is the profile's ``HeaderMapping``: exact names mapped to keys,
name prefixes kept under their own name, and an optional pass-through of every ``X-`` header.
Every value is cleaned of control characters and cut to ``max_value_length`` characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from hitl_sip.sip.e164 import normalize_e164
from hitl_sip.sip.message import SipMessage, canonical_name
from hitl_sip.sip.uri import NameAddr, SipUri

MAX_VALUE_LENGTH = 256


def clean_value(value: str, max_length: int = MAX_VALUE_LENGTH) -> str:
    """``value`` without control/format characters (incl. bidi overrides), cut to ``max_length``."""
    kept = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    return kept.strip()[:max_length]


@dataclass(frozen=True)
class HeaderMapping:
    """Which SIP headers become call metadata, and under which key.

    ``exact``: header name (case-insensitive) → metadata key; ``prefixes``: headers whose name
    starts with one (case-insensitive) are kept under their own name; ``passthrough_x``: every
    other ``X-`` header is kept under its own name too. Exact rules win over prefixes; compact
    names in ``exact`` (``"y"``) mean their full name (``"Identity"``).
    """

    exact: Mapping[str, str] = field(default_factory=dict)
    prefixes: tuple[str, ...] = ()
    passthrough_x: bool = False
    max_value_length: int = MAX_VALUE_LENGTH

    def __post_init__(self) -> None:
        lowered = {canonical_name(name).lower(): key for name, key in self.exact.items()}
        if len(lowered) != len(self.exact):
            raise ValueError("header names in the exact map differ only by case")
        object.__setattr__(self, "exact", lowered)
        object.__setattr__(self, "prefixes", tuple(p.lower() for p in self.prefixes))

    def key_for(self, header_name: str) -> str | None:
        """The metadata key for ``header_name``, or None when it is not kept."""
        name = header_name.lower()
        key = self.exact.get(name)
        if key is not None:
            return key
        if any(name.startswith(prefix) for prefix in self.prefixes):
            return header_name
        if self.passthrough_x and name.startswith("x-"):
            return header_name
        return None

    def extract(self, headers: list[tuple[str, str]]) -> dict[str, str]:
        """The mapped headers as {key: cleaned value}; the first occurrence of a key wins."""
        out: dict[str, str] = {}
        for name, value in headers:
            key = self.key_for(name)
            if key is not None and key not in out:
                out[key] = clean_value(value, self.max_value_length)
        return out


@dataclass(frozen=True)
class CallMetadata:
    """What we know about the caller when the INVITE arrives.

    Numbers are E.164 when the user part is a number, else the cleaned raw user part
    (``anonymous``, ``100``); None when the URI has no user or could not be parsed.
    ``diversion`` is the diverting number of the first (most recent) Diversion entry.
    """

    sip_call_id: str
    caller_number: str | None
    caller_display_name: str | None
    called_number: str | None
    headers: dict[str, str] = field(default_factory=dict)
    diversion: str | None = None
    diversion_reason: str | None = None


def extract_call_metadata(
    msg: SipMessage, mapping: HeaderMapping, default_country_code: str | None
) -> CallMetadata:
    """Build ``CallMetadata`` from a request.

    Raises ValueError for a response or a request without Call-ID; unparseable From/To/
    Request-URI/Diversion values only leave the fields they feed at None (best effort).
    """
    if not msg.is_request:
        raise ValueError("call metadata needs a request, got a response")
    call_id = msg.get("Call-ID")
    if not call_id:
        raise ValueError("request has no Call-ID")
    limit = mapping.max_value_length

    def number(user: str | None) -> str | None:
        if user is None:
            return None
        e164 = normalize_e164(user, default_country_code)
        return e164 if e164 is not None else clean_value(user, limit) or None

    caller = _name_addr(msg.get("From"))
    display = clean_value(caller.display_name, limit) if caller and caller.display_name else None
    called_user = _uri_user(msg.request_uri)
    if called_user is None:
        to = _name_addr(msg.get("To"))
        called_user = to.user if to else None

    diversion = None
    reason = None
    entries = msg.get_values("Diversion")
    if entries:
        first = _name_addr(entries[0])
        if first is not None:
            diversion = number(first.user)
            raw_reason = first.params.get("reason")
            reason = clean_value(raw_reason, limit) if raw_reason else None

    return CallMetadata(
        sip_call_id=clean_value(call_id, limit),
        caller_number=number(caller.user if caller else None),
        caller_display_name=display or None,
        called_number=number(called_user),
        headers=mapping.extract(msg.headers),
        diversion=diversion,
        diversion_reason=reason,
    )


def _name_addr(value: str | None) -> NameAddr | None:
    if value is None:
        return None
    try:
        return NameAddr.parse(value)
    except ValueError:
        return None


def _uri_user(uri: str | None) -> str | None:
    if uri is None:
        return None
    try:
        return SipUri.parse(uri).user
    except ValueError:
        return None
