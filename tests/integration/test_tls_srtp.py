"""SIP over TLS at the front and SDES SRTP at the worker, against a running ``hitl-sip serve``
whose trunk profile says ``[rtp] srtp = "mandatory"``, with one worker and then with two (one
server and one softphone call per worker count, shared by the module's tests).

Debian's baresip calls the front's TLS port (``;transport=tls``) with ``mediaenc=srtp-mand``
(an ``RTP/SAVP`` offer with an ``AES_CM_128_HMAC_SHA1_80`` key, and nothing else accepted).
The server's certificate is the self-signed one it makes at start; baresip (libre 1.1)
verifies none. baresip's SIP trace (``-s``, written after decryption) holds the answer SDP;
a root-only sniffer on loopback sees what the server sends to baresip's RTP port. Audio is
checked both ways by correlation, as in ``test_softphone_interop.py``.

A plain ``RTP/AVP`` offer to the same profile (over UDP, through the front) gets 488, an
``RTP/SAVP`` one without a key 406: pjsua answers both itself, before admission.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.media.rtp import RtpPacket
from hitl_sip.media.wav import read_wav, resample
from tests.support.audio import assert_contains, caller_channel
from tests.support.baresip import running_softphone
from tests.support.net import UdpSniffer
from tests.support.server import ROOT, Server, running_server
from tests.support.sipwire import Exchange, Request, SipWire, sdp_offer

pytestmark = pytest.mark.interop

GREETING = ROOT / "rtp/prompts/greeting.wav"
UTTERANCE = ROOT / "rtp/caller/agent_bill_8k.wav"
#: Longer than the 7.3 s greeting, so all of it reaches the softphone before it hangs up.
CALL_SECONDS = 10.0
SPEAK_AT = 1.0
PROFILE = """name = "secure"
[allow]
cidrs = ["127.0.0.0/8"]
[rtp]
port_start = 31000
port_end = 31099
srtp = "mandatory"
"""
#: RFC 3711: the 80-bit authentication tag after the (encrypted) payload.
AUTH_TAG_80 = 10
PCMU_20MS = 160
#: 160 random bytes take ~119 distinct values; plain PCMU silence takes one or two.
CIPHER_MIN_DISTINCT = 90

# baresip's -s trace: "#", then "TLS|UDP|TCP src -> dst", then the message, then a reset
# colour code
_TRACED = re.compile(r"#\n(TLS|UDP|TCP) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.DOTALL)


@dataclass
class TracedMessage:
    transport: str
    source: str
    destination: str
    text: str

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0]

    @property
    def body(self) -> str:
        return self.text.partition("\n\n")[2]


@dataclass
class Call:
    server: Server
    record: dict[str, Any]
    server_recording: Path
    softphone_heard: Path
    softphone_log: str
    trace: list[TracedMessage]
    to_softphone: list[bytes]  # UDP payloads the server sent to baresip's RTP port
    tls_address: str


def traced(log: str) -> list[TracedMessage]:
    return [TracedMessage(m[0], m[1], m[2], m[3].replace("\r\n", "\n"))
            for m in _TRACED.findall(log)]


def offered_port(trace: list[TracedMessage]) -> int:
    invite = next(m for m in trace if m.start_line.startswith("INVITE "))
    found = re.search(r"^m=audio (\d+) ", invite.body, re.MULTILINE)
    assert found, invite.text
    return int(found.group(1))


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def call(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
         ) -> Iterator[Call]:
    workers = int(request.param)
    tmp = tmp_path_factory.mktemp(f"tls-{workers}")
    with running_server(tmp, workers=workers, profile="secure", profiles={"secure": PROFILE},
                        sip={"transports": ["udp", "tcp", "tls"], "tls_port": 0}) as server:
        _, health = server.health()
        tls_address = str(health["front"]["sip"].get("tls", ""))
        dial = f"sip:+14155550123@127.0.0.1:{server.sip_port(transport='tls')};transport=tls"
        with contextlib.ExitStack() as stack:
            phone = stack.enter_context(running_softphone(
                tmp, dial=dial, microphone=UTTERANCE, call_seconds=CALL_SECONDS,
                speak_at=SPEAK_AT, transport="tls", mediaenc="srtp-mand", sip_trace=True))
            # baresip takes its RTP port from rtp_port .. rtp_port + 3
            sniffers = {port: stack.enter_context(UdpSniffer(port))
                        for port in range(phone.rtp_port, phone.rtp_port + 4)}
            try:
                server.wait_for(lambda: len(server.call_records()) == 1,
                                timeout=CALL_SECONDS + 10, what="the softphone's call to end")
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- baresip log ---\n{phone.log()}") from e
            phone.stop()  # baresip closes its sndfile recordings on the way out
            log = phone.log_path.read_text(errors="replace")
            trace = traced(log)
            record = server.call_records()[0]
            yield Call(
                server=server,
                record=record,
                server_recording=server.data_dir / "recordings" / f"{record['callId']}.wav",
                softphone_heard=phone.received_wav(),
                softphone_log=phone.log(),
                trace=trace,
                to_softphone=list(sniffers[offered_port(trace)].packets),
                tls_address=tls_address,
            )


def test_the_call_over_tls_is_answered_and_ended_by_the_caller(call: Call) -> None:
    assert call.tls_address.startswith("127.0.0.1:"), call.tls_address
    assert call.record["outcome"] == "completed", call.softphone_log
    assert call.record["endedBy"] == "caller"
    assert call.record["transport"] == "tls"  # the trunk's leg, as the front saw it
    assert call.record["codec"] == "PCMU"
    tls_port = call.tls_address.rsplit(":", 1)[1]
    invite = next(m for m in call.trace if m.start_line.startswith("INVITE "))
    assert (invite.transport, invite.destination) == ("TLS", f"127.0.0.1:{tls_port}")


def test_the_answer_is_rtp_savp_with_an_sdes_key(call: Call) -> None:
    ok = [m for m in call.trace if m.start_line.startswith("SIP/2.0 200")
          and re.search(r"^CSeq: \d+ INVITE$", m.text, re.MULTILINE)]
    assert len(ok) == 1, call.softphone_log
    answer = ok[0]
    assert answer.transport == "TLS"
    assert re.search(r"^m=audio \d+ RTP/SAVP 0\b", answer.body, re.MULTILINE), answer.body
    crypto = re.findall(r"^a=crypto:\d+ (\S+) inline:(\S+)", answer.body, re.MULTILINE)
    assert [suite for suite, _key in crypto] == ["AES_CM_128_HMAC_SHA1_80"], answer.body
    assert "srtp: audio: SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in (
        call.softphone_log), call.softphone_log


def test_what_the_server_sends_on_the_wire_is_srtp(call: Call) -> None:
    packets = [RtpPacket.parse(p) for p in call.to_softphone]
    audio = [p for p in packets if p.payload_type == 0]
    assert len(audio) >= 0.8 * CALL_SECONDS * 50, f"{len(audio)} PCMU packets to the softphone"
    # each carries the 80-bit tag after its 20 ms of (encrypted) PCMU
    assert {len(p.payload) for p in audio} == {PCMU_20MS + AUTH_TAG_80}
    # and none reads as plain PCMU: the greeting's pauses and the silence after it would
    plain_looking = [p for p in audio if len(set(p.payload[:PCMU_20MS])) < CIPHER_MIN_DISTINCT]
    assert not plain_looking, f"{len(plain_looking)} of {len(audio)} payloads look unencrypted"


def test_the_softphone_hears_the_whole_greeting(call: Call) -> None:
    rate, heard = read_wav(call.softphone_heard)
    g_rate, greeting = read_wav(GREETING)
    greeting = resample(greeting, g_rate, rate)
    assert len(heard) >= len(greeting), (
        f"softphone received {len(heard) / 2 / rate:.1f} s, shorter than the greeting\n"
        f"{call.softphone_log}"
    )
    assert_contains(heard, greeting, rate, starts_within=(0.0, 1.0), what="greeting at softphone")


def test_the_server_records_what_the_softphone_said(call: Call) -> None:
    rate, recording = caller_channel(call.server_recording)
    u_rate, utterance = read_wav(UTTERANCE)
    assert_contains(
        recording,
        resample(utterance, u_rate, rate),
        rate,
        starts_within=(SPEAK_AT - 0.1, SPEAK_AT + 0.5),
        what="softphone audio in the worker's recording",
    )


def final_answer(wire: SipWire, request: Request, limit: float = 5.0) -> Exchange:
    return wire.final_answer(request, limit)


@pytest.mark.parametrize(("proto", "status"), [("RTP/AVP", 488), ("RTP/SAVP", 406)],
                         ids=["plain-rtp", "savp-without-a-key"])
def test_an_offer_without_srtp_keys_is_refused(call: Call, proto: str, status: int) -> None:
    server = call.server
    refused_before = server.metric("hitl_sip_sip_responses_sent_total", **{"class": "4xx"})
    with SipWire(server.sip_port()) as wire:  # UDP, through the front
        # m=audio … RTP/AVP 0 8 101 (or RTP/SAVP), no a=crypto
        invite = wire.invite(sdp_offer(wire.local[0], 40000).replace(b"RTP/AVP", proto.encode()))
        result = final_answer(wire, invite)
        wire.settle(invite, result)
    final = result.final
    assert final is not None, result.describe()
    assert final.status == status, result.describe()
    # never answered, never a conversation: a plain offer is refused before admission; an
    # RTP/SAVP offer without a key may be admitted (ringing) and then fail its negotiation
    new = server.call_records()[1:]
    assert all(r["outcome"] != "completed" for r in new), new
    if proto == "RTP/AVP":
        assert new == []
    # pjsua itself refuses it, before admission: the worker counts the answer it sent
    server.wait_for(lambda: server.metric("hitl_sip_sip_responses_sent_total",
                                          **{"class": "4xx"}) == refused_before + 1,
                    what="the worker's refusal counted")
