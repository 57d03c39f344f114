"""SIPp drives a real ``hitl-sip serve`` (hub + pjsua2 worker) on free loopback ports."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.media.g711 import ulaw_decode
from hitl_sip.media.rtp import RtpPacket
from hitl_sip.media.wav import read_wav, resample
from tests.support.audio import assert_contains, caller_channel
from tests.support.net import UdpSniffer, free_port_pair
from tests.support.server import ROOT, Server, running_server
from tests.support.sipp import SippResult, finish, run_sipp

pytestmark = pytest.mark.sipp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("srv")) as srv:
        yield srv


def sipp(scenario: str, server: Server, tmp: Path, **kw: Any) -> SippResult:
    result = run_sipp(scenario, server.sip_port(), tmp, **kw)
    assert isinstance(result, SippResult)
    return result


def record_for(server: Server, sip_call_id_part: str | None = None) -> dict[str, Any]:
    records = server.call_records()
    assert records, "no call record written"
    return records[-1]


def wait_record_count(server: Server, n: int) -> None:
    server.wait_for(lambda: len(server.call_records()) >= n, what=f"{n} call records")


def test_basic_call_carries_audio_both_ways(server: Server, tmp_path: Path) -> None:
    before = len(server.call_records())
    media_port = free_port_pair()
    with UdpSniffer(media_port) as sniffer:
        result = sipp("basic_call", server, tmp_path, media_port=media_port)
    assert result.ok, result.explain()
    wait_record_count(server, before + 1)
    record = record_for(server)
    assert record["outcome"] == "completed"
    assert record["endedBy"] == "caller"
    assert record["codec"] == "PCMU"
    md = record["metadata"]
    assert md["caller_number"] == "+14155550100"
    assert md["called_number"] == "+14155550123"
    assert md["headers"]["X-Twilio-CallSid"] == "CA0123456789abcdef0123456789abcdef"

    # caller -> server: the worker's recording contains what SIPp played
    rate, recording = caller_channel(server.data_dir / "recordings" / f"{record['callId']}.wav")
    ref_rate, utterance = read_wav(ROOT / "rtp/caller/agent_bill_8k.wav")
    assert_contains(recording, resample(utterance, ref_rate, rate), rate,
                    starts_within=(0.0, 1.0), what="caller audio in the worker's recording")

    # server -> caller: the RTP the server sent to SIPp's media port is the greeting
    packets = [RtpPacket.parse(p) for p in sniffer.packets]
    pcmu = [p for p in packets if p.payload_type == 0]
    assert len(pcmu) > 300, f"only {len(pcmu)} RTP packets reached the caller"
    heard = ulaw_decode(b"".join(p.payload for p in sorted(pcmu, key=lambda p: p.sequence_number)))
    g_rate, greeting = read_wav(ROOT / "rtp/prompts/greeting.wav")
    assert_contains(heard, resample(greeting, g_rate, 8000), 8000, starts_within=(0.0, 1.0),
                    what="greeting heard by the caller")
    server.wait_for(lambda: server.metric("hitl_sip_calls_total", outcome="completed") >= 1,
                    what="metrics after the call")
    # the bot's prompt reached the wire without gaps (a frame missing when the clock asked)
    assert server.metric("hitl_sip_pcm_underruns_total", direction="to_caller") < 5


def test_rfc4733_dtmf_with_payload_type_101_is_delivered(server: Server, tmp_path: Path) -> None:
    before = len(server.call_records())
    result = sipp("dtmf_pt101", server, tmp_path)
    assert result.ok, result.explain()
    wait_record_count(server, before + 1)
    digits = [e["digit"] for e in record_for(server)["events"] if e["type"] == "dtmf"]
    assert digits == ["1", "5"]


def test_dtmf_with_payload_type_96_and_no_marker_bit_is_delivered(
    server: Server, tmp_path: Path
) -> None:
    before = len(server.call_records())
    result = sipp("dtmf_pt96", server, tmp_path)
    assert result.ok, result.explain()
    wait_record_count(server, before + 1)
    digits = [e["digit"] for e in record_for(server)["events"] if e["type"] == "dtmf"]
    assert digits == ["0"]


def test_hold_is_answered_recvonly_and_unhold_restores(server: Server, tmp_path: Path) -> None:
    before = len(server.call_records())
    result = sipp("hold", server, tmp_path)
    assert result.ok, result.explain()
    wait_record_count(server, before + 1)
    kinds = [e["type"] for e in record_for(server)["events"] if e["type"] in ("hold", "unhold")]
    assert kinds == ["hold", "unhold"]


def test_options_is_answered_200(server: Server, tmp_path: Path) -> None:
    result = sipp("options", server, tmp_path)
    assert result.ok, result.explain()


def test_offer_without_a_common_codec_gets_488(server: Server, tmp_path: Path) -> None:
    result = sipp("codec_488", server, tmp_path)
    assert result.ok, result.explain()
    assert server.health()[0] == 200


def test_calls_over_tcp_work(server: Server, tmp_path: Path) -> None:
    before = len(server.call_records())
    result = run_sipp("short_call", server.sip_port(transport="tcp"), tmp_path, transport="t1")
    assert isinstance(result, SippResult)
    assert result.ok, result.explain()
    wait_record_count(server, before + 1)
    assert record_for(server)["transport"] == "tcp"


def test_cancel_before_answer_ends_the_call_as_cancelled(tmp_path: Path) -> None:
    with running_server(tmp_path, worker={"answer_delay_ms": 3000}) as srv:
        result = sipp("cancel", srv, tmp_path)
        assert result.ok, result.explain()
        srv.wait_for(lambda: srv.metric("hitl_sip_calls_total", outcome="cancelled") == 1,
                     what="cancelled call counted")
        records = srv.call_records()
        assert [r["outcome"] for r in records] == ["cancelled"]


def test_source_outside_the_allow_list_gets_403(tmp_path: Path) -> None:
    profile = tmp_path / "only-127-0-0-1.toml"
    profile.write_text('name = "only-127-0-0-1"\n[allow]\ncidrs = ["127.0.0.1/32"]\n')
    with running_server(tmp_path, profile=str(profile)) as srv:
        denied = sipp("expect_403", srv, tmp_path, local_ip="127.0.0.2")
        assert denied.ok, denied.explain()
        allowed = sipp("short_call", srv, tmp_path, local_ip="127.0.0.1")
        assert allowed.ok, allowed.explain()
        # the SIP front refuses it before any worker sees it
        assert "INVITE from 127.0.0.2 refused: not in the trunk allow-list" in srv.log()
        assert srv.metric("hitl_sip_calls_total", outcome="rejected_forbidden") == 0


def test_calls_beyond_the_worker_limit_get_503_while_admitted_ones_complete(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, worker={"max_calls": 2, "retry_after": 17}) as srv:
        port = srv.sip_port()
        long_calls = run_sipp("long_call", port, tmp_path, calls=2, limit=2, rate=50,
                              background=True)
        assert isinstance(long_calls, subprocess.Popen)
        srv.wait_for(lambda: srv.health()[1]["activeCalls"] == 2, what="2 active calls")
        # a burst of 10 simultaneous INVITEs: every one must get 503 (pjsua alone says 486)
        rejected = sipp("expect_503", srv, tmp_path, calls=10, limit=10, rate=1000)
        assert rejected.ok, rejected.explain()
        admitted = finish(long_calls, tmp_path)
        assert admitted.ok, admitted.explain()
        srv.wait_for(
            lambda: srv.metric("hitl_sip_calls_total", outcome="completed") == 2,
            what="2 completed",
        )
        # the front knows the worker is full (dispatcher maxload) and answers for it; an
        # INVITE that reaches the worker anyway gets the worker's own 503
        front = srv.log().count("every worker is full or down: 503")
        worker = srv.metric("hitl_sip_calls_total", outcome="rejected_capacity")
        assert front + worker == 10, (front, worker)


def test_server_ends_a_call_that_reaches_max_duration(tmp_path: Path) -> None:
    with running_server(tmp_path, worker={"max_call_seconds": 2}) as srv:
        result = sipp("server_bye", srv, tmp_path)
        assert result.ok, result.explain()
        wait_record_count(srv, 1)
        record = srv.call_records()[-1]
        assert record["endedBy"] == "system"
        assert record["outcome"] == "completed"


def test_metrics_expose_calls_responses_and_pcm_buffer_health(
    server: Server, tmp_path: Path
) -> None:
    result = sipp("short_call", server, tmp_path)
    assert result.ok, result.explain()
    server.wait_for(lambda: server.metric("hitl_sip_calls_total", outcome="completed") >= 1,
                    what="a completed call in /metrics")
    text = server.metrics_text()
    for family in ("hitl_sip_active_calls", "hitl_sip_calls_total",
                   "hitl_sip_sip_responses_sent_total", "hitl_sip_pcm_underruns_total",
                   "hitl_sip_pcm_overruns_total"):
        assert f"# TYPE {family} " in text, family
    assert server.metric("hitl_sip_sip_responses_sent_total", **{"class": "2xx"}) >= 1
    assert server.metric("hitl_sip_sip_responses_sent_total", **{"class": "1xx"}) >= 1
    for direction in ("to_caller", "from_caller"):
        # every direction is exported from the start, zero or not (labels sorted by name)
        assert f'hitl_sip_pcm_underruns_total{{direction="{direction}",worker="w1"}}' in text
        assert f'hitl_sip_pcm_overruns_total{{direction="{direction}",worker="w1"}}' in text
    assert server.metric("hitl_sip_pcm_overruns_total") == 0
