"""The SIP edge under RFC 4475's torture messages and a SIPVicious-style scanner.

One server per worker count serves the whole module, run once with one worker and once
with two (the front is the same edge either way): ``hitl-sip serve`` with the Kamailio front,
behind a trunk profile whose allow-list is 127.0.0.1/32 alone, the front's rate
limits left at their defaults (the trunk's own traffic must never trip them, issue 14; this
module sends a few dozen requests over half a minute, and the floods are ``test_front.py``'s).

**Torture** (``tests/support/torture.py``): every case is sent over UDP from 127.0.0.1 (the
trunk), each from its own socket, then the socket is read until a final answer or until a
deadline: :data:`DROP_WINDOW` of silence counts as "dropped" where dropping is acceptable, and
an INVITE that got a provisional answer is given :data:`ANSWER_WINDOW` for its final one. A
call that was answered is ACKed and hung up through the front's Record-Route; a final
non-2xx to an INVITE is ACKed. What is acceptable, per case (RFC 4475 and RFC 3261):

=============================  ==========================================================
cases                          acceptable answer
=============================  ==========================================================
valid INVITEs (wsinv and its   200: the trunk's call is answered like any other; never a
variant, esc01, escnull,       400 (the message is legal), never a 5xx (the edge choked)
lwsdisp, longreq, dblreq,
semiuri, transports, mpart01,
inv2543)
intmeth and its variant, esc02 405 or 501: unknown (extension) methods
stray responses (unreason,     nothing: they match no transaction; and nothing reaches the
noreason, scalarlg, bigcode,   address in their second Via (no reflection)
bcast)
invalid messages               a 4xx, or dropped
lwsstart, trws, escruri,       a 4xx, dropped, or answered as if well formed (the RFC lets a
baddate, badaspec, baddn       receiver be lenient there); escruri's escaped Route is never
                               acted on
badvers                        505 (or 400), or dropped
mismatch02                     400, the unknown-method 405/501, or dropped
badbranch                      200 or 400 (RFC 2543 fallback or refusal)
unkscm, novelsc                416 (or 400), or dropped
unksm2, regaut01               a 4xx: REGISTER is not served
cparam01, cparam02, regescrt   405 (REGISTER from the trunk, like the scanner's): whatever
                               the Contact's parameters or escaped header, never acted on
bext01                         420 Bad Extension
invut                          415 Unsupported Media Type
sdp01                          406 Not Acceptable
zeromf                         483 (the front as a proxy) or 200 (as the element addressed)
=============================  ==========================================================

Whatever the case: no answer outside that set, no request from the server, nothing at the
case's trap socket (preloaded Routes, escaped headers and stray responses point there), even
later in the run. After the whole set the server process and its workers are the same ones,
``/healthz`` is 200 with every worker ready, no call is left, no Python traceback was logged,
and a normal call is still answered.

Where the current edge answers otherwise, the case is an ``xfail(strict=True)`` whose reason
says what is wrong (:data:`KNOWN_WRONG`): fixing the edge makes it fail until the entry goes.
Two of them are limits of Kamailio's parser that hide the rest of their message, so a variant
without that one feature is sent too (``wsinv-cseq-unfolded``, ``intmeth-header-name-alnum``).

**Scanner**: OPTIONS, INVITE and REGISTER to existing-looking and non-existing users and
numbers, from the allowed address and from a stranger (127.0.0.2: Linux's loopback answers
the whole 127/8). For one source and method the answers must be identical whatever the user
(status, reason, every header but the per-request ones), so a scanner learns nothing about
which users exist. The statuses are the intended edge (issue 14): from the trunk OPTIONS 200,
INVITE answered, REGISTER 405; from a stranger 403 for every initial request.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.net import free_port
from tests.support.server import Server, running_server
from tests.support.sipwire import (
    COMPACT_FORMS,
    SERVICE_NUMBER,
    Exchange,
    SipResponse,
    SipWire,
    contact_uri,
    sdp_offer,
)
from tests.support.torture import CASES, Peer, TortureCase, dblreq_trailing_call_id

ALLOWED = "127.0.0.1"
STRANGER = "127.0.0.2"
DROP_WINDOW = 1.0  # s of silence after which an unanswered message counts as dropped
ANSWER_WINDOW = 10.0  # s an answer that must come may take (covers the front's failover)
PROFILE = """\
name = "torture-trunk"
[allow]
cidrs = ["127.0.0.1/32"]
[numbers]
default_country_code = "1"
"""

ANY_4XX = frozenset(range(400, 500))


@dataclass(frozen=True)
class Expect:
    """The answers a case may get: one of ``finals``, or none at all when ``dropped``."""

    finals: frozenset[int]
    dropped: bool = False

    def allows(self, status: int | None) -> bool:
        return self.dropped if status is None else status in self.finals


ANSWERED_CALL = Expect(frozenset({200}))
UNKNOWN_METHOD = Expect(frozenset({405, 501}))
STRAY_RESPONSE = Expect(frozenset(), dropped=True)
REFUSED = Expect(ANY_4XX, dropped=True)
LENIENT = Expect(ANY_4XX | {200}, dropped=True)  # refused, dropped, or taken as well formed

EXPECT: dict[str, Expect] = {
    **dict.fromkeys(
        [
            "wsinv",
            "wsinv-cseq-unfolded",
            "esc01",
            "escnull",
            "lwsdisp",
            "longreq",
            "dblreq",
            "semiuri",
            "transports",
            "mpart01",
            "inv2543",
        ],
        ANSWERED_CALL,
    ),
    **dict.fromkeys(["intmeth", "intmeth-header-name-alnum", "esc02"], UNKNOWN_METHOD),
    **dict.fromkeys(["unreason", "noreason", "scalarlg", "bigcode", "bcast"], STRAY_RESPONSE),
    **dict.fromkeys(
        [
            "badinv01",
            "clerr",
            "ncl",
            "scalar02",
            "quotbal",
            "ltgtruri",
            "lwsruri",
            "regbadct",
            "mismatch01",
            "insuf",
            "multi01",
            "mcl01",
        ],
        REFUSED,
    ),
    **dict.fromkeys(["lwsstart", "escruri", "baddate", "trws", "badaspec", "baddn"], LENIENT),
    "badvers": Expect(frozenset({400, 505}), dropped=True),
    "mismatch02": Expect(ANY_4XX | {501}, dropped=True),
    "badbranch": Expect(frozenset({200, 400})),
    "unkscm": Expect(frozenset({400, 416}), dropped=True),
    "novelsc": Expect(frozenset({400, 416}), dropped=True),
    "unksm2": Expect(ANY_4XX),
    "regaut01": Expect(ANY_4XX),
    **dict.fromkeys(["cparam01", "cparam02", "regescrt"], Expect(frozenset({405}))),
    "bext01": Expect(frozenset({420})),
    "invut": Expect(frozenset({415})),
    "sdp01": Expect(frozenset({406})),
    "zeromf": Expect(frozenset({200, 483})),
}

# Cases the current edge gets wrong: (reason). Each is an xfail(strict=True), so fixing the
# edge turns it into a failure until the entry is removed.
KNOWN_WRONG: dict[str, str] = {
    "wsinv": "Kamailio 5.6 cannot parse a CSeq whose number and method are separated by a "
    "line fold (legal LWS): the front drops the whole valid INVITE unanswered",
    "dblreq": "the front's sanity check answers 400 'Content-Length mis-match' to a datagram "
    "with octets after the Content-Length, which RFC 3261 §18.3 says to discard",
}
# Fixed in the front, kept here as what they were: an INVITE whose Contact carried '?'
# outside <> reached the workers, which dropped it (the front answered 503 after fr_timer:
# 400 now); an Accept without application/sdp got a 200 with SDP (406 now); stray responses
# were forwarded to their second Via (a reflector; now dropped in reply_route), header names
# with !%*`' made a valid request unparsable (hdr_name_extra_chars), OPTIONS ignored
# Require/Proxy-Require (420 now).


# --- talking to the edge ---------------------------------------------------------------------


def wire_from(source: str, port: int, *, user: str = SERVICE_NUMBER) -> SipWire:
    """A UDP SipWire to the front at 127.0.0.1:``port`` whose socket is bound to ``source``."""
    wire = SipWire(port, service=user)
    if source != wire.local[0]:
        wire.sock.close()
        wire.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        wire.sock.bind((source, 0))
        wire.local = (source, int(wire.sock.getsockname()[1]))
    return wire


def canonical(name: str) -> str:
    lowered = name.strip().lower()
    return COMPACT_FORMS.get(lowered, lowered)


def headers_named(response: SipResponse, name: str) -> list[str]:
    """Every value of header ``name``, comma-separated values split (no quoted commas in the
    headers this is used for: Via, Record-Route)."""
    return [
        value.strip()
        for key, value in response.headers
        if canonical(key) == canonical(name)
        for value in value.split(",")
    ]


@dataclass
class Outcome:
    """Everything one message brought back, in arrival order."""

    exchange: Exchange = field(default_factory=Exchange)
    bye: SipResponse | None = None  # the answer to our BYE, when a call was answered
    trapped: list[bytes] = field(default_factory=list)  # what reached the trap socket
    # what arrived after the case was judged, until the end of the whole set
    late: list[SipResponse] = field(default_factory=list)
    late_requests: list[bytes] = field(default_factory=list)
    late_trapped: list[bytes] = field(default_factory=list)

    @property
    def responses(self) -> list[SipResponse]:
        return self.exchange.responses

    @property
    def final(self) -> SipResponse | None:
        return self.exchange.final

    @property
    def everything(self) -> list[SipResponse]:
        return self.exchange.responses + self.exchange.cleanup + self.late

    def describe(self) -> str:
        parts = [self.exchange.describe()]
        if self.bye is not None:
            parts.append(f"BYE answered {self.bye}")
        if self.exchange.requests:
            parts.append(
                f"{len(self.exchange.requests)} requests from the server: "
                f"{[r[:60] for r in self.exchange.requests]}"
            )
        if self.late or self.late_requests or self.late_trapped:
            parts.append(
                f"later: answers {[str(r) for r in self.late]}, "
                f"requests {[r[:60] for r in self.late_requests]}, "
                f"at the trap {[d[:60] for d in self.late_trapped]}"
            )
        if self.trapped:
            parts.append(
                f"{len(self.trapped)} datagrams at the trap: {[d[:60] for d in self.trapped]}"
            )
        return "; ".join(parts)


def collect(wire: SipWire, sent_at: float, expect: Expect) -> Outcome:
    """Reads until a final answer, or until the case's window is over: silence for
    :data:`DROP_WINDOW` where dropping is acceptable, else :data:`ANSWER_WINDOW`; a
    provisional answer extends the wait to :data:`ANSWER_WINDOW`."""
    outcome = Outcome()
    deadline = sent_at + (DROP_WINDOW if expect.dropped else ANSWER_WINDOW)
    while outcome.final is None:
        got = wire.receive(deadline, outcome.exchange)
        if got is None:
            break
        outcome.responses.extend(got)
        if any(not r.is_final for r in got):
            deadline = max(deadline, sent_at + ANSWER_WINDOW)
    return outcome


def _request(method: str, uri: str, headers: list[str]) -> bytes:
    lines = [f"{method} {uri} SIP/2.0", *headers, "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def settle(wire: SipWire, sent: bytes, outcome: Outcome) -> None:
    """Ends the INVITE transaction ``outcome`` answered: ACK a final non-2xx (same branch);
    ACK and BYE a 2xx through the front (the route set is the 2xx's Record-Route reversed),
    waiting for the BYE's answer."""
    final = outcome.final
    if final is None or final.cseq[1] != "INVITE":
        return
    number = final.cseq[0]
    dialog = [
        f"From: {final.header('From')}",
        f"To: {final.header('To')}",
        f"Call-ID: {final.call_id}",
    ]
    host, port = wire.local
    if final.status >= 300:
        uri = sent.split(b"\r\n", 1)[0].split(b" ")[1].decode(errors="replace")
        top_via = headers_named(final, "Via")[0]
        wire.send(
            _request(
                "ACK", uri, [f"Via: {top_via}", "Max-Forwards: 70", *dialog, f"CSeq: {number} ACK"]
            )
        )
        return
    target = contact_uri(final) or f"sip:{host}"
    routes = [f"Route: {r}" for r in reversed(headers_named(final, "Record-Route"))]

    def in_dialog(method: str, cseq: int) -> bytes:
        via = f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport"
        return _request(
            method, target, [via, "Max-Forwards: 70", *routes, *dialog, f"CSeq: {cseq} {method}"]
        )

    wire.send(in_dialog("ACK", number))
    wire.send(in_dialog("BYE", number + 1))
    deadline = time.monotonic() + ANSWER_WINDOW
    while outcome.bye is None:
        got = wire.receive(deadline, outcome.exchange)
        if got is None:
            return
        for response in got:
            if response.cseq == (number + 1, "BYE") and response.is_final:
                outcome.bye = response
            else:
                outcome.exchange.cleanup.append(response)


def drain(sock: socket.socket) -> list[bytes]:
    """What is waiting on ``sock`` now, without waiting for more."""
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(65535))
    except BlockingIOError:
        return out


