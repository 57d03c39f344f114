"""The bot leg end to end: a SIPp caller walks the demo flow to its agent node by DTMF,
the hub queues the call, and when nobody takes it the caller hears the fallback branch."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.media.g711 import ulaw_decode, ulaw_encode
from hitl_sip.media.rtp import RtpPacket
from hitl_sip.media.wav import frames, resample
from hitl_sip.speech.tts.espeak_engine import EspeakTts
from hitl_sip.testing.pcap import rtp_stream_packets, write_udp_pcap
from tests.support.audio import assert_contains
from tests.support.net import UdpSniffer, free_port_pair
from tests.support.server import Server, running_server
from tests.support.sipp import SCENARIOS, SippResult, finish, run_sipp

pytestmark = pytest.mark.sipp

API_KEY = "test-api-key-0123456789"
FALLBACK = "All our agents are busy right now. Please call again later. Goodbye."


def get_json(server: Server, path: str) -> Any:
    req = urllib.request.Request(server.http_url + path, headers={"X-Api-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00"))


def test_dtmf_reaches_the_agent_node_and_the_queue_timeout_runs_the_fallback(
    tmp_path: Path,
) -> None:
    with running_server(
        tmp_path, extra={"routing": {"queue_timeout": 2}, "api": {"keys": [API_KEY]}}
    ) as srv:
        media_port = free_port_pair()
        with UdpSniffer(media_port) as sniffer:
            result = run_sipp("bot_dtmf_agent", srv.sip_port(), tmp_path, media_port=media_port,
                              duration_ms=9800, timeout=60)
        assert isinstance(result, SippResult)
        assert result.ok, result.explain() + srv.log()
        srv.wait_for(lambda: len(srv.call_records()) == 1, what="call record")
        record = srv.call_records()[0]
        assert record["endedBy"] == "system", "the flow's hangup node ends the call"

        events = record["events"]
        dtmf = next(e for e in events if e["type"] == "dtmf")
        queued = next(e for e in events if e["type"] == "state" and e["state"] == "queued")
        assert dtmf["digit"] == "0"
        delay = (at(queued) - at(dtmf)).total_seconds()
        assert 0 <= delay < 1.0, f"QUEUED {delay:.2f}s after the digit"
        states = [e["state"] for e in events if e["type"] == "state"]
        assert states == ["bot", "queued", "bot", "ended"]

        thread = get_json(srv, f"/api/threads/{record['threadId']}")
        turns = [(t["role"], t["text"]) for t in thread["turns"]]
        assert [r for r, _ in turns] == ["bot", "bot", "caller", "bot", "bot"], turns
        assert turns[2] == ("caller", "[pressed 0]")
        assert turns[3][1] == "Please hold while I connect you to an agent."
        assert turns[4][1] == FALLBACK

    # the caller heard the fallback prompt after the queue timeout
    packets = sorted((RtpPacket.parse(p) for p in sniffer.packets),
                     key=lambda p: p.sequence_number)
    heard = ulaw_decode(b"".join(p.payload for p in packets if p.payload_type == 0))
    fallback = asyncio.run(EspeakTts().synthesize(FALLBACK, 8000))
    assert_contains(heard, fallback, 8000, starts_within=(9.0, 20.0),
                    what="fallback prompt heard by the caller")


HUMAN_SPEECH = Path("/usr/share/pocketsphinx/test/data/goforward.raw")  # pocketsphinx-testdata
KEYWORD_FLOW = """
name: keyword
start: menu
nodes:
  menu:
    type: ask
    prompt: "Where to?"
    timeout: 8
    retries: 0
    branches:
      - {keywords: [forward], next: agent}
    fail: bye
  agent: {type: agent, message: "Please hold.", fallback: bye}
  bye: {type: hangup, text: "Goodbye."}
