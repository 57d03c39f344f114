"""A tiny raw SIP client for tests: hand-built requests over UDP or TCP to 127.0.0.1.

:class:`SipWire` owns one local socket and builds requests whose Via, From, To, Call-ID,
CSeq and Content-Length match it; a test may then break any part of the text before sending
it. :meth:`SipWire.exchange` sends a payload followed by an OPTIONS *probe* on the same
socket: the server handles one socket's messages in order on one thread, so once the probe
is answered, whatever the server was going to say about the payload has already been said.
No timeout stands in for "the server chose not to answer". :meth:`SipWire.exchange_until_closed`
is the TCP variant for payloads that break the stream's framing: it half-closes the connection
and reads until the server closes its side.

Whatever an INVITE was answered, :meth:`SipWire.settle` ends the transaction properly (ACK for
a final non-2xx, ACK + BYE for a 2xx, CANCEL when only provisionals came) so no call leaks.

:class:`SipRequest` parses a request the server sends us and builds its answer; a longer-lived
user agent (``tests/support/rtpcaller.py``) answers in-dialog BYEs and re-INVITEs with it.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CRLF = "\r\n"

COMPACT_FORMS = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
}

SERVICE_NUMBER = "+14155550123"
CALLER_NUMBER = "+14155550100"


def _token(n: int = 8) -> str:
    return secrets.token_hex(n)


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    return COMPACT_FORMS.get(lowered, lowered)


def _tag_of(name_addr: str) -> str | None:
    for param in name_addr.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "tag":
            return value
    return None


def _parse_message(data: bytes) -> tuple[str, tuple[tuple[str, str], ...], bytes]:
    """Splits a SIP message into its start line, its headers (folded lines joined) and body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no blank line after the headers")
    lines = head.decode("utf-8", errors="replace").split(CRLF)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"header line without a colon: {line!r}")
        headers.append((name.strip(), value.strip()))
    return lines[0], tuple(headers), body


def _first_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    wanted = _canonical(name)
    for key, value in headers:
        if _canonical(key) == wanted:
            return value
    return None