# --- the server and the torture run ----------------------------------------------------------


@dataclass
class Edge:
    server: Server
    workers: int
    port: int  # the front's SIP port
    worker_pids: list[int]
    front_pid: int
    media_sink: socket.socket  # where the offers' audio goes
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    wires: dict[str, SipWire] = field(default_factory=dict)  # kept open for late answers
    traps: dict[str, socket.socket] = field(default_factory=dict)
    peers: dict[str, Peer] = field(default_factory=dict)

    def send(self, case: TortureCase) -> Outcome:
        wire = SipWire(self.port)
        trap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        trap.bind((ALLOWED, 0))
        self.wires[case.name], self.traps[case.name] = wire, trap
        peer = Peer(
            target=(ALLOWED, self.port),
            local=wire.local,
            trap=trap.getsockname()[:2],
            media_port=self.media_sink.getsockname()[1],
        )
        data = case.render(peer)
        sent_at = time.monotonic()
        wire.send(data)
        outcome = collect(wire, sent_at, EXPECT[case.name])
        settle(wire, data, outcome)
        outcome.trapped = drain(trap)
        self.peers[case.name] = peer
        self.outcomes[case.name] = outcome
        return outcome

    def check_late(self) -> None:
        """Files what reached the case sockets and traps since each case was judged."""
        for name, wire in self.wires.items():
            outcome = self.outcomes[name]
            exchange = Exchange()
            while (got := wire.receive(time.monotonic() + 0.001, exchange)) is not None:
                outcome.late.extend(got)
            outcome.late_requests.extend(exchange.requests)
            outcome.late_trapped.extend(drain(self.traps[name]))

    def close(self) -> None:
        for wire in self.wires.values():
            wire.close()
        for trap in self.traps.values():
            trap.close()
        self.media_sink.close()


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def edge(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
         ) -> Iterator[Edge]:
    workers = int(request.param)
    tmp = tmp_path_factory.mktemp(f"torture-{workers}")
    profile = tmp / "torture-trunk.toml"
    profile.write_text(PROFILE)
    port = free_port()
    front = {"mode": "kamailio", "probe_interval": 1}
    with running_server(
        tmp, workers=workers, profile=str(profile), sip={"port": port}, extra={"front": front}
    ) as srv:
        srv.wait_for(
            lambda: srv.health()[1].get("front", {}).get("running"),
            10,
            what="the SIP front running",
        )
        _, health = srv.health()
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind((ALLOWED, 0))
        edge = Edge(
            srv,
            workers,
            port,
            [int(w["pid"]) for w in health["workers"]],
            int(health["front"]["pid"]),
            sink,
        )
        try:
            yield edge
        finally:
            edge.close()


