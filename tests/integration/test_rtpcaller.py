"""The in-process RTP caller (tests/support/rtpcaller.py) against a real ``hitl-sip serve``:
it must hear the bot's greeting over a well-formed stream, hang up cleanly, deliver its own
audio and RFC 4733 digits, and notice when the server hangs up. A scripted UAS checks what
the real server cannot show: the digit's exact packets and the answer to a re-INVITE."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from hitl_sip.media.rtp import DtmfEvent, RtpPacket
from hitl_sip.media.wav import read_wav, resample
from tests.support.audio import assert_contains, caller_channel
from tests.support.rtpcaller import FRAME_SAMPLES, FRAME_SECONDS, RtpCaller, parse_sdp_audio
from tests.support.server import ROOT, Server, running_server
from tests.support.sipwire import Exchange, SipRequest, SipResponse, SipWire, sdp_offer

pytestmark = pytest.mark.sipp

CALL_SID = "CA00000000000000000000000000rtpc"
FRAME_BYTES = FRAME_SAMPLES * 2


def wav_8k(path: Path) -> bytes:
    rate, pcm = read_wav(path)
    return resample(pcm, rate, 8000)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def one_record(srv: Server) -> dict[str, object]:
    srv.wait_for(lambda: len(srv.call_records()) == 1, what="the call record")
    return srv.call_records()[0]


def assert_paced(caller: RtpCaller) -> None:
    """Every tick was sent, never before its slot, and the last ones are as close to their
    slots as the rest (lateness does not accumulate). Medians, so one scheduler stall on a
    busy machine does not fail the test."""
    anchor = caller.media_anchor
    assert anchor is not None
    ticks = [n for n, _ in caller.sent]
    assert ticks == list(range(len(ticks))), "a tick was skipped or repeated"
    lateness = [at - (anchor + n * FRAME_SECONDS) for n, at in caller.sent]
    assert min(lateness) >= 0, f"a packet left {-min(lateness) * 1000:.1f} ms early"
    overall = statistics.median(lateness)
    assert overall < 0.005, f"median lateness {overall * 1000:.1f} ms"
    tail = statistics.median(lateness[-10:])
    assert tail < 0.005, f"the stream drifted {tail * 1000:.1f} ms behind its clock"


def test_the_caller_hears_the_greeting_on_a_continuous_stream_and_hangs_up(
    tmp_path: Path,
) -> None:
    greeting = wav_8k(ROOT / "rtp/prompts/greeting.wav")
    with (
        running_server(tmp_path, worker={"record_calls": True}) as srv,
        RtpCaller(srv.sip_port(), headers={"X-Twilio-CallSid": CALL_SID}) as caller,
    ):
        caller.call()
        assert caller.remote_rtp is not None and caller.remote_rtp[0] == "127.0.0.1"
        assert caller.answer_payload_types[0] == 0, caller.answer_payload_types
        caller.start_media()
        # the greeting plus half a second of margin, measured in audio actually received
        wait_until(lambda: len(caller.received_pcm()) >= len(greeting) + 8000, 12,
                   "the greeting's worth of RTP")
        heard = caller.received_pcm()
        assert_contains(heard, greeting, 8000, starts_within=(0.0, 1.0),
                        what="greeting heard by the RtpCaller")

        packets = list(caller.received)
        assert {p.pt for p in packets} == {0}
        assert len({p.ssrc for p in packets}) == 1
        steps = {
            ((b.seq - a.seq) & 0xFFFF, (b.timestamp - a.timestamp) & 0xFFFFFFFF)
            for a, b in pairwise(packets)
        }
        assert steps == {(1, FRAME_SAMPLES)}, f"seq/timestamp steps seen: {sorted(steps)}"
        assert all(len(p.pcm) == FRAME_BYTES for p in packets)
        assert caller.answered_at is not None
        assert packets[0].arrival - caller.answered_at < 0.5, "the greeting started late"

        caller.hangup()
        assert not caller.ended_by_server
        assert caller.ended_at is not None and caller.wait_ended(0)
        sent_before = len(caller.sent)
        time.sleep(0.1)
        assert len(caller.sent) == sent_before, "media kept flowing after the hang-up"
        assert_paced(caller)

        record = one_record(srv)
        assert record["endedBy"] == "caller"
        assert record["outcome"] == "completed"
        assert record["codec"] == "PCMU"
        metadata = record["metadata"]
        assert isinstance(metadata, dict)
        assert metadata["caller_number"] == "+14155550100"
        assert metadata["called_number"] == "+14155550123"
        assert metadata["headers"]["X-Twilio-CallSid"] == CALL_SID


def test_the_server_hanging_up_is_noticed_after_caller_audio_and_a_digit(
    tmp_path: Path,
) -> None:
    utterance = wav_8k(ROOT / "rtp/caller/agent_bill_8k.wav")
    frames = [utterance[at : at + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
              for at in range(0, len(utterance), FRAME_BYTES)]

    def source(n: int) -> bytes:
        return frames[n] if n < len(frames) else bytes(FRAME_BYTES)

    max_seconds = 6
    with (
        running_server(tmp_path, worker={"record_calls": True,
                                         "max_call_seconds": max_seconds}) as srv,
        RtpCaller(srv.sip_port(), payload_type=8) as caller,
    ):
        caller.call()
        assert caller.answer_payload_types[0] == 8, caller.answer_payload_types
        caller.start_media(source)
        wait_until(lambda: len(caller.sent) > len(frames) + 10, 8, "the utterance sent")
        caller.dtmf("5")
        assert not caller.ended_by_server, "the server hung up before max_call_seconds"

        assert caller.wait_ended(max_seconds + 3), "the server never hung up"
        assert caller.ended_by_server
        assert caller.ended_at is not None and caller.answered_at is not None
        lasted = caller.ended_at - caller.answered_at
        assert max_seconds - 0.5 <= lasted <= max_seconds + 1.5, f"BYE after {lasted:.2f} s"
        time.sleep(0.1)
        assert caller.sent[-1][1] <= caller.ended_at + FRAME_SECONDS, "media outlived the BYE"
        caller.hangup()  # nothing left to hang up: must not send a BYE nor raise
        assert {p.pt for p in caller.received} == {8}
        assert_paced(caller)

        record = one_record(srv)
        assert record["endedBy"] == "system"
        assert record["codec"] == "PCMA"
        events = record["events"]
        assert isinstance(events, list)
        assert [(e["digit"], e["method"]) for e in events if e["type"] == "dtmf"] == [
            ("5", "rfc4733")
        ]
        rate, recording = caller_channel(srv.data_dir / "recordings" / f"{record['callId']}.wav")
        assert_contains(recording, resample(utterance, 8000, rate), rate,
                        starts_within=(0.0, 1.0), what="the caller's audio in the recording")


def next_request(uas: SipWire, method: str, timeout: float = 3.0) -> SipRequest:
    """The next request ``method`` the caller sent the scripted UAS."""
    deadline = time.monotonic() + timeout
    exchange = Exchange()
    while True:
        for raw in exchange.requests:
            request = SipRequest.parse(raw)
            if request.method == method:
                return request
        exchange.requests.clear()
        if uas.receive(deadline, exchange) is None:
            raise AssertionError(f"no {method} from the caller in {timeout}s")


def final_response(uas: SipWire, method: str, timeout: float = 3.0) -> SipResponse:
    deadline = time.monotonic() + timeout
    exchange = Exchange()
    while True:
        got = uas.receive(deadline, exchange)
        if got is None:
            raise AssertionError(f"no final answer to {method} in {timeout}s")
        for response in got:
            if response.is_final and response.cseq[1] == method:
                return response


def drain(sock: socket.socket) -> list[RtpPacket]:
    """Every RTP packet queued on the non-blocking ``sock`` (loopback delivers a datagram
    before ``sendto`` returns, so this is everything sent so far)."""
    packets = []
    while True:
        try:
            packets.append(RtpPacket.parse(sock.recv(2048)))
        except BlockingIOError:
            return packets


def rtp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def test_a_digit_keeps_the_media_clock_and_in_dialog_requests_are_answered() -> None:
    uas = SipWire(9)  # aimed at the caller once it exists
    with uas, rtp_socket() as rtp_a, rtp_socket() as rtp_b, RtpCaller(uas.local[1]) as caller:
        uas.remote = caller.sip_address
        placing = threading.Thread(target=caller.call, kwargs={"timeout": 5})
        placing.start()
        invite = next_request(uas, "INVITE")
        offer = parse_sdp_audio(invite.body)
        assert offer.payload_types == (0, 8, 101)
        assert b"a=ptime:20" in invite.body and b"a=fmtp:101 0-16" in invite.body
        contact = [("Contact", f"<sip:uas@127.0.0.1:{uas.local[1]}>")]
        uas.send(invite.response(100, "Trying"))
        uas.send(invite.response(183, "Session Progress", to_tag="uas1"))
        uas.send(invite.response(
            200, "OK", to_tag="uas1", headers=contact, content_type="application/sdp",
            body=sdp_offer("127.0.0.1", rtp_a.getsockname()[1], payload_types=(0, 101)),
        ))
        ack = next_request(uas, "ACK")
        placing.join(5)
        assert not placing.is_alive()
        assert ack.uri == f"sip:uas@127.0.0.1:{uas.local[1]}", "ACK goes to the Contact"
        assert ack.call_id == invite.call_id and ack.cseq == (1, "ACK")
        assert "tag=uas1" in (ack.header("To") or "")
        assert caller.remote_rtp == ("127.0.0.1", rtp_a.getsockname()[1])

        caller.start_media()
        time.sleep(0.1)
        caller.dtmf("7", duration_ms=60)
        time.sleep(0.1)
        packets = drain(rtp_a)
        first = packets[0]
        assert first.marker and first.payload_type == 0
        assert [(p.sequence_number - first.sequence_number) & 0xFFFF for p in packets] == list(
            range(len(packets))
        ), "sequence numbers are not continuous"
        events = [p for p in packets if p.payload_type == 101]
        audio = [p for p in packets if p.payload_type == 0]
        assert len(audio) + len(events) == len(packets)
        assert [p.marker for p in events] == [True] + [False] * 5
        tick = (events[0].sequence_number - first.sequence_number) & 0xFFFF
        start_ts = (first.timestamp + tick * FRAME_SAMPLES) & 0xFFFFFFFF
        assert {p.timestamp for p in events} == {start_ts}, "every event packet has its start"
        parsed = [DtmfEvent.parse(p.payload) for p in events]
        assert [(e.digit, e.end, e.duration) for e in parsed] == [
            ("7", False, 160), ("7", False, 320), ("7", False, 480),
        ] + [("7", True, 480)] * 3
        for p in audio:  # the audio after the digit is back on the 20 ms clock
            n = (p.sequence_number - first.sequence_number) & 0xFFFF
            assert p.timestamp == (first.timestamp + n * FRAME_SAMPLES) & 0xFFFFFFFF
            assert p.marker == (p is first)
        assert audio[-1].sequence_number != events[-1].sequence_number, "audio resumed"

        caller_tag = (invite.header("From") or "").rpartition("tag=")[2]
        moved = sdp_offer("127.0.0.1", rtp_b.getsockname()[1], payload_types=(0, 101))
        reinvite = uas.request("INVITE", uri=f"sip:rtpcaller@{caller.sip_address[0]}",
                               call_id=invite.call_id, from_tag="uas1", to_tag=caller_tag,
                               body=moved, content_type="application/sdp")
        uas.send(reinvite.data)
        answer = final_response(uas, "INVITE")
        assert answer.status == 200
        assert answer.body == invite.body, "a re-INVITE is answered with the same SDP"
        uas.send(uas.request("ACK", call_id=invite.call_id, from_tag="uas1",
                             to_tag=caller_tag).data)
        time.sleep(0.1)
        assert caller.remote_rtp == ("127.0.0.1", rtp_b.getsockname()[1])
        assert len(drain(rtp_b)) >= 3, "media did not follow the re-INVITE"

        bye = uas.request("BYE", call_id=invite.call_id, cseq=2, from_tag="uas1",
                          to_tag=caller_tag)
        uas.send(bye.data)
        assert final_response(uas, "BYE").status == 200
        assert caller.wait_ended(1) and caller.ended_by_server
        assert caller.ended_at is not None
        drain(rtp_b)  # what was in flight when the BYE came
        time.sleep(0.1)
        assert drain(rtp_b) == [], "media kept flowing after the server's BYE"
        assert_paced(caller)
