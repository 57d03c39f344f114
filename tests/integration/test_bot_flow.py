"""The bot leg end to end: a SIPp caller walks the demo flow to its agent node by DTMF,
the hub queues the call, and when nobody takes it the caller hears the fallback branch."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.media.g711 import ulaw_decode
from hitl_sip.media.rtp import RtpPacket
from hitl_sip.speech.tts.espeak_engine import EspeakTts
from tests.support.audio import assert_contains
from tests.support.net import UdpSniffer, free_port_pair
from tests.support.server import Server, running_server
from tests.support.sipp import SippResult, run_sipp

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
