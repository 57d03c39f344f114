"""Malformed SIP input gets a 4xx or is dropped, never a 2xx, and the worker survives it all
(a worker without the SIP front, so that its own checks are what answers).

One server serves the whole module. Each case is sent by :class:`~tests.support.sipwire.SipWire`
over UDP and, where it means something there, over TCP:

* when the stream's framing stays intact (and always over UDP) the case is followed by an
  OPTIONS probe on the same socket; the worker handles a socket's messages in order, so once
  the probe is answered, "nothing else came back" means the case was dropped;
* when the case breaks TCP framing (truncated headers, a Content-Length that lies, a message
  bigger than pjsip's receive buffer), the client half-closes the connection and reads until
  the server closes its side or gives a final answer.

After the batch the worker must be the same process, ``/healthz`` 200, no call active, and a
normal SIPp call must still complete.

What the server (pjsua2 2.15.1) answered, measured by running this module ("dropped": no
answer, and the probe that followed on the same socket was answered; "closed": no answer,
and the server closed the connection after ours):

=================================  ================================  ==========================
case                               UDP                               TCP
=================================  ================================  ==========================
INVITE truncated in CSeq           400 Bad Request (no Contact)      dropped, closed
INVITE truncated in Via            dropped                           dropped, closed
INVITE without Call-ID             dropped                           dropped
INVITE without CSeq                dropped                           dropped
INVITE without From                dropped                           dropped
Content-Length 9999 (> body)       400 (Content-Length does not ...) dropped, closed
Content-Length 5 (< body)          400 (Content-Length does not ...) 400 Bad SDP
Content-Length -5                  dropped                           dropped, closed
Content-Length abc                 dropped                           dropped, closed
SDP "v=0 / this is not sdp"        400 Bad SDP                       400 Bad SDP
SDP of 200 random bytes            400 Bad SDP                       400 Bad SDP
unknown method FOO                 dropped                           dropped
one 10 KB header                   513 Message Too Large             dropped, closed
500 headers                        513 Message Too Large             dropped, closed
NUL byte in a header               dropped                           dropped
unsolicited 200 OK                 dropped                           dropped
512 random bytes                   dropped                           dropped, closed
HTTP GET                           dropped                           dropped, closed
CRLF CRLF keep-alive               nothing; socket still served      nothing; still served
Via: SIP/2.0/FOO                   400 (unknown Via transport)       400 (unknown Via transport)
Request-URI http://example.com/    dropped                           dropped
=================================  ================================  ==========================

The worker's own framing checks (``hitl_sip.worker.admission.check_framing``) add what
pjsip skips over UDP: Content-Length must match the datagram's body (RFC 3261 §18.3), a
message at pjsip's compiled 4000-byte limit may have been truncated (513), and the Via
transport must be a real one. Should anything be answered 200, the client ends the call
(ACK + BYE) so it cannot leak into the checks after the batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.server import Server, running_server
from tests.support.sipp import SippResult, run_sipp
from tests.support.sipwire import Exchange, Request, SipWire

pytestmark = pytest.mark.sipp

Build = Callable[[SipWire], bytes | Request]


@dataclass(frozen=True)
class Expect:
    """The answers a case may get on one transport."""

    finals: frozenset[int] = frozenset()  # acceptable final statuses
    dropped: bool = False  # no answer at all is acceptable
    closed: bool = False  # TCP: the server must have closed the connection
    breaks_framing: bool = False  # TCP: no probe can follow on the same connection


DROPPED = Expect(dropped=True)
BAD_SDP = Expect(finals=frozenset({400}))
# Over TCP a case that breaks framing leaves the server waiting for the rest of the message;
# it closes the connection when ours closes, without having answered.
DROPPED_THEN_CLOSED = Expect(dropped=True, closed=True, breaks_framing=True)


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    udp: Expect
    tcp: Expect | None = None  # None: not sent over TCP

    def expect(self, transport: str) -> Expect:
        expect = self.udp if transport == "udp" else self.tcp
        assert expect is not None
        return expect


def truncated_in_cseq(wire: SipWire) -> Request:
    invite = wire.invite()
    cut = invite.data.index(b"CSeq:") + len(b"CSeq: 1 IN")  # mid-line, no blank line
    return invite.with_data(invite.data[:cut])


def truncated_in_via(wire: SipWire) -> Request:
    invite = wire.invite()
    cut = invite.data.index(b"Via:") + len(b"Via: SIP/2.0/UDP 127.0")
    return invite.with_data(invite.data[:cut])


def unsolicited_response(wire: SipWire) -> bytes:
    host, port = wire.local
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/{wire.via_transport} {host}:{port};branch=z9hG4bKnotours;rport\r\n"
        f"From: <sip:+14155550123@{wire.remote[0]}>;tag=theirs\r\n"
        f"To: <sip:+14155550100@{host}>;tag=ours\r\n"
        "Call-ID: never-sent@sipwire\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


RANDOM = random.Random(5060)
BINARY_SDP = RANDOM.randbytes(200)
RANDOM_DATAGRAM = RANDOM.randbytes(512)
HTTP_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
REJECTED_400 = Expect(finals=frozenset({400}))
TOO_LARGE = Expect(finals=frozenset({400, 513}))
# RFC 3261 wants 405/501 for an unknown method; pjsua stays silent, which is allowed here.
UNKNOWN_METHOD = Expect(finals=frozenset({405, 501}), dropped=True)


def nul_in_header(wire: SipWire) -> Request:
    invite = wire.invite()
    return invite.with_data(invite.data.replace(b"Max-Forwards: 70", b"Max-Forwards: 7\x000"))


CASES = [
    Case("invite-truncated-in-cseq", truncated_in_cseq, REJECTED_400, DROPPED_THEN_CLOSED),
    Case("invite-truncated-in-via", truncated_in_via, DROPPED, DROPPED_THEN_CLOSED),
    Case("invite-without-call-id", lambda w: w.invite(omit=["Call-ID"]), DROPPED, DROPPED),
    Case("invite-without-cseq", lambda w: w.invite(omit=["CSeq"]), DROPPED, DROPPED),
    Case("invite-without-from", lambda w: w.invite(omit=["From"]), DROPPED, DROPPED),
    Case(
        "content-length-larger-than-body",
        lambda w: w.invite(content_length="9999"),
        REJECTED_400,
        DROPPED_THEN_CLOSED,
    ),
    Case(
        "content-length-smaller-than-body",
        lambda w: w.invite(content_length="5"),
        REJECTED_400,
        Expect(finals=frozenset({400}), breaks_framing=True),
    ),
    Case("content-length-negative", lambda w: w.invite(content_length="-5"), DROPPED,
         DROPPED_THEN_CLOSED),
    Case("content-length-not-a-number", lambda w: w.invite(content_length="abc"), DROPPED,
         DROPPED_THEN_CLOSED),
    Case("sdp-text-garbage", lambda w: w.invite(body=b"v=0\r\nthis is not sdp\r\n"), BAD_SDP,
         BAD_SDP),
    Case("sdp-binary-junk", lambda w: w.invite(body=BINARY_SDP), BAD_SDP, BAD_SDP),
    Case("unknown-method", lambda w: w.request("FOO"), UNKNOWN_METHOD, UNKNOWN_METHOD),
    Case(
        "ten-kilobyte-header",
        lambda w: w.invite(headers=[("X-Padding", "a" * 10240)]),
        TOO_LARGE,
        DROPPED_THEN_CLOSED,
    ),
    Case(
        "five-hundred-headers",
        lambda w: w.invite(headers=[(f"X-Header-{i}", str(i)) for i in range(500)]),
        TOO_LARGE,
        DROPPED_THEN_CLOSED,
    ),
    Case("nul-byte-in-header", nul_in_header, DROPPED, DROPPED),
    Case("unsolicited-response", unsolicited_response, DROPPED, DROPPED),
    Case("random-bytes", lambda w: RANDOM_DATAGRAM, DROPPED, DROPPED_THEN_CLOSED),
    Case("http-get", lambda w: HTTP_GET, DROPPED, DROPPED_THEN_CLOSED),
    Case("crlf-keep-alive", lambda w: b"\r\n\r\n", DROPPED, DROPPED),
    Case("via-with-bogus-transport", lambda w: w.invite(via_transport="FOO"), REJECTED_400,
         REJECTED_400),
    Case("request-uri-not-sip", lambda w: w.invite(uri="http://example.com/hello"), DROPPED,
         DROPPED),
]


def sends() -> list[tuple[Case, str]]:
    """Every (case, transport) pair the batch sends, in order."""
    return [(c, t) for c in CASES for t in ("udp", "tcp") if t == "udp" or c.tcp is not None]


def case_params() -> list[object]:
    params: list[object] = []
    for case, transport in sends():
        params.append(pytest.param(case, transport, id=f"{case.name}-{transport}"))
    return params


@dataclass
class Batch:
    server: Server
    worker_pid: int
    sent: dict[str, Exchange] = field(default_factory=dict)

    def send(self, case: Case, transport: str) -> Exchange:
        expect = case.expect(transport)
        with SipWire(self.server.sip_port(transport=transport), transport) as wire:
            payload = case.build(wire)
            if transport == "tcp" and expect.breaks_framing:
                result = wire.exchange_until_closed(payload)
            else:
                result = wire.exchange(payload)
        self.sent[f"{case.name}-{transport}"] = result
        return result


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    # the worker's own parser and framing checks, straight (front.mode = none): behind the
    # front they are the second line; what the front does with such input is
    # tests/integration/test_sip_torture.py
    with running_server(tmp_path_factory.mktemp("malformed"),
                        extra={"front": {"mode": "none"}}) as server:
        yield Batch(server, server.worker_pid())


@pytest.mark.parametrize(("case", "transport"), case_params())
def test_malformed_input_gets_4xx_or_is_dropped(batch: Batch, case: Case, transport: str) -> None:
    expect = case.expect(transport)
    result = batch.send(case, transport)
    seen = f"{case.name} over {transport}: {result.describe()}"

    assert not [s for s in result.statuses if 200 <= s < 300], f"answered 2xx: {seen}"
    assert all(s == 100 or s >= 400 for s in result.statuses), f"call progressed: {seen}"
    if result.final is None:
        assert expect.dropped, f"expected one of {sorted(expect.finals)}: {seen}"
    else:
        assert result.final.status in expect.finals, f"unexpected answer: {seen}"
    assert not result.requests, f"the server sent requests back: {seen}"
    if transport == "udp" or not expect.breaks_framing:
        assert result.probe_answered, f"the probe after the case got no answer: {seen}"
    if expect.closed:
        assert result.closed, f"the server kept the connection open: {seen}"


def test_worker_is_unharmed_after_the_whole_batch(batch: Batch, tmp_path: Path) -> None:
    # Run on its own (-k), this test still follows the whole batch: send what has not been sent.
    for case, transport in sends():
        if f"{case.name}-{transport}" not in batch.sent:
            batch.send(case, transport)
    server = batch.server

    status, body = server.health()
    assert status == 200, body
    assert body["workers"][0]["pid"] == batch.worker_pid, "the worker was restarted"
    server.wait_for(lambda: server.metric("hitl_sip_active_calls") == 0, what="no active call")
    assert "Traceback" not in server.log_path.read_text(errors="replace"), server.log()

    result = run_sipp("short_call", server.sip_port(), tmp_path)
    assert isinstance(result, SippResult)
    assert result.ok, result.explain()
    status, body = server.health()
    assert status == 200, body
    assert body["workers"][0]["pid"] == batch.worker_pid