def case_params() -> list[object]:
    params: list[object] = []
    for case in CASES:
        marks = (
            [pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[case.name])]
            if case.name in KNOWN_WRONG
            else []
        )
        params.append(pytest.param(case, id=f"{case.section}-{case.name}", marks=marks))
    return params


@pytest.mark.parametrize("case", case_params())
def test_torture_message_gets_the_answer_rfc_4475_expects(edge: Edge, case: TortureCase) -> None:
    expect = EXPECT[case.name]
    outcome = edge.send(case)
    final = outcome.final
    seen = f"{case}: {outcome.describe()}\n{case.note}"

    assert expect.allows(final.status if final else None), (
        f"expected {sorted(expect.finals) or 'no answer'}"
        f"{' or no answer' if expect.dropped and expect.finals else ''}: {seen}"
    )
    if case.method != "INVITE":
        assert all(r.is_final for r in outcome.responses), f"provisional to a non-INVITE: {seen}"
    assert not outcome.exchange.unparsable, f"unparsable answers: {seen}"
    assert not outcome.exchange.requests, f"the server sent requests back: {seen}"
    assert not outcome.trapped, f"the edge sent something to the trap address: {seen}"
    if final is not None and final.status == 200 and case.method == "INVITE":
        assert outcome.bye is not None and outcome.bye.status == 200, (
            f"the answered call could not be hung up through the front: {seen}"
        )
    if case.name == "dblreq":
        hidden = dblreq_trailing_call_id(edge.peers[case.name])
        assert all(r.call_id != hidden for r in outcome.everything), (
            f"the INVITE in the trailing octets was answered: {seen}"
        )


