"""RFC 4475 ("SIP Torture Test Messages") for a server on loopback, as raw datagrams.

Each case is written for this suite from the RFC's description of what the message tests
(section and short name, e.g. 3.1.1.1 ``wsinv``, as the RFC names them); the bytes are ours.
Every message is rendered for one run by a :class:`Peer`: the Request-URI and To point at the
server under test, the top Via and Contact at the sending socket (so answers come back and
in-dialog requests reach us), and Call-ID, tags and branches carry a token unique to the run.

Where the RFC uses a method this server refuses up front (REGISTER, MESSAGE) or answers at
the edge without a worker (OPTIONS), a *valid* message is sent as an INVITE instead so that
it crosses the whole edge and has to be parsed by a worker too; the case's ``note`` says so.
Invalid messages keep the RFC's method. Two more addresses come with each rendering:

* ``Peer.trap``: a socket no packet may ever reach. Preloaded Route headers, headers escaped
  in a Request-URI or Contact and the second Via of the stray responses point at it, so a
  relay or a reflection shows up there;
* ``Peer.media_port``: where the SDP offers ask for audio (a sink the test owns).

Cases are plain data (:class:`TortureCase`); what the server should answer to each is for
the test to say (``tests/integration/test_sip_torture.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.sipwire import CALLER_NUMBER, SERVICE_NUMBER

CRLF = "\r\n"


def _hostport(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


@dataclass(frozen=True)
class Peer:
    """Where one rendering of a case goes and comes from."""

    target: tuple[str, int]  # the server under test (Request-URI, To)
    local: tuple[str, int]  # the sending socket (top Via, From host, Contact)
    trap: tuple[str, int]  # nothing may ever be sent here
    media_port: int  # the SDP offer's audio port on the local host
    service: str = SERVICE_NUMBER
    caller: str = CALLER_NUMBER
    token: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def server(self) -> str:
        return _hostport(self.target)

    @property
    def me(self) -> str:
        return _hostport(self.local)

    @property
    def my_host(self) -> str:
        return self.local[0]

    @property
    def trap_at(self) -> str:
        return _hostport(self.trap)

    @property
    def ruri(self) -> str:
        return f"sip:{self.service}@{self.server}"

    @property
    def call_id(self) -> str:
        return f"{self.token}@torture.invalid"

    @property
    def branch(self) -> str:
        return f"z9hG4bK{self.token}"

    @property
    def tag(self) -> str:
        return f"t{self.token}"

    @property
    def via(self) -> str:
        return f"Via: SIP/2.0/UDP {self.me};branch={self.branch};rport"

    @property
    def session(self) -> int:
        return int(self.token[:8], 16)


@dataclass(frozen=True)
class TortureCase:
    section: str  # RFC 4475's section, "3.1.1.1"
    name: str  # RFC 4475's short name of the message, "wsinv"
    title: str  # the section title
    method: str | None  # the request's method; None for a response
    well_formed: bool  # whether RFC 3261's grammar and rules allow the message
    note: str  # what it exercises, what the RFC asks of a receiver, our adaptation
    build: Callable[[Peer], bytes]

    @property
    def is_response(self) -> bool:
        return self.method is None

    def render(self, peer: Peer) -> bytes:
        return self.build(peer)

    def __str__(self) -> str:
        return f"{self.section} {self.name} ({self.title})"


CASES: list[TortureCase] = []


def _case(
    section: str, name: str, title: str, method: str | None, *, well_formed: bool, note: str
) -> Callable[[Callable[[Peer], bytes]], Callable[[Peer], bytes]]:
    def register(build: Callable[[Peer], bytes]) -> Callable[[Peer], bytes]:
        CASES.append(TortureCase(section, name, title, method, well_formed, note, build))
        return build

    return register


def _message(*lines: str, body: str | bytes = b"") -> bytes:
    """Start line and header lines joined by CRLF, the empty line, then ``body``."""
    raw = body.encode() if isinstance(body, str) else body
    return (CRLF.join(lines) + CRLF + CRLF).encode() + raw


def _size(body: str | bytes) -> int:
    return len(body.encode() if isinstance(body, str) else body)


def _sdp(p: Peer) -> str:
    """A plain PCMU offer whose audio goes to the test's sink on the local host."""
    return CRLF.join(
        [
            "v=0",
            f"o=torture {p.session} {p.session} IN IP4 {p.my_host}",
            "s=-",
            f"c=IN IP4 {p.my_host}",
            "t=0 0",
            f"m=audio {p.media_port} RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            "",
        ]
    )


def _invite(p: Peer, *headers: str, ruri: str | None = None, body: str | None = None) -> bytes:
    """An ordinary INVITE carrying ``headers`` after the usual ones (for the invalid cases
    whose fault is elsewhere than in the usual headers)."""
    sdp = _sdp(p) if body is None else body
    return _message(
        f"INVITE {ruri or p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>",
        *headers,
        "Content-Type: application/sdp",
        f"Content-Length: {_size(sdp)}",
        body=sdp,
    )


# --- 3.1.1 valid messages ------------------------------------------------------------------