@dataclass(frozen=True)
class SipResponse:
    """A response, parsed just enough to match it to a request and to describe it."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> SipResponse:
        first, headers, body = _parse_message(data)
        version, _, rest = first.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != "SIP/2.0" or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not a SIP response status line: {first!r}")
        return cls(int(code), reason, headers, body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (compact forms understood), or ``None``."""
        return _first_header(self.headers, name)

    @property
    def call_id(self) -> str | None:
        return self.header("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.header("CSeq") or "0 ?").partition(" ")
        return int(number), method.strip()

    @property
    def to_tag(self) -> str | None:
        to = self.header("To")
        return _tag_of(to) if to else None

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


@dataclass(frozen=True)
class SipRequest:
    """A request the server sent us (an in-dialog BYE, a re-INVITE...), parsed enough to
    answer it with :meth:`response`."""

    method: str
    uri: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> SipRequest:
        first, headers, body = _parse_message(data)
        parts = first.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[0].isalpha():
            raise ValueError(f"not a SIP request line: {first!r}")
        return cls(parts[0].upper(), parts[1], headers, body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (compact forms understood), or ``None``."""
        return _first_header(self.headers, name)

    @property
    def call_id(self) -> str | None:
        return self.header("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.header("CSeq") or "0 ?").partition(" ")
        return int(number), method.strip()

    def response(
        self,
        status: int,
        reason: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
    ) -> bytes:
        """The answer to this request: every Via, From, To, Call-ID and CSeq copied (RFC 3261
        §8.2.6.2), then ``headers``, the body and its Content-Length. ``to_tag`` is added to a
        To without a tag (a UAS answering a dialog-creating request)."""
        copied = {"via", "from", "to", "call-id", "cseq"}
        fields = [(n, v) for n, v in self.headers if _canonical(n) in copied]
        if to_tag:
            fields = [
                (n, f"{v};tag={to_tag}" if _canonical(n) == "to" and _tag_of(v) is None else v)
                for n, v in fields
            ]
        fields += list(headers)
        if content_type:
            fields.append(("Content-Type", content_type))
        fields.append(("Content-Length", str(len(body))))
        lines = [f"SIP/2.0 {status} {reason}"] + [f"{n}: {v}" for n, v in fields]
        return (CRLF.join(lines) + CRLF + CRLF).encode() + body


def split_stream(buffer: bytes) -> tuple[list[bytes], bytes, int]:
    """Frames complete messages out of a TCP byte stream by their Content-Length.

    Returns the messages, the unconsumed rest and the number of bare CRLFs skipped between
    messages (keep-alive pongs).
    """
    messages: list[bytes] = []
    pongs = 0
    while True:
        while buffer.startswith(b"\r\n") and not buffer.startswith(b"\r\n\r\n"):
            buffer = buffer[2:]
            pongs += 1
        if buffer.startswith(b"\r\n\r\n"):
            buffer = buffer[4:]
            pongs += 2
            continue
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return messages, buffer, pongs
        length = 0
        for line in buffer[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if _canonical(name.decode(errors="replace")) == "content-length":
                length = int(value.strip() or b"0")
        total = end + 4 + length
        if len(buffer) < total:
            return messages, buffer, pongs
        messages.append(buffer[:total])
        buffer = buffer[total:]


RTPMAPS = {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000"}


def sdp_offer(
    host: str,
    media_port: int,
    *,
    payload_types: Iterable[int] = (0, 8, 101),
    attributes: Iterable[str] = (),
) -> bytes:
    """A plain PCMU/PCMA audio offer, like SIPp's.

    ``payload_types`` are offered in that order (the answerer prefers the first);
    ``attributes`` are extra media-level lines such as ``"a=ptime:20"``.
    """
    offered = list(payload_types)
    lines = [
        "v=0",
        f"o=sipwire 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {media_port} RTP/AVP {' '.join(str(pt) for pt in offered)}",
        *(f"a=rtpmap:{pt} {RTPMAPS[pt]}" for pt in offered if pt in RTPMAPS),
        *attributes,
        "a=sendrecv",
    ]
    return (CRLF.join(lines) + CRLF).encode()


@dataclass(frozen=True)
class Request:
    """One request as built: its bytes plus what is needed to match answers and clean up."""

    method: str
    uri: str
    call_id: str
    from_tag: str
    branch: str
    cseq: int
    data: bytes

    def with_data(self, data: bytes) -> Request:
        """The same identifiers, different bytes (a test's corrupted copy)."""
        return Request(
            self.method, self.uri, self.call_id, self.from_tag, self.branch, self.cseq, data
        )


@dataclass
class Exchange:
    """What the server sent back for one payload, in arrival order."""

    responses: list[SipResponse] = field(default_factory=list)
    cleanup: list[SipResponse] = field(default_factory=list)  # answers to our ACK/BYE/CANCEL
    requests: list[bytes] = field(default_factory=list)  # requests the server sent us
    unparsable: list[bytes] = field(default_factory=list)
    pongs: int = 0  # bare CRLFs (keep-alive answers) on a TCP connection
    closed: bool = False  # the server closed the TCP connection
    probe_answered: bool = False

    @property
    def final(self) -> SipResponse | None:
        return next((r for r in self.responses if r.is_final), None)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def describe(self) -> str:
        parts = [str(r) for r in self.responses] or ["no response"]
        if self.pongs:
            parts.append(f"{self.pongs} CRLF")
        if self.unparsable:
            parts.append(f"{len(self.unparsable)} unparsable")
        if self.closed:
            parts.append("connection closed")
        return ", ".join(parts)


class SipWire:
    """One local UDP socket, or one TCP connection, to the server at ``host:port``."""

    def __init__(
        self,
        port: int,
        transport: str = "udp",
        host: str = "127.0.0.1",
        *,
        caller: str = CALLER_NUMBER,
        service: str = SERVICE_NUMBER,
        local_host: str | None = None,
    ) -> None:
        """``local_host``: the address to send from (default ``host``); any of 127/8 works
        on Linux, so 127.0.0.2 can play a stranger to a trunk allow-list of 127.0.0.1."""
        if transport not in ("udp", "tcp"):
            raise ValueError(f"unknown transport {transport!r}")
        self.transport = transport
        self.caller = caller  # the From user of every request
        self.service = service  # the To user and the Request-URI's user
        self.remote = (host, port)
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        if transport == "udp":
            self.sock.bind((local_host or host, 0))
        else:
            self.sock.settimeout(5.0)
            if local_host:
                self.sock.bind((local_host, 0))
            self.sock.connect(self.remote)
        local_host, local_port = self.sock.getsockname()[:2]
        self.local: tuple[str, int] = (str(local_host), int(local_port))
        self._buffer = b""
        self._closed = False

    def __enter__(self) -> SipWire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # --- building ---------------------------------------------------------------------------

    @property
    def via_transport(self) -> str:
        return self.transport.upper()

    def target_uri(self, user: str | None = None) -> str:
        host, port = self.remote
        return f"sip:{user or self.service}@{host}:{port}"

    def request(
        self,
        method: str,
        *,
        uri: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        omit: Iterable[str] = (),
        content_length: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        cseq_method: str | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
        branch: str | None = None,
        via_transport: str | None = None,
        rport: bool = True,
    ) -> Request:
        """A well-formed request from this socket; ``omit`` drops headers by name and
        ``content_length`` replaces the computed value verbatim."""
        host, port = self.local
        uri = uri or self.target_uri()
        call_id = call_id or f"{_token()}@sipwire"
        from_tag = from_tag or _token(4)
        branch = branch or f"z9hG4bK{_token()}"
        to = f"<{self.target_uri()}>" + (f";tag={to_tag}" if to_tag else "")
        fields: list[tuple[str, str]] = [
            (
                "Via",
                f"SIP/2.0/{via_transport or self.via_transport} {host}:{port}"
                f";branch={branch}" + (";rport" if rport else ""),
            ),
            ("Max-Forwards", "70"),
            ("From", f'"sipwire" <sip:{self.caller}@{host}:{port}>;tag={from_tag}'),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {cseq_method or method}"),
            ("Contact", f"<sip:sipwire@{host}:{port};transport={self.transport}>"),
            *headers,
        ]
        if content_type:
            fields.append(("Content-Type", content_type))
        fields.append(("Content-Length", content_length or str(len(body))))
        dropped = {_canonical(n) for n in omit}
        lines = [f"{method} {uri} SIP/2.0"]
        lines += [f"{n}: {v}" for n, v in fields if _canonical(n) not in dropped]
        data = (CRLF.join(lines) + CRLF + CRLF).encode() + body
        return Request(method, uri, call_id, from_tag, branch, cseq, data)

    def invite(self, body: bytes | None = None, **kwargs: Any) -> Request:
        """An INVITE carrying ``body`` (a valid SDP offer unless given) as application/sdp."""
        if body is None:
            body = sdp_offer(self.local[0], 40000)
        kwargs.setdefault("content_type", "application/sdp")
        return self.request("INVITE", body=body, **kwargs)

    # --- sending and receiving --------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.remote)
        else:
            self.sock.sendall(data)

    def _read(self, deadline: float) -> bytes | None:
        """Raw bytes from the socket, ``b""`` when the server closed, ``None`` on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            if self.transport == "udp":
                data, _addr = self.sock.recvfrom(65535)
                return bytes(data)
            return self.sock.recv(65535)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return b""

    def receive(self, deadline: float, into: Exchange) -> list[SipResponse] | None:
        """Reads once and files what arrived in ``into``; ``None`` on timeout or close."""
        data = self._read(deadline)
        if data is None:
            return None
        if self.transport == "udp":
            if data.strip(b"\r\n") == b"":
                into.pongs += data.count(b"\r\n")
                return []
            messages = [data]
        else:
            if not data:
                self._closed = into.closed = True
                return None
            messages, self._buffer, pongs = split_stream(self._buffer + data)
            into.pongs += pongs
        responses = []
        for message in messages:
            if not message.startswith(b"SIP/2.0 "):
                into.requests.append(message)
                continue
            try:
                response = SipResponse.parse(message)
            except ValueError:
                into.unparsable.append(message)
                continue
            responses.append(response)
        return responses

    def final_answer(self, request: Request, limit: float = 3.0) -> Exchange:
        """Send ``request`` and read until its final answer (matched by Call-ID) or
        ``limit``; a proxy's processes may answer two requests in either order, so no probe
        is used (unlike :meth:`exchange`)."""
        self.send(request.data)
        result = Exchange()
        deadline = time.monotonic() + limit
        while not any(r.is_final and r.call_id == request.call_id for r in result.responses):
            got = self.receive(deadline, result)
            if got is None:
                break
            result.responses.extend(got)
        result.responses = [r for r in result.responses if r.call_id == request.call_id]
        return result

    def exchange(
        self, payload: bytes | Request, *, timeout: float = 3.0, final_timeout: float = 10.0
    ) -> Exchange:
        """Sends ``payload`` then an OPTIONS probe; returns what came back for the payload.

        Everything that is not an answer to the probe counts as an answer to the payload. If
        the payload was an INVITE that got only provisional answers, waits up to
        ``final_timeout`` for its final answer. Ends any INVITE transaction (see :meth:`settle`).
        """
        data = payload.data if isinstance(payload, Request) else payload
        self.send(data)
        probe = self.request("OPTIONS")
        self.send(probe.data)
        result = Exchange()
        deadline = time.monotonic() + timeout
        while not result.probe_answered:
            got = self.receive(deadline, result)
            if got is None:
                break
            for response in got:
                if response.call_id == probe.call_id:
                    result.probe_answered = result.probe_answered or response.is_final
                else:
                    result.responses.append(response)
        if isinstance(payload, Request) and payload.method == "INVITE":
            self._await_final(payload, result, final_timeout)
            self.settle(payload, result)
        return result

    def exchange_until_closed(self, payload: bytes | Request, *, timeout: float = 3.0) -> Exchange:
        """TCP only: sends ``payload``, half-closes, and reads until the server closes its side
        or gives a final answer.

        For payloads that break the stream's framing, where a probe would be read as part of
        them. Nothing can be sent afterwards, so a final answer is not ACKed: the server's
        transaction ends on its own timer (use :meth:`exchange` when a call could be answered).
        """
        if self.transport != "tcp":
            raise ValueError("exchange_until_closed needs a TCP connection")
        self.send(payload.data if isinstance(payload, Request) else payload)
        self.sock.shutdown(socket.SHUT_WR)
        result = Exchange()
        deadline = time.monotonic() + timeout
        while not result.closed and result.final is None:
            got = self.receive(deadline, result)
            if got is None:
                break
            result.responses.extend(got)
        return result

    def _await_final(self, invite: Request, result: Exchange, timeout: float) -> None:
        ours = [r for r in result.responses if r.call_id == invite.call_id]
        if not ours or any(r.is_final for r in ours) or self._closed:
            return
        deadline = time.monotonic() + timeout
        while not any(r.is_final for r in result.responses if r.call_id == invite.call_id):
            got = self.receive(deadline, result)
            if got is None:
                return
            result.responses.extend(got)

    # --- cleaning up ------------------------------------------------------------------------

    def settle(self, invite: Request, result: Exchange, timeout: float = 5.0) -> None:
        """Ends ``invite``'s transaction: ACK a final non-2xx; ACK + BYE a 2xx; CANCEL (and ACK
        the 487) when only provisionals came. Nothing to do when nothing came back."""
        if self._closed:
            return
        ours = [r for r in result.responses if r.call_id == invite.call_id]
        final = next((r for r in ours if r.is_final), None)
        if final is None:
            if ours:
                self._cancel(invite, result, timeout)
            return
        if final.status >= 300:
            self.send(self._ack(invite, final).data)
            return
        ack = self._ack(invite, final)
        self.send(ack.data)
        bye = self.request(
            "BYE",
            uri=self._contact_uri(final) or invite.uri,
            call_id=invite.call_id,
            cseq=invite.cseq + 1,
            from_tag=invite.from_tag,
            to_tag=final.to_tag,
        )
        self.send(bye.data)
        self._wait_for(bye, "BYE", result, timeout)

    def _ack(self, invite: Request, final: SipResponse) -> Request:
        if final.status >= 300:  # same transaction: same branch and Request-URI
            return self.request(
                "ACK",
                uri=invite.uri,
                call_id=invite.call_id,
                cseq=invite.cseq,
                from_tag=invite.from_tag,
                to_tag=final.to_tag,
                branch=invite.branch,
            )
        return self.request(
            "ACK",
            uri=self._contact_uri(final) or invite.uri,
            call_id=invite.call_id,
            cseq=invite.cseq,
            from_tag=invite.from_tag,
            to_tag=final.to_tag,
        )

    def _cancel(self, invite: Request, result: Exchange, timeout: float) -> None:
        cancel = self.request(
            "CANCEL",
            uri=invite.uri,
            call_id=invite.call_id,
            cseq=invite.cseq,
            from_tag=invite.from_tag,
            branch=invite.branch,
        )
        self.send(cancel.data)
        final = self._wait_for(cancel, "INVITE", result, timeout)
        if final is not None and final.status >= 300:
            self.send(self._ack(invite, final).data)
        elif final is not None:  # the 200 crossed the CANCEL: hang up instead
            self.settle(invite, result, timeout)

    def _wait_for(
        self, request: Request, method: str, result: Exchange, timeout: float
    ) -> SipResponse | None:
        """The final response to ``method`` in ``request``'s dialog, filed in ``result``."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.receive(deadline, result)
            if got is None:
                return None
            for response in got:
                if response.cseq[1] != "INVITE":
                    result.cleanup.append(response)
                elif response not in result.responses:  # not a retransmission
                    result.responses.append(response)
            for response in got:
                if (
                    response.call_id == request.call_id
                    and response.is_final
                    and response.cseq[1] == method
                ):
                    return response

    @staticmethod
    def _contact_uri(response: SipResponse) -> str | None:
        return contact_uri(response)


def contact_uri(message: SipResponse | SipRequest) -> str | None:
    """The URI in ``message``'s Contact header (where in-dialog requests go), or ``None``."""
    contact = message.header("Contact")
    if not contact:
        return None
    start, end = contact.find("<"), contact.find(">")
    return contact[start + 1 : end] if 0 <= start < end else contact.split(";")[0].strip()