def test_the_edge_is_unharmed_after_the_whole_set(edge: Edge) -> None:
    # Run on its own (-k), this test still follows the whole set: send what has not been sent.
    for case in CASES:
        if case.name not in edge.outcomes:
            edge.send(case)
    server = edge.server

    assert server.process.poll() is None, f"the server exited\n{server.log()}"
    status, body = server.health()
    assert status == 200, body
    assert body["workersReady"] == edge.workers, body
    assert [int(w["pid"]) for w in body["workers"]] == edge.worker_pids, "a worker restarted"
    assert body["front"]["running"] and int(body["front"]["pid"]) == edge.front_pid, body
    assert body["front"]["restarts"] == 0, body

    edge.check_late()
    for case in CASES:
        outcome = edge.outcomes[case.name]
        expect = EXPECT[case.name]
        unexpected = [
            r
            for r in outcome.late
            if r.is_final
            and not expect.allows(r.status)
            and not (outcome.final and r.status == outcome.final.status)
        ]
        assert not unexpected, f"{case}: late answers: {outcome.describe()}"
        assert not outcome.late_trapped, f"{case}: later at the trap: {outcome.describe()}"
        assert not outcome.late_requests, f"{case}: later requests: {outcome.describe()}"
        if case.name == "dblreq":
            hidden = dblreq_trailing_call_id(edge.peers[case.name])
            assert all(r.call_id != hidden for r in outcome.late), outcome.describe()

    server.wait_for(lambda: server.health()[1]["activeCalls"] == 0, 15, what="no call left")
    assert "Traceback" not in server.log_path.read_text(errors="replace"), server.log()

    with SipWire(edge.port) as wire:  # a plain call from the trunk is still answered
        invite = wire.invite(body=sdp_offer(ALLOWED, edge.media_sink.getsockname()[1]))
        wire.send(invite.data)
        outcome = collect(wire, time.monotonic(), ANSWERED_CALL)
        settle(wire, invite.data, outcome)
    assert outcome.final is not None and outcome.final.status == 200, outcome.describe()
    assert outcome.bye is not None and outcome.bye.status == 200, outcome.describe()