"""


def human_speech_pcap(path: Path) -> None:
    """A human saying "go forward ten meters" (16 kHz raw) as PCMU RTP for SIPp."""
    pcm16 = HUMAN_SPEECH.read_bytes()
    pcm8 = resample(pcm16, 16000, 8000)
    payloads = [ulaw_encode(f) for f in frames(pcm8 + bytes(16000), 320)]
    write_udp_pcap(path, rtp_stream_packets(payloads, 0, 160, ssrc=0x5EED0042,
                                            start_seq=5000, start_ts=400000))


def test_a_spoken_keyword_takes_its_branch(tmp_path: Path) -> None:
    """Real SIP, real RTP, real pocketsphinx: a human voice (pocketsphinx-testdata; the
    embedded recogniser cannot read espeak voices) says the branch's keyword."""
    flow = tmp_path / "keyword.yaml"
    flow.write_text(KEYWORD_FLOW)
    pcap = tmp_path / "goforward.pcap"
    human_speech_pcap(pcap)
    scenario = tmp_path / "speech.xml"
    scenario.write_text((SCENARIOS / "bot_speech_agent.xml").read_text().replace(
        "rtp/pcap/representative_pcmu.pcap", str(pcap)))
    with running_server(
        tmp_path, extra={"routing": {"queue_timeout": 2}, "api": {"keys": [API_KEY]},
                         "bot": {"flow": str(flow)}}
    ) as srv:
        result = run_sipp(str(scenario), srv.sip_port(), tmp_path, duration_ms=1500,
                          timeout=60)
        assert isinstance(result, SippResult)
        assert result.ok, result.explain() + srv.log()
        srv.wait_for(lambda: len(srv.call_records()) == 1, what="call record")
        record = srv.call_records()[0]
        states = [e["state"] for e in record["events"] if e["type"] == "state"]
        assert states == ["bot", "queued", "bot", "ended"]
        thread = get_json(srv, f"/api/threads/{record['threadId']}")
        callers = [t["text"] for t in thread["turns"] if t["role"] == "caller"]
        assert len(callers) == 1
        assert "forward" in callers[0].lower(), callers


def api(server: Server, method: str, path: str, key: str | None = API_KEY,
        body: bytes = b"{}") -> tuple[int, Any]:
    headers = {"X-Api-Key": key} if key else {}
    req = urllib.request.Request(server.http_url + path, method=method, headers=headers,
                                 data=body if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rest_handoff_triggers_the_agent_node_of_a_live_call(tmp_path: Path) -> None:
    with running_server(tmp_path, extra={"api": {"keys": [API_KEY]}}) as srv:
        # a long call: on a loaded CI machine the steps below must finish before the BYE
        call = run_sipp("short_call", srv.sip_port(), tmp_path, duration_ms=15000,
                        background=True)
        assert not isinstance(call, SippResult)

        def states() -> list[str]:
            return [c["state"] for c in api(srv, "GET", "/api/calls")[1]["calls"]]

        srv.wait_for(lambda: len(api(srv, "GET", "/api/calls")[1]["calls"]) == 1,
                     what="the call in /api/calls")
        listed = api(srv, "GET", "/api/calls")[1]["calls"][0]
        assert listed["state"] == "bot"
        assert listed["caller"]["number"] == "+14155550100"
        assert listed["metadata"]["X-Twilio-CallSid"] == "CA0123456789abcdef0123456789abcdef"
        call_id = listed["callId"]
        assert api(srv, "POST", f"/api/calls/{call_id}/handoff", key=None)[0] == 401
        assert api(srv, "POST", "/api/calls/nope/handoff")[0] == 404
        for bad, why in ((b"[" * 5000 + b"]" * 5000, "nested deeper than"),
                         (b'{"reason": 7}', "reason: Input should be a valid string"),
                         (b'{"reason": "' + b"r" * 201 + b'"}', "reason: String should have"),
                         (b"\xff", "not UTF-8")):
            status, body = api(srv, "POST", f"/api/calls/{call_id}/handoff", body=bad)
            assert status == 400 and why in body["error"]["message"], (bad[:20], body)
        assert states() == ["bot"]
        status, body = api(srv, "POST", f"/api/calls/{call_id}/handoff")
        assert (status, body) == (200, {"ok": True})
        srv.wait_for(lambda: states() == ["queued"], what="the call queued")
        status, body = api(srv, "POST", f"/api/calls/{call_id}/handoff")
        assert status == 409 and body["error"]["code"] == "invalid_state"
        assert finish(call, tmp_path).ok