def _tortuous_invite(p: Peer, *, fold_cseq: bool) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri};unknownparam;x-Odd=%41%62 SIP/2.0",
        "tO :",
        f' <{p.ruri}>   ;   x-note   = "not a tag"',
        f'froM   : "Torture \\"Test\\" \\\\ Caller"     <sip:{p.caller}@{p.my_host}>',
        "  ;",
        f"    tag  =  {p.tag}",
        "max-FORWARDS: 0068",
        f"i   :{p.call_id}",
        f"Content-Length    :   {_size(body)}",
        *(["cSeQ :   000012", "   INVITE"] if fold_cseq else ["cSeQ :   000012   INVITE"]),
        "Via :  SIP   /    2.0",
        "  /UDP",
        f"     {p.me};branch={p.branch}",
        "s :",
        "X-Newfangled-Header:   first part of a value",
        "    that a folded line continues",
        "X-Value-Of-Separators: ;;,,;;,;",
        "c: application/sdp",
        "Route:",
        f"   <sip:{p.trap_at};lr;unknown=value;unknown-no-value>",
        "v:  SIP /  2.0 /  TCP    proxy.torture.invalid   ;",
        "    branch  =   z9hG4bKtcpleg01 ,",
        "  SIP  /  2.0 /  UDP   192.0.2.77  ;  branch=",
        "  z9hG4bKudpleg02",
        f'm:"A \\"quoted\\" contact" <sip:{p.caller}@{p.me}> ; newparam =',
        "        newvalue ;",
        "   secondparam ; q = 0.33",
        body=body,
    )


WSINV_NOTE = (
    "Legal but unusual layout everywhere: odd header-name case, whitespace around colons, "
    "slashes and equals signs, folded lines (in From, Via, Route, Contact and an unknown "
    "header), leading zeros, compact forms, quoted-pairs in display names, an empty Subject, "
    "several Via values in one field, an unknown Request-URI parameter. A receiver must "
    "process it as an ordinary INVITE. Not as the RFC: To carries no tag (with one it is a "
    "re-INVITE of an unknown dialog) and the preloaded Route points at the trap."
)


@_case(
    "3.1.1.1",
    "wsinv",
    "A short tortuous INVITE",
    "INVITE",
    well_formed=True,
    note=WSINV_NOTE + " As in the RFC, a line fold also separates CSeq's number from its "
    "method (LWS, RFC 3261 §7.3.1 and §20.16).",
)
def _wsinv(p: Peer) -> bytes:
    return _tortuous_invite(p, fold_cseq=True)


@_case(
    "3.1.1.1",
    "wsinv-cseq-unfolded",
    "A short tortuous INVITE, CSeq on one line",
    "INVITE",
    well_formed=True,
    note=WSINV_NOTE + " CSeq is on one line (still with extra "
    "spaces): every other torture of wsinv, apart from the fold that case adds there.",
)
def _wsinv_cseq_unfolded(p: Peer) -> bytes:
    return _tortuous_invite(p, fold_cseq=False)


METHOD_TOKEN = "~Tortured-Method.0123456789_*+%!`'"


INTMETH_NOTE = (
    "Every character a token, a user part, a word (Call-ID) or a quoted string may hold, "
    "quoted-pair escapes of NUL, BEL and DEL included, and UTF-8 in a header value; the "
    "method is an unknown extension method, so the right answer is 405 or 501."
)


@_case(
    "3.1.1.2",
    "intmeth",
    "Wide range of valid characters",
    METHOD_TOKEN,
    well_formed=True,
    note=INTMETH_NOTE + " An extension header's name uses every token character.",
)
def _intmeth(p: Peer) -> bytes:
    return _wide_range(p, "X-Header-!.%*+_`'~")


@_case(
    "3.1.1.2",
    "intmeth-header-name-alnum",
    "Wide range of valid characters, plain header name",
    METHOD_TOKEN,
    well_formed=True,
    note=INTMETH_NOTE + " The extension header's "
    "name keeps to letters, digits and '-._+~' (all that the front's Kamailio accepts in a "
    "header name, see intmeth); everything else is as in intmeth.",
)
def _intmeth_header_name_alnum(p: Peer) -> bytes:
    return _wide_range(p, "X-Header-.+_~")


def _wide_range(p: Peer, header_name: str) -> bytes:
    user = "a~b!c*d'e(f)g&h=i+j$k,l;m?n/o%41:p!w*d&=+$,"
    return _message(
        f"{METHOD_TOKEN} sip:{user}@{p.server};lr;x-param=a~b!c*%2A SIP/2.0",
        f"Via: SIP/2.0/UDP {p.me};branch={p.branch}-.!%66*_+`'~;rport",
        f'To: "bell:\\\x07 nul:\\\x00 del:\\\x7f" <sip:{user}@{p.server}>',
        f"From: ~Caller!With.Token*Chars_+'`% <sip:{p.caller}@{p.my_host}>;tag={p.tag}-.!%*_+`'~",
        f"Call-ID: {p.token}.%ZK-!.*_+'`~()<>:\\\"/[]?{{}}@word-!.%*_+`'~()<>:\\\"/[]?{{}}",
        f"CSeq: 4294967295 {METHOD_TOKEN}",
        "Max-Forwards: 255",
        f"{header_name}: caf\u00e9 \u591c\u660e\u3051 \u2713",
        "Content-Length: 0",
    )