# --- the scanner -----------------------------------------------------------------------------

# existing-looking: the service number and a PBX extension; non-existing: neither could be
USERS = (SERVICE_NUMBER, "100", "+19995550199", "no-such-user-7f3a")
SOURCES = {"trunk": ALLOWED, "stranger": STRANGER}
METHODS = ("OPTIONS", "INVITE", "REGISTER")
# what differs from one request to the next whoever the user: the dialog and the transaction,
# where the answer came from (Contact, Record-Route of the worker that took the call) and the
# session description of an answered call
PER_REQUEST = frozenset(
    {"via", "from", "to", "call-id", "cseq", "contact", "record-route", "content-length"}
)
INTENDED = {
    ("trunk", "OPTIONS"): 200,
    ("trunk", "INVITE"): 200,
    ("trunk", "REGISTER"): 405,
    ("stranger", "OPTIONS"): 403,
    ("stranger", "INVITE"): 403,
    ("stranger", "REGISTER"): 403,
}
# (source, method) pairs whose intended answer the current edge does not give: (reason)
PROBES_WRONG: dict[tuple[str, str], str] = {}


def fingerprint(response: SipResponse | None) -> tuple[object, ...]:
    """What a scanner could tell apart: status, reason, which headers, and every header's
    value but the per-request ones (and the body of a refusal)."""
    if response is None:
        return ("no answer",)
    names = sorted(canonical(n) for n, _ in response.headers)
    values = sorted(
        (canonical(n), v) for n, v in response.headers if canonical(n) not in PER_REQUEST
    )
    body = response.body if response.status >= 300 else b""
    return (response.status, response.reason, tuple(names), tuple(values), body)


