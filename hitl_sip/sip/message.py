"""A SIP request or response as text: start line, ordered headers, body (RFC 3261 §7).

Headers stay an ordered list of ``(name, value)`` pairs so repeated headers (Via, Record-Route,
Diversion…) survive; compact names (``v``, ``f``, ``i``…) are expanded to their full names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADERS = 200

# RFC 3261 §7.3.3 and the extensions that define a compact form since.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}

SIP_VERSION = "SIP/2.0"

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_LINE_RE = re.compile(r"\r?\n")
_BLANK_LINE_RE = re.compile(r"\r?\n\r?\n")


def canonical_name(name: str) -> str:
    """Expand a compact header name (``"v"`` → ``"Via"``); other names are returned unchanged."""
    return COMPACT_FORMS.get(name.lower(), name) if len(name) == 1 else name


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes or ``<…>``."""
    items: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    while i < len(value):
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return [item for item in items if item]


@dataclass
class SipMessage:
    """A parsed SIP message; requests have ``method``/``request_uri``, responses ``status_code``."""

    method: str | None = None
    request_uri: str | None = None
    status_code: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive, compact names accepted)."""
        wanted = canonical_name(name).lower()
        for header, value in self.headers:
            if header.lower() == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, one per header line, in message order."""
        wanted = canonical_name(name).lower()
        return [value for header, value in self.headers if header.lower() == wanted]

    def get_values(self, name: str) -> list[str]:
        """Every comma-separated element of header ``name`` across all its lines, in order."""
        return [item for value in self.get_all(name) for item in split_list(value)]

    @classmethod
    def parse(cls, data: str | bytes) -> SipMessage:
        """Parse a whole message; raise ``ValueError`` naming the first problem found."""
        if isinstance(data, bytes):
            if len(data) > MAX_MESSAGE_BYTES:
                raise ValueError(f"message is {len(data)} bytes, limit is {MAX_MESSAGE_BYTES}")
            text = data.decode("utf-8", "surrogateescape")
        else:
            text = data
            if len(text) > MAX_MESSAGE_BYTES or len(_encode(text)) > MAX_MESSAGE_BYTES:
                raise ValueError(f"message is over the {MAX_MESSAGE_BYTES} byte limit")

        # RFC 3261 §7.5: CRLFs before the start line are ignored (keep-alives).
        text = text.lstrip("\r\n")
        if not text:
            raise ValueError("empty message: missing start line")
        separator = _BLANK_LINE_RE.search(text)
        if separator is None:
            head, body = text.rstrip("\r\n"), ""
        else:
            head, body = text[: separator.start()], text[separator.end() :]
        lines = _LINE_RE.split(head)
        start_line, header_lines = lines[0], lines[1:]
        if not start_line.strip():
            raise ValueError("missing start line")

        message = cls()
        if start_line.startswith("SIP/"):
            message.status_code, message.reason = _parse_status_line(start_line)
        else:
            message.method, message.request_uri = _parse_request_line(start_line)
        message.headers = _parse_headers(header_lines)
        message.body = _apply_content_length(message, body)
        return message

    def serialize(self) -> str:
        """The message as wire text with CRLF line ends (Content-Length left as stored)."""
        if self.method is not None:
            if not self.request_uri:
                raise ValueError("request has no Request-URI")
            start = f"{self.method} {self.request_uri} {SIP_VERSION}"
        elif self.status_code is not None:
            start = f"{SIP_VERSION} {self.status_code} {self.reason or ''}".rstrip()
        else:
            raise ValueError("message has neither a method nor a status code")
        lines = [start, *(f"{name}: {value}" for name, value in self.headers)]
        return "\r\n".join(lines) + "\r\n\r\n" + self.body


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise ValueError(f"message text is not encodable as UTF-8 at offset {e.start}") from e


def _parse_status_line(line: str) -> tuple[int, str]:
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise ValueError(f"malformed status line: {line[:80]!r}")
    version, code = parts[0], parts[1]
    if version.upper() != SIP_VERSION:
        raise ValueError(f"unsupported SIP version {version[:20]!r} in status line")
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        raise ValueError(f"bad status code {code[:20]!r}: expected 3 digits 100–699")
    reason = parts[2].strip() if len(parts) == 3 else ""
    return int(code), reason


def _parse_request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise ValueError(
            f"malformed request line: expected 'METHOD URI SIP/2.0', got {len(parts)} fields"
        )
    method, uri, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise ValueError(f"bad method {method[:20]!r}: not a token")
    if not uri:
        raise ValueError("empty Request-URI")
    if version.upper() != SIP_VERSION:
        raise ValueError(f"unsupported SIP version {version[:20]!r} in request line")
    return method, uri


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        if line[:1] in (" ", "\t"):
            if not headers:
                raise ValueError(f"line {number}: continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        colon = line.find(":")
        if colon < 0:
            raise ValueError(f"line {number}: header without colon")
        name = line[:colon].rstrip(" \t")
        if not name:
            raise ValueError(f"line {number}: empty header name")
        if not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"line {number}: bad header name {name[:40]!r}")
        if len(headers) >= MAX_HEADERS:
            raise ValueError(f"more than {MAX_HEADERS} headers")
        headers.append((canonical_name(name), line[colon + 1 :].strip()))
    return headers


def _apply_content_length(message: SipMessage, body: str) -> str:
    """Check Content-Length against the body; a shorter length truncates (RFC 3261 §18.3)."""
    values = message.get_all("Content-Length")
    if not values:
        return body
    if len(set(values)) > 1:
        raise ValueError("conflicting Content-Length headers")
    value = values[0]
    if not value.isdigit() or not value.isascii():
        raise ValueError(f"bad Content-Length {value[:20]!r}: expected a decimal number")
    length = int(value)
    raw = _encode(body)
    if length > len(raw):
        raise ValueError(f"Content-Length {length} exceeds the {len(raw)} byte body")
    return raw[:length].decode("utf-8", "surrogateescape")
