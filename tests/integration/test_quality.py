"""Call quality you can see (issue 17): a clean caller and a lossy one (5 % of packets
dropped, 30 ms of RFC 3550 jitter: a line that delivers in bursts, RtpCaller's
``burst_jitter``) talk to an agent in turn; the agent's ``call_quality`` events (the
dashboard's badge) and the call records show the lossy caller's leg with its loss, its
jitter (20 ms at least) and a lower MOS than the clean one's, and ``/metrics`` has the
per-leg MOS histogram."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from hitl_sip.media.ice import install_host_filter
from hitl_sip.testing.agent import TestAgent, tone
from hitl_sip.testing.bursts import caller_source
from tests.integration.test_agents import PASSWORD, add_agent
from tests.support.rtpcaller import RtpCaller
from tests.support.server import ROOT, Server, running_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    install_host_filter(["127.0.0.1"])
    extra: dict[str, dict[str, Any]] = {
        "bot": {"flow": str(ROOT / "bench/flows/bridge.yaml")},
        "routing": {"queue_timeout": 60},
        "webrtc": {"codecs": ["pcmu"], "host_addresses": ["127.0.0.1"]},
    }
    with running_server(tmp_path_factory.mktemp("quality"), extra=extra) as server:
        add_agent(server.data_dir, "alice")
        yield server


async def talk(srv: Server, loss: float, jitter: float, seconds: float = 7.0) -> tuple[
        list[dict[str, Any]], str]:
    """One call through to alice for ``seconds`` from a caller whose line drops ``loss``
    of its packets and adds ``jitter`` seconds of RFC 3550 jitter; the call_quality events
    she got."""
    agent = TestAgent(srv.http_url, "alice", PASSWORD, source=tone(1000), codecs=("pcmu",))
    await agent.connect()
    caller = RtpCaller(srv.sip_port(), loss=loss, burst_jitter=jitter, seed=7)
    try:
        await asyncio.to_thread(caller.call, 10)
        caller.start_media(caller_source)
        offer = await agent.answer_next_call(limit=30)
        await agent.wait("call_connected", limit=15)
        seen = len(agent.events.get("call_quality", []))
        await agent.wait("call_quality", seen + 3, limit=seconds + 5)  # 3 reports: ~6 s
        await asyncio.to_thread(caller.hangup)
        await agent.wait("call_ended", limit=10)
    finally:
        await agent.close()
        await asyncio.to_thread(caller.close)
    return agent.events.get("call_quality", []), str(offer["callId"])


def caller_leg(report: dict[str, Any]) -> dict[str, Any]:
    return next(leg for leg in report["legs"] if leg["leg"] == "caller")


def test_a_lossy_caller_shows_a_lower_mos_than_a_clean_one(srv: Server) -> None:
    clean, clean_id = asyncio.run(talk(srv, 0.0, 0.0))
    lossy, lossy_id = asyncio.run(talk(srv, 0.05, 0.03))
    # the badge: every report after the first interval
    clean_mos = [caller_leg(r)["mos"] for r in clean[1:]]
    lossy_legs = [caller_leg(r) for r in lossy[1:]]
    lossy_mos = [leg["mos"] for leg in lossy_legs]
    print(f"caller leg MOS: clean {clean_mos}, lossy {lossy_mos}; lossy loss "
          f"{[leg['lossPct'] for leg in lossy_legs]} %, jitter "
          f"{[leg['jitterMs'] for leg in lossy_legs]} ms")
    assert min(clean_mos) >= 4.2, clean
    assert max(lossy_mos) < min(clean_mos) - 0.3, (clean, lossy)
    assert all(1.0 <= leg["lossPct"] <= 12.0 for leg in lossy_legs), lossy_legs
    assert all(leg["jitterMs"] >= 20.0 for leg in lossy_legs), lossy_legs
    assert all(r["callId"] in (clean_id, lossy_id) and r["mos"] <= caller_leg(r)["mos"]
               for r in clean + lossy)
    assert {leg["leg"] for r in clean for leg in r["legs"]} == {"caller", "agent"}
    assert set(clean[0]) == {"callId", "mos", "legs"}  # as the dashboard reads them
    assert set(clean[0]["legs"][0]) == {"leg", "lossPct", "latePct", "jitterMs", "mos"}
    # the call records keep each leg's means
    srv.wait_for(lambda: len(srv.call_records()) >= 2, 15, what="the call records")
    records = {r["callId"]: r for r in srv.call_records()}
    assert records[lossy_id]["quality"]["caller"]["mos"] < (
        records[clean_id]["quality"]["caller"]["mos"] - 0.3)
    assert records[clean_id]["quality"]["agent"]["mos"] >= 4.2
    # nothing lost on loopback, the first interval included (the relay's primer and the
    # trunk's stream are one stream to pjmedia: no sequence jump counted as lost)
    assert records[clean_id]["quality"]["caller"]["loss_pct"] == 0.0, records[clean_id]
    assert caller_leg(clean[0])["lossPct"] == 0.0, clean[0]
    # /metrics: the MOS histogram per leg kind
    srv.wait_for(lambda: srv.metric("hitl_sip_call_mos_count", leg="caller") >= 2, 5,
                 what="both calls in the MOS histogram")