@dataclass
class Scanner:
    edge: Edge
    answers: dict[tuple[str, str, str], Outcome] = field(default_factory=dict)

    def probe(self, source: str, method: str) -> dict[str, Outcome]:
        """One request of ``method`` to every user from ``source`` (cached)."""
        for user in USERS:
            key = (source, method, user)
            if key in self.answers:
                continue
            with wire_from(SOURCES[source], self.edge.port, user=user) as wire:
                if method == "INVITE":
                    request = wire.invite(
                        body=sdp_offer(wire.local[0], self.edge.media_sink.getsockname()[1])
                    )
                else:
                    request = wire.request(method)
                wire.send(request.data)
                outcome = collect(wire, time.monotonic(), Expect(frozenset(), dropped=True))
                settle(wire, request.data, outcome)
            self.answers[key] = outcome
        return {user: self.answers[(source, method, user)] for user in USERS}


@pytest.fixture(scope="module")
def scanner(edge: Edge) -> Scanner:
    return Scanner(edge)


def probe_params(with_status: bool) -> list[object]:
    params: list[object] = []
    for (source, method), status in INTENDED.items():
        reason = PROBES_WRONG.get((source, method)) if with_status else None
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        values = (source, method, status) if with_status else (source, method)
        params.append(pytest.param(*values, id=f"{source}-{method}", marks=marks))
    return params


@pytest.mark.parametrize(("source", "method"), probe_params(with_status=False))
def test_a_scanner_gets_the_same_answer_whatever_the_user(
    scanner: Scanner, source: str, method: str
) -> None:
    outcomes = scanner.probe(source, method)
    prints = {user: fingerprint(o.final) for user, o in outcomes.items()}
    seen = "\n".join(f"  {user}: {prints[user]}" for user in USERS)
    assert len(set(prints.values())) == 1, f"{method} from the {source}, per user:\n{seen}"


@pytest.mark.parametrize(("source", "method", "status"), probe_params(with_status=True))
def test_a_probe_gets_the_edge_s_answer_for_its_source(
    scanner: Scanner, source: str, method: str, status: int
) -> None:
    outcomes = scanner.probe(source, method)
    got = {user: o.describe() for user, o in outcomes.items()}
    for user, outcome in outcomes.items():
        assert outcome.final is not None and outcome.final.status == status, (
            f"{method} from the {source} to {user}: expected {status}, got {got}"
        )
        if outcome.final.status == 200 and method == "INVITE":
            assert outcome.bye is not None and outcome.bye.status == 200, got


def test_nothing_the_scanner_sent_left_a_call(scanner: Scanner, edge: Edge) -> None:
    for source in SOURCES:
        for method in METHODS:
            scanner.probe(source, method)
    server = edge.server
    server.wait_for(lambda: server.health()[1]["activeCalls"] == 0, 15, what="no call left")
    assert server.process.poll() is None
    assert [int(w["pid"]) for w in server.health()[1]["workers"]] == edge.worker_pids