@_case(
    "3.1.1.3",
    "esc01",
    "Valid use of the % escaping mechanism",
    "INVITE",
    well_formed=True,
    note=(
        "Escapes in the Request-URI user part (a whole URI escaped into it), in From and To users "
        "and in Contact parameters, some of them escaping characters that need no escaping. "
        "A receiver must unescape only where the grammar says and process it normally."
    ),
)
def _esc01(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE sip:sips%3Auser%40example.com@{p.server} SIP/2.0",
        f"To: sip:%2B1415555%30123@{p.server}",
        f"From: <sip:I%20have%20spaces@{p.my_host}>;tag={p.tag}",
        "Max-Forwards: 87",
        f"i: {p.call_id}",
        p.via,
        f"Contact: <sip:c%61ller@{p.me};%6C%72;n%61me=v%61lue%25%34%31>",
        "CSeq: 98176 INVITE",
        "Content-Type: application/sdp",
        f"l: {_size(body)}",
        body=body,
    )


@_case(
    "3.1.1.4",
    "escnull",
    "Escaped nulls in URIs",
    "INVITE",
    well_formed=True,
    note=(
        "URIs whose user parts hold escaped NULs (and, here, escaped CR LF): legal, and must not "
        "end a string early or inject a line anywhere. The RFC sends a REGISTER, which this server "
        "refuses by method before looking at the URIs; it is sent as an INVITE (one Contact)."
    ),
)
def _escnull(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        f"To: sip:null-%00-null@{p.server}",
        f"From: sip:null-%00-null@{p.my_host};tag={p.tag}",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 INVITE",
        p.via,
        "Max-Forwards: 70",
        f"Contact: <sip:%00%0D%0Anull@{p.me}>",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


ESC02_METHOD = "RE%47IST%45R"


@_case(
    "3.1.1.5",
    "esc02",
    "Use of % when it is not an escape",
    ESC02_METHOD,
    well_formed=True,
    note=(
        "A % inside a token (the method), a display name and a Call-ID, where it escapes nothing. "
        "The method is not REGISTER but an unknown one (405/501); the Contact field holds two "
        "values, the comma inside the quoted display name separating nothing."
    ),
)
def _esc02(p: Peer) -> bytes:
    return _message(
        f"{ESC02_METHOD} sip:{p.server} SIP/2.0",
        f'To: "%Z%45" <sip:resource@{p.server}>',
        f'From: "%Z%45" <sip:resource@{p.my_host}>;tag={p.tag}',
        "Max-Forwards: 70",
        f"i: esc02.{p.token}.%Z%4A%ab",
        p.via,
        f"CSeq: 29344 {ESC02_METHOD}",
        f'Contact: <sip:alias1@{p.me}>, "a comma, %41 quoted" <sip:alias2@{p.me}>',
        "l: 0",
    )


@_case(
    "3.1.1.6",
    "lwsdisp",
    "Message with no LWS between display name and <",
    "INVITE",
    well_formed=True,
    note=(
        "A token display name followed directly by '<' in From: legal. The RFC sends an OPTIONS, "
        "which the edge answers without a worker; sent as an INVITE."
    ),
)
def _lwsdisp(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        f"To: <{p.ruri}>",
        f"From: caller<sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        "Max-Forwards: 70",
        f"Call-ID: {p.call_id}",
        "CSeq: 2 INVITE",
        p.via,
        f"Contact: caller<sip:{p.caller}@{p.me}>",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


def _long(seed: str, length: int) -> str:
    return (seed * (length // len(seed) + 1))[:length]


@_case(
    "3.1.1.7",
    "longreq",
    "Long values in header fields",
    "INVITE",
    well_formed=True,
    note=(
        "Long values: display name, tags, Call-ID, an unknown header, branch parameters, several "
        "Via values, a long Contact user. A receiver must not choke on lengths far beyond the "
        "usual. Kept at about 3 KB so that, with what the front adds, it stays under the worker's "
        "4000-byte datagram limit (a 513 there is a size policy, not what this case tests)."
    ),
)
def _longreq(p: Peer) -> bytes:
    body = _sdp(p)
    name = _long("I have a very long name ", 240).strip()
    tag = f"{p.tag}-{_long('longtag', 200)}"
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        f'To: "{name}" <{p.ruri}>',
        f"From: <sip:{p.caller}@{p.my_host}>;tag={tag}",
        f"Call-ID: {p.token}-{_long('longreq.call-id.', 230)}",
        "CSeq: 1 INVITE",
        "Max-Forwards: 70",
        f"Via: SIP/2.0/UDP {p.me};branch={p.branch}-{_long('longbranch', 150)};rport",
        *(
            f"Via: SIP/2.0/UDP 192.0.2.{n};branch=z9hG4bK{n}{_long('hop', 90)}"
            for n in range(10, 14)
        ),
        f"X-Long-Unknown: {_long('an unknown header with a long value, ', 900).strip()}",
        f"Contact: <sip:{_long('amazinglylongcaller', 180)}@{p.me}>",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


def dblreq_trailing_call_id(p: Peer) -> str:
    """The Call-ID of the INVITE hidden in ``dblreq``'s trailing octets."""
    return f"trailing-{p.call_id}"


@_case(
    "3.1.1.8",
    "dblreq",
    "Extra trailing octets in a UDP datagram",
    "INVITE",
    well_formed=True,
    note=(
        "A complete request whose Content-Length ends it, followed in the same datagram by a "
        "second complete INVITE. Over UDP the octets after Content-Length must be discarded: the "
        "first request is processed, the second never. The RFC's first request is a REGISTER; "
        "here it is an INVITE too, so the front has to forward it without the trailing octets."
    ),
)
def _dblreq(p: Peer) -> bytes:
    first = _invite(p)
    hidden = _message(
        f"INVITE {p.ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {p.me};branch=z9hG4bKtrailing{p.token};rport",
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag=trailing{p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {dblreq_trailing_call_id(p)}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Length: 0",
    )
    return first + hidden


@_case(
    "3.1.1.9",
    "semiuri",
    "Semicolon-separated parameters in URI user part",
    "INVITE",
    well_formed=True,
    note=(
        "A Request-URI whose user part holds ';' and an escaped '@': the user is "
        "'user;par=u@example.net', not a user with URI parameters. Sent as an INVITE (the RFC: "
        "OPTIONS)."
    ),
)
def _semiuri(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE sip:user;par=u%40example.net@{p.server} SIP/2.0",
        f"To: sip:j_user@{p.server}",
        f"From: sip:{p.caller}@{p.my_host};tag={p.tag}",
        f"Call-ID: {p.call_id}",
        "CSeq: 3 INVITE",
        p.via,
        "Max-Forwards: 70",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Type: application/sdp",
        f"l: {_size(body)}",
        body=body,
    )


@_case(
    "3.1.1.10",
    "transports",
    "Varied and unknown transport types",
    "INVITE",
    well_formed=True,
    note=(
        "Via values below the top one name SCTP, TLS, TCP and an unknown transport: only the top "
        "Via matters to the receiver, and an unknown transport token is legal. Sent as an INVITE "
        "(the RFC: OPTIONS) so that a worker sees the Via list too."
    ),
)
def _transports(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        p.via,
        "Via: SIP/2.0/SCTP t1.torture.invalid;branch=z9hG4bKsctp1",
        "Via: SIP/2.0/TLS t2.torture.invalid;branch=z9hG4bKtls2",
        "Via: SIP/2.0/UNKNOWN t3.torture.invalid;branch=z9hG4bKunknown3",
        "Via: SIP/2.0/TCP t4.torture.invalid;branch=z9hG4bKtcp4",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 INVITE",
        "Max-Forwards: 70",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


MPART_BOUNDARY = "torture.7a9cbe"
# binary octets in a body part: every byte value except those that could form a boundary line
MPART_BINARY = bytes(b for b in range(256) if b not in b"-\r\n")


@_case(
    "3.1.1.11",
    "mpart01",
    "Multipart MIME message",
    "INVITE",
    well_formed=True,
    note=(
        "A multipart/mixed body: an application/sdp part and a binary application/octet-stream "
        "part. The receiver must find the session description in it. The RFC sends a MESSAGE "
        "(which this server refuses by method); sent as an INVITE."
    ),
)
def _mpart01(p: Peer) -> bytes:
    sdp = _sdp(p)
    body = (
        (
            f"--{MPART_BOUNDARY}{CRLF}"
            f"Content-Type: application/sdp{CRLF}{CRLF}{sdp}{CRLF}"
            f"--{MPART_BOUNDARY}{CRLF}"
            f"Content-Type: application/octet-stream{CRLF}"
            f"Content-Transfer-Encoding: binary{CRLF}{CRLF}"
        ).encode()
        + MPART_BINARY
        + f"{CRLF}--{MPART_BOUNDARY}--{CRLF}".encode()
    )
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed;boundary="{MPART_BOUNDARY}"',
        f"Content-Length: {len(body)}",
        body=body,
    )


def _stray_response(p: Peer, status_line: str, *headers: str) -> bytes:
    """A response to no request of the server's: its top Via names the server (as if the
    server had sent the request), its second Via the trap."""
    return _message(
        status_line,
        f"Via: SIP/2.0/UDP {p.server};branch=z9hG4bKstray{p.token}",
        f"Via: SIP/2.0/UDP {p.trap_at};branch=z9hG4bKtrap{p.token}",
        f"From: <sip:{p.caller}@{p.server}>;tag={p.tag}",
        f"To: <sip:{p.service}@{p.my_host}>;tag=r{p.tag}",
        f"Call-ID: {p.call_id}",
        *headers,
        "Content-Length: 0",
    )


RESPONSE_NOTE = (
    " It answers nothing the server sent: it matches no transaction and must be dropped. Its "
    "top Via names the server and its second the trap: it must not be forwarded either."
)


@_case(
    "3.1.1.12",
    "unreason",
    "Unusual reason phrase",
    None,
    well_formed=True,
    note=(
        "A 200 whose reason phrase holds UTF-8, escapes and reserved characters: legal."
        + RESPONSE_NOTE
    ),
)
def _unreason(p: Peer) -> bytes:
    return _stray_response(
        p,
        "SIP/2.0 200 Tr%C3%A8s bien ; \u6210\u529f = ok! (@vous, /mais? +$&) \u2713",
        "CSeq: 7 INVITE",
        f"Contact: <sip:{p.service}@{p.my_host}>",
    )


@_case(
    "3.1.1.13",
    "noreason",
    "Empty reason phrase",
    None,
    well_formed=True,
    note=(
        "A status line with no reason phrase (the space after the code still there): legal."
        + RESPONSE_NOTE
    ),
)
def _noreason(p: Peer) -> bytes:
    return _stray_response(p, "SIP/2.0 200 ", "CSeq: 7 INVITE")


# --- 3.1.2 invalid messages ----------------------------------------------------------------


@_case(
    "3.1.2.1",
    "badinv01",
    "Extraneous header field separators",
    "INVITE",
    well_formed=False,
    note=(
        "Empty parameters and stray commas after the To, Via and Contact values: not allowed by "
        "the grammar. 400, or dropped."
    ),
)
def _badinv01(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        f"To: sip:{p.service}@{p.server};;,;,,",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        "Max-Forwards: 70",
        f"Call-ID: {p.call_id}",
        f"Via: SIP/2.0/UDP {p.me};branch={p.branch};;,;,,",
        f'Contact: "Caller" <sip:{p.caller}@{p.me}>;;;;',
        "CSeq: 8 INVITE",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


@_case(
    "3.1.2.2",
    "clerr",
    "Content length larger than message",
    "INVITE",
    well_formed=False,
    note="Over UDP, a Content-Length beyond the datagram's end: 400 (RFC 3261 §18.3), or dropped.",
)
def _clerr(p: Peer) -> bytes:
    sdp = _sdp(p)
    return _invite(p, body=sdp).replace(
        f"Content-Length: {_size(sdp)}".encode(), b"Content-Length: 9999"
    )


@_case(
    "3.1.2.3",
    "ncl",
    "Negative Content-Length",
    "INVITE",
    well_formed=False,
    note="Content-Length -999: 400, or dropped; never read as a huge or a wrapped length.",
)
def _ncl(p: Peer) -> bytes:
    sdp = _sdp(p)
    return _invite(p, body=sdp).replace(
        f"Content-Length: {_size(sdp)}".encode(), b"Content-Length: -999"
    )


@_case(
    "3.1.2.4",
    "scalar02",
    "Request scalar fields with overlarge values",
    "INVITE",
    well_formed=False,
    note=(
        "CSeq above 2**32-1, Max-Forwards above 255, Expires and a Contact expires far above "
        "2**32-1: 400, or dropped; no wrap-around to a small number. The RFC's message is a "
        "REGISTER; sent as an INVITE, the request this server acts on."
    ),
)
def _scalar02(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 300",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 36893488147419103232 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>;expires=280297596632815",
        "Expires: 10000000000000",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


@_case(
    "3.1.2.5",
    "scalarlg",
    "Response scalar fields with overlarge values",
    None,
    well_formed=False,
    note=(
        "A 503 with a CSeq above 2**32-1, an absurd Retry-After and a four-digit warn-code."
        + RESPONSE_NOTE
    ),
)
def _scalarlg(p: Peer) -> bytes:
    return _stray_response(
        p,
        "SIP/2.0 503 Service Unavailable",
        "CSeq: 36893488147419103232 INVITE",
        "Retry-After: 949302838503028349304023988",
        'Warning: 1812 overture "In Progress"',
    )


@_case(
    "3.1.2.6",
    "quotbal",
    "Unterminated quoted string in display name",
    "INVITE",
    well_formed=False,
    note="A To display name whose quote never closes: 400, or dropped.",
)
def _quotbal(p: Peer) -> bytes:
    return _invite(p).replace(f"To: <{p.ruri}>".encode(), f'To: "Mr. J. User <{p.ruri}>'.encode())


@_case(
    "3.1.2.7",
    "ltgtruri",
    "<> enclosing Request-URI",
    "INVITE",
    well_formed=False,
    note="A Request-URI in angle brackets: 400, or dropped.",
)
def _ltgtruri(p: Peer) -> bytes:
    return _invite(p, ruri=f"<{p.ruri}>")


@_case(
    "3.1.2.8",
    "lwsruri",
    "Malformed SIP Request-URI (embedded LWS)",
    "INVITE",
    well_formed=False,
    note=(
        "Whitespace inside the Request-URI, so the request line has four elements: 400, or dropped."
    ),
)
def _lwsruri(p: Peer) -> bytes:
    return _invite(p, ruri=f"{p.ruri}; lr")


@_case(
    "3.1.2.9",
    "lwsstart",
    "Multiple SP separating Request-Line elements",
    "INVITE",
    well_formed=False,
    note=(
        "Two spaces between the request line's elements. 400, or dropped; the RFC lets a lenient "
        "receiver process it as if single spaces were there."
    ),
)
def _lwsstart(p: Peer) -> bytes:
    return _invite(p).replace(
        f"INVITE {p.ruri} SIP/2.0".encode(), f"INVITE  {p.ruri}  SIP/2.0".encode(), 1
    )


@_case(
    "3.1.2.10",
    "trws",
    "SP characters at end of Request-Line",
    "OPTIONS",
    well_formed=False,
    note=(
        "Spaces after SIP/2.0 on the request line. 400, or dropped; the RFC lets a lenient "
        "receiver ignore them."
    ),
)
def _trws(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/2.0  ",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


@_case(
    "3.1.2.11",
    "escruri",
    "Escaped headers in SIP Request-URI",
    "INVITE",
    well_formed=False,
    note=(
        "A Request-URI carrying an escaped Route header (pointing at the trap): headers are not "
        "allowed in a Request-URI. 400, or dropped; a lenient receiver may ignore the escaped "
        "header, but must never act on it."
    ),
)
def _escruri(p: Peer) -> bytes:
    return _invite(p, ruri=f"{p.ruri}?Route=%3Csip:{p.trap_at};lr%3E")


@_case(
    "3.1.2.12",
    "baddate",
    "Invalid time zone in Date header field",
    "INVITE",
    well_formed=False,
    note=(
        "A Date in EST (only GMT is allowed). 400 is allowed; so is ignoring the Date, which this "
        "server has no use for."
    ),
)
def _baddate(p: Peer) -> bytes:
    return _invite(p, "Date: Fri, 01 Jan 2010 16:00:00 EST")


@_case(
    "3.1.2.13",
    "regbadct",
    "Failure to enclose name-addr URI in <>",
    "INVITE",
    well_formed=False,
    note=(
        "A Contact URI with an escaped Route header (pointing at the trap) not enclosed in <>: "
        "the '?' part cannot be parsed as intended. 400, or dropped; never a request to the trap. "
        "The RFC's message is a REGISTER; sent as an INVITE, whose Contact a worker would use."
    ),
)
def _regbadct(p: Peer) -> bytes:
    return _invite(p).replace(
        f"Contact: <sip:{p.caller}@{p.me}>".encode(),
        f"Contact: sip:{p.caller}@{p.me}?Route=%3Csip:{p.trap_at};lr%3E".encode(),
    )


@_case(
    "3.1.2.14",
    "badaspec",
    "Spaces within addr-spec",
    "OPTIONS",
    well_formed=False,
    note=(
        "Spaces inside the angle brackets around the To URI. 400, or dropped; the RFC lets a "
        "lenient receiver ignore the spaces."
    ),
)
def _badaspec(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f'From: "Caller, The" <sip:{p.caller}@{p.my_host}>;tag={p.tag}',
        f'To: "Service, The" < {p.ruri} >',
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


@_case(
    "3.1.2.15",
    "baddn",
    "Non-token characters in display name",
    "OPTIONS",
    well_formed=False,
    note=(
        "Unquoted display names holding a comma and a period. 400, or dropped; the RFC lets a "
        "lenient receiver treat them as if quoted."
    ),
)
def _baddn(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: Caller, The Sr. <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: Service, The Jr. <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


@_case(
    "3.1.2.16",
    "badvers",
    "Unknown protocol version",
    "OPTIONS",
    well_formed=False,
    note=("SIP/7.0 on the request line: 505 Version Not Supported, or dropped."),
)
def _badvers(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/7.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


@_case(
    "3.1.2.17",
    "mismatch01",
    "Start line and CSeq method mismatch",
    "OPTIONS",
    well_formed=False,
    note="An OPTIONS whose CSeq says INVITE: 400, or dropped.",
)
def _mismatch01(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 8 INVITE",
        "Content-Length: 0",
    )


@_case(
    "3.1.2.18",
    "mismatch02",
    "Unknown method with CSeq method mismatch",
    "NEWMETHOD",
    well_formed=False,
    note=(
        "An unknown method whose CSeq says INVITE: 400 (the mismatch), or the unknown-method "
        "answers 405/501, or dropped."
    ),
)
def _mismatch02(p: Peer) -> bytes:
    return _message(
        f"NEWMETHOD {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 8 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(_sdp(p))}",
        body=_sdp(p),
    )


@_case(
    "3.1.2.19",
    "bigcode",
    "Overlarge response code",
    None,
    well_formed=False,
    note=(
        "A status code of ten digits, beyond any integer type a parser might use." + RESPONSE_NOTE
    ),
)
def _bigcode(p: Peer) -> bytes:
    return _stray_response(p, "SIP/2.0 4294967497 Status Code Of Impossible Size", "CSeq: 7 INVITE")


# --- 3.2 transaction layer, 3.3 application layer, 3.4 backward compatibility ---------------


@_case(
    "3.2.1",
    "badbranch",
    "Missing transaction identifier",
    "OPTIONS",
    well_formed=True,
    note=(
        "A branch that is just the RFC 3261 magic cookie, with no identifier after it. 400 is "
        "allowed (statelessly); so is falling back to RFC 2543 transaction matching."
    ),
)
def _badbranch(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {p.me};branch=z9hG4bK",
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


@_case(
    "3.3.1",
    "insuf",
    "Missing required header fields",
    "INVITE",
    well_formed=False,
    note=("An INVITE without Call-ID, From and To: 400, or dropped (nothing to match it to)."),
)
def _insuf(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        "CSeq: 193942 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


@_case(
    "3.3.2",
    "unkscm",
    "Request-URI with unknown scheme",
    "OPTIONS",
    well_formed=True,
    note="A Request-URI of a scheme nobody knows: 416 Unsupported URI Scheme (or 400, or dropped).",
)
def _unkscm(p: Peer) -> bytes:
    return _message(
        "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        "To: <nobodyKnowsThisScheme:totallyopaquecontent>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


@_case(
    "3.3.3",
    "novelsc",
    "Request-URI with known but atypical scheme",
    "OPTIONS",
    well_formed=True,
    note=(
        "A Request-URI of a registered scheme that no SIP element handles (soap.beep): 416 (or "
        "400, or dropped)."
    ),
)
def _novelsc(p: Peer) -> bytes:
    return _message(
        f"OPTIONS soap.beep://{p.server}/torture SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <soap.beep://{p.server}/torture>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


@_case(
    "3.3.4",
    "unksm2",
    "Unknown URI schemes in header fields",
    "REGISTER",
    well_formed=True,
    note=(
        "To, From and Contact URIs of non-SIP schemes (legal in general). A registrar would refuse "
        "them; this server refuses REGISTER altogether: a 4xx."
    ),
)
def _unksm2(p: Peer) -> bytes:
    return _message(
        f"REGISTER sip:{p.server} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        "To: isbn:2983792873",
        f"From: <http://{p.my_host}/torture>;tag={p.tag}",
        f"Call-ID: {p.call_id}",
        "CSeq: 3923239 REGISTER",
        "Contact: <name:torture>",
        "Content-Length: 0",
    )


@_case(
    "3.3.5",
    "bext01",
    "Proxy-Require and Require",
    "OPTIONS",
    well_formed=True,
    note=(
        "Require and Proxy-Require name extensions nobody supports: the request must be refused "
        "with 420 Bad Extension listing them in Unsupported (RFC 3261 §8.2.2.3), not served."
    ),
)
def _bext01(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 8 OPTIONS",
        "Require: nothingSupportsThis, nothingSupportsThisEither",
        "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis",
        "Content-Length: 0",
    )


@_case(
    "3.3.6",
    "invut",
    "Unknown Content-Type",
    "INVITE",
    well_formed=True,
    note=("An INVITE whose body is of a type nobody knows: 415 Unsupported Media Type."),
)
def _invut(p: Peer) -> bytes:
    body = '<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'
    return _invite(p, body=body).replace(
        b"Content-Type: application/sdp", b"Content-Type: application/unknownformat"
    )


@_case(
    "3.3.7",
    "regaut01",
    "Unknown authorization scheme",
    "REGISTER",
    well_formed=True,
    note="A REGISTER with credentials of an unknown scheme: a 4xx (REGISTER is refused).",
)
def _regaut01(p: Peer) -> bytes:
    return _message(
        f"REGISTER sip:{p.server} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: <sip:{p.caller}@{p.server}>;tag={p.tag}",
        f"To: <sip:{p.caller}@{p.server}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 9338 REGISTER",
        "Authorization: NoOneKnowsThisScheme opaque-data=here",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Length: 0",
    )


@_case(
    "3.3.8",
    "multi01",
    "Multiple values in single value required fields",
    "INVITE",
    well_formed=False,
    note=("Two Call-IDs, Tos, Froms, Max-Forwards and CSeqs: 400, or dropped."),
)
def _multi01(p: Peer) -> bytes:
    body = _sdp(p)
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 INVITE",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"Call-ID: second-{p.call_id}",
        f"To: <{p.ruri}>",
        f"To: <sip:someone-else@{p.server}>",
        f"From: <sip:another-caller@{p.my_host}>;tag=second{p.tag}",
        "Max-Forwards: 5",
        "CSeq: 52 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Type: application/sdp",
        f"Content-Length: {_size(body)}",
        body=body,
    )


@_case(
    "3.3.9",
    "mcl01",
    "Multiple Content-Length values",
    "INVITE",
    well_formed=False,
    note=(
        "Two conflicting Content-Length fields: 400, or dropped. The RFC's message is an OPTIONS; "
        "sent as an INVITE, whose body the front forwards."
    ),
)
def _mcl01(p: Peer) -> bytes:
    sdp = _sdp(p)
    return _invite(p, body=sdp).replace(
        f"Content-Length: {_size(sdp)}".encode(),
        f"Content-Length: 5\r\nContent-Length: {_size(sdp)}".encode(),
    )


@_case(
    "3.3.10",
    "bcast",
    "200 OK response with broadcast Via header field value",
    None,
    well_formed=True,
    note=(
        "A stray 200 whose second Via sent-by is 255.255.255.255: forwarding it would broadcast. "
        "It matches no transaction: dropped, never forwarded (the kernel refuses a broadcast "
        "without SO_BROADCAST anyway, so this case cannot leak onto a network)."
    ),
)
def _bcast(p: Peer) -> bytes:
    return _message(
        "SIP/2.0 200 OK",
        f"Via: SIP/2.0/UDP {p.server};branch=z9hG4bKbcast{p.token}",
        "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKbroadcast",
        f"From: <sip:{p.caller}@{p.server}>;tag={p.tag}",
        f"To: <sip:{p.service}@{p.my_host}>;tag=r{p.tag}",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{p.service}@{p.my_host}>",
        "Content-Length: 0",
    )


@_case(
    "3.3.11",
    "zeromf",
    "Max-Forwards of zero",
    "OPTIONS",
    well_formed=True,
    note=(
        "Max-Forwards 0 on an OPTIONS: a proxy answers 483 Too Many Hops, the element it is "
        "addressed to may answer it (200)."
    ),
)
def _zeromf(p: Peer) -> bytes:
    return _message(
        f"OPTIONS {p.ruri} SIP/2.0",
        p.via,
        "Max-Forwards: 0",
        f"From: <sip:{p.caller}@{p.my_host}>;tag={p.tag}",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


def _register(p: Peer, cseq: int, contact: str, *extra: str) -> bytes:
    """A REGISTER for the caller's address of record at the server, ``contact`` verbatim."""
    return _message(
        f"REGISTER sip:{p.server} SIP/2.0",
        p.via,
        "Max-Forwards: 70",
        f"From: sip:{p.caller}@{p.server};tag={p.tag}",
        f"To: sip:{p.caller}@{p.server}",
        f"Call-ID: {p.call_id}",
        f"CSeq: {cseq} REGISTER",
        contact,
        *extra,
    )


REGISTER_NOTE = (
    "A registrar must accept it and keep the Contact as the RFC says; this server has no "
    "registrar and refuses REGISTER from the trunk with 405 (Allow without REGISTER), so what "
    "is checked is that the unusual Contact does not turn the refusal into anything else."
)


@_case(
    "3.3.12",
    "cparam01",
    "REGISTER with a Contact Header Parameter",
    "REGISTER",
    well_formed=True,
    note=(
        "The Contact is a bare URI (no <>) followed by ';unknownparam': without angle brackets "
        "that parameter belongs to the Contact header (a contact-param), not to the URI. "
        + REGISTER_NOTE
    ),
)
def _cparam01(p: Peer) -> bytes:
    return _register(
        p, 2, f"Contact: sip:{p.caller}@{p.me};unknownparam", "Expires: 3600", "Content-Length: 0"
    )


@_case(
    "3.3.13",
    "cparam02",
    "REGISTER with a url-parameter",
    "REGISTER",
    well_formed=True,
    note=(
        "The same unknown parameter inside <>: this time a url-parameter of the Contact's URI, "
        "which a registrar must keep with the binding. " + REGISTER_NOTE
    ),
)
def _cparam02(p: Peer) -> bytes:
    return _register(
        p, 3, f"Contact: <sip:{p.caller}@{p.me};unknownparam>", "Expires: 3600",
        "Content-Length: 0",
    )


@_case(
    "3.3.14",
    "regescrt",
    "REGISTER with a URL Escaped Header",
    "REGISTER",
    well_formed=True,
    note=(
        "The Contact's URI carries an escaped header (?Route=%3C...%3E, here pointing at the "
        "trap): legal, to be stored with the binding and used only by whoever later sends a "
        "request to that URI, never acted on by the receiver of the REGISTER. Compact forms "
        "m: (Contact) and l: (Content-Length) as in the RFC's message. " + REGISTER_NOTE
    ),
)
def _regescrt(p: Peer) -> bytes:
    return _register(
        p, 14398234, f"m: <sip:{p.caller}@{p.me}?Route=%3Csip:{p.trap_at}%3E>", "l: 0"
    )


@_case(
    "3.3.15",
    "sdp01",
    "Unacceptable Accept offering",
    "INVITE",
    well_formed=True,
    note=(
        "An SDP offer whose Accept allows only a type nobody knows, so no answer could carry an "
        "SDP: 406 Not Acceptable (RFC 3261 §21.4.7)."
    ),
)
def _sdp01(p: Peer) -> bytes:
    return _invite(p, "Accept: text/nobodyKnowsThis")


@_case(
    "3.4.1",
    "inv2543",
    "INVITE with RFC 2543 syntax",
    "INVITE",
    well_formed=True,
    note=(
        "An RFC 2543 INVITE: no branch, no From tag, no Max-Forwards, no Content-Length (the body "
        "is the rest of the datagram). RFC 3261 elements must still accept it."
    ),
)
def _inv2543(p: Peer) -> bytes:
    return _message(
        f"INVITE {p.ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {p.me}",
        f"From: <sip:{p.caller}@{p.my_host}>",
        f"To: <{p.ruri}>",
        f"Call-ID: {p.call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{p.caller}@{p.me}>",
        "Content-Type: application/sdp",
        body=_sdp(p),
    )
