"""Agents on the ``/agent`` namespace (PROTOCOL.md §1) against a real hub, worker and SIPp
caller: login, presence, ring-all fan-out, first accept wins, agent hang-up, refusals."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.support.server import ROOT, Server, running_server
from tests.support.sipp import SippResult, run_sipp

pytestmark = pytest.mark.sipp

PASSWORD = "correct horse battery"


def add_agent(data_dir: Path, name: str, role: str = "agent") -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hitl_sip.cli", "agents", "add", name, "--role", role,
         "--data-dir", str(data_dir)],
        input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr


def login(server: Server, name: str, password: str = PASSWORD) -> tuple[int, Any]:
    body = json.dumps({"username": name, "password": password}).encode()
    req = urllib.request.Request(server.http_url + "/api/login", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5, context=server.ssl_context) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Agent:
    """A dashboard stand-in: a python-socketio client recording what the hub sends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.arrived = asyncio.Event()
        for event in ("agent_state", "incoming_call", "call_cancelled", "call_ended",
                      "call_connected", "transcript", "connect_error"):
            self.sio.on(event, self._recorder(event), namespace="/agent")

    def _recorder(self, event: str) -> Any:
        async def record(data: Any) -> None:
            self.events.setdefault(event, []).append(data)
            self.arrived.set()
        return record

    async def connect(self, server: Server, token: str | None,
                      headers: dict[str, str] | None = None) -> None:
        auth = {"token": token} if token is not None else {}
        await self.sio.connect(server.http_url, namespaces=["/agent"], auth=auth,
                               transports=["websocket"], headers=headers or {})

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace="/agent", timeout=5)

    async def wait(self, event: str, count: int = 1, limit: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(limit):
            while len(self.events.get(event, [])) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events[event][count - 1]


def test_login_refuses_a_wrong_password_and_an_unknown_agent_alike(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        add_agent(srv.data_dir, "alice")
        ok_status, ok = login(srv, "alice")
        assert ok_status == 200 and ok["token"] and ok["expiresAt"]
        wrong = login(srv, "alice", "wrong password")
        unknown = login(srv, "mallory", "wrong password")
        assert wrong[0] == unknown[0] == 401
        assert wrong[1] == unknown[1]


def test_connect_is_refused_without_a_valid_token(tmp_path: Path) -> None:
    async def attempt(server: Server, token: str | None, origin: str | None = None) -> str:
        agent = Agent("x")
        try:
            await agent.connect(server, token, {"Origin": origin} if origin else None)
        except socketio.exceptions.ConnectionError:
            return str(agent.events.get("connect_error"))
        await agent.sio.disconnect()
        return "connected"

    with running_server(tmp_path) as srv:
        add_agent(srv.data_dir, "alice")
        token = login(srv, "alice")[1]["token"]
        head, _, sig = token.rpartition(".")
        forged = head + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
        for bad in (None, "", "garbage", forged):
            assert "unauthorized" in asyncio.run(attempt(srv, bad)), bad
        assert asyncio.run(attempt(srv, token)) == "connected"
        # a browser page elsewhere may not use the token (api.agent_origins empty: own origin)
        assert asyncio.run(attempt(srv, token, "https://evil.example")) != "connected"
        assert asyncio.run(attempt(srv, token, srv.http_url)) == "connected"


async def ring_two_agents(server: Server, tmp_path: Path) -> dict[str, Any]:
    alice, bob = Agent("alice"), Agent("bob")
    out: dict[str, Any] = {}
    for agent in (alice, bob):
        await agent.connect(server, login(server, agent.name)[1]["token"])
        state = await agent.wait("agent_state")
        assert state["status"] == "available" and state["activeCallId"] is None
    out["bad_status"] = await alice.call("set_status", {"status": "dancing"})
    sipp = asyncio.create_task(asyncio.to_thread(
        run_sipp, "bot_dtmf_agent", server.sip_port(), tmp_path, duration_ms=9800, timeout=60))
    offer_a = await alice.wait("incoming_call")
    offer_b = await bob.wait("incoming_call")
    out["offers"] = (offer_a, offer_b)
    call_id = offer_a["callId"]
    out["malformed"] = await bob.call("accept_call", {"callId": 42})
    accepts = await asyncio.gather(alice.call("accept_call", {"callId": call_id}),
                                   bob.call("accept_call", {"callId": call_id}))
    out["accepts"] = accepts
    winner, loser = (alice, bob) if accepts[0].get("ok") else (bob, alice)
    out["cancelled"] = await loser.wait("call_cancelled")
    out["loser_hangup"] = await loser.call("hangup", {"callId": call_id})
    out["busy_state"] = await winner.wait("agent_state", 2)
    out["hangup"] = await winner.call("hangup", {"callId": call_id})
    out["ended"] = await winner.wait("call_ended")
    result = await sipp
    assert isinstance(result, SippResult)
    out["sipp_ok"] = result.ok or result.explain()
    for agent in (alice, bob):
        await agent.sio.disconnect()
    return out


def test_queued_call_rings_every_agent_and_exactly_one_accept_wins(tmp_path: Path) -> None:
    extra = {"routing": {"queue_timeout": 30, "ring_timeout": 20}}
    with running_server(tmp_path, extra=extra) as srv:
        add_agent(srv.data_dir, "alice")
        add_agent(srv.data_dir, "bob")
        out = asyncio.run(ring_two_agents(srv, tmp_path))
        assert out["sipp_ok"] is True, out["sipp_ok"]
        assert out["bad_status"]["error"]["code"] == "bad_request"
        a, b = out["offers"]
        assert a["callId"] == b["callId"] and a["threadId"] == b["threadId"]
        assert a["caller"]["number"] == "+14155550100"
        roles = [t["role"] for t in a["botTranscript"]]
        assert roles[:3] == ["bot", "bot", "caller"]
        assert a["botTranscript"][2]["text"] == "[pressed 0]"
        assert out["malformed"]["error"]["code"] == "bad_request"
        oks = [r.get("ok") for r in out["accepts"]]
        assert sorted(map(bool, oks)) == [False, True], out["accepts"]
        lost = next(r for r in out["accepts"] if not r.get("ok"))
        assert lost["error"]["code"] in ("already_answered", "forbidden")
        assert out["cancelled"]["reason"] == "answered_elsewhere"
        assert out["loser_hangup"]["error"]["code"] == "forbidden"
        assert out["busy_state"]["status"] == "busy"
        assert out["hangup"] == {"ok": True}
        assert out["ended"]["callId"] == a["callId"]
        srv.wait_for(lambda: len(srv.call_records()) == 1, what="call record")
        states = [e["state"] for e in srv.call_records()[0]["events"] if e["type"] == "state"]
        assert states == ["bot", "queued", "human", "ended"]


async def accept_and_negotiate(server: Server, tmp_path: Path) -> dict[str, Any]:
    from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: PLC0415

    from hitl_sip.testing.agent import MicrophoneTrack, silence  # noqa: PLC0415

    alice = Agent("alice")
    await alice.connect(server, login(server, "alice")[1]["token"])
    sipp = asyncio.create_task(asyncio.to_thread(
        run_sipp, "bot_dtmf_agent", server.sip_port(), tmp_path, duration_ms=9800, timeout=60))
    offer = await alice.wait("incoming_call")
    call_id = offer["callId"]
    out: dict[str, Any] = {"call_id": call_id, "early": await alice.call(
        "webrtc_offer", {"callId": call_id, "sdp": "v=0\r\n"})}
    assert (await alice.call("accept_call", {"callId": call_id})) == {"ok": True}
    browser = RTCPeerConnection()
    browser.addTransceiver(MicrophoneTrack(silence), direction="sendrecv")  # as a browser does
    connected = asyncio.Event()

    @browser.on("connectionstatechange")  # type: ignore[untyped-decorator]
    def on_state() -> None:
        if browser.connectionState == "connected":
            connected.set()

    await browser.setLocalDescription(await browser.createOffer())
    out["bad_sdp"] = await alice.call("webrtc_offer", {"callId": call_id, "sdp": "nonsense"})
    ack = await alice.call("webrtc_offer", {"callId": call_id,
                                            "sdp": browser.localDescription.sdp})
    out["answer_ack"] = ack
    await browser.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
    out["candidate_ack"] = await alice.call("webrtc_candidate", {
        "callId": call_id, "candidate": None, "sdpMid": "0", "sdpMLineIndex": 0})
    await asyncio.wait_for(connected.wait(), 15)
    out["connected"] = True
    out["call_connected"] = await alice.wait("call_connected")
    await alice.call("hangup", {"callId": call_id})
    await browser.close()
    result = await sipp
    assert isinstance(result, SippResult)
    out["sipp_ok"] = result.ok or result.explain()
    await alice.sio.disconnect()
    return out


def test_the_accepting_agent_s_webrtc_offer_reaches_the_worker_and_connects(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, extra={"routing": {"queue_timeout": 30}}) as srv:
        add_agent(srv.data_dir, "alice")
        out = asyncio.run(accept_and_negotiate(srv, tmp_path))
        assert out["early"]["error"]["code"] == "invalid_state", "offer before accepting"
        assert out["bad_sdp"]["error"]["code"] == "bad_request"
        assert out["answer_ack"]["ok"] is True
        assert out["answer_ack"]["sdp"].startswith("v=0")
        assert "a=candidate" in out["answer_ack"]["sdp"]
        assert out["candidate_ack"] == {"ok": True}
        assert out["connected"] is True
        assert out["call_connected"]["callId"] == out["call_id"]
        assert out["call_connected"]["at"]
        assert out["sipp_ok"] is True, out["sipp_ok"]


async def decline_accept_vanish_hangup(server: Server, tmp_path: Path) -> dict[str, Any]:
    alice, bob = Agent("alice"), Agent("bob")
    for agent in (alice, bob):
        await agent.connect(server, login(server, agent.name)[1]["token"])
    sipp = asyncio.create_task(asyncio.to_thread(
        run_sipp, "bot_agent_then_bye", server.sip_port(), tmp_path, duration_ms=9800,
        timeout=60))
    call_id = (await alice.wait("incoming_call"))["callId"]
    await bob.wait("incoming_call")
    out: dict[str, Any] = {"decline": await alice.call("decline_call", {"callId": call_id})}
    out["declined"] = await alice.wait("call_cancelled")
    out["accept"] = await bob.call("accept_call", {"callId": call_id})
    await bob.sio.disconnect()  # bob's dashboard vanishes mid-call
    out["reoffer"] = await alice.wait("incoming_call", 2)  # offered again after the grace
    out["hangup_cancel"] = await alice.wait("call_cancelled", 2)  # the caller hangs up
    result = await sipp
    assert isinstance(result, SippResult)
    out["sipp_ok"] = result.ok or result.explain()
    await alice.sio.disconnect()
    return out


def test_decline_then_the_winner_vanishing_requeues_and_caller_hangup_cancels(
    tmp_path: Path,
) -> None:
    extra = {"routing": {"queue_timeout": 60, "ring_timeout": 30, "reconnect_grace": 1}}
    with running_server(tmp_path, extra=extra) as srv:
        add_agent(srv.data_dir, "alice")
        add_agent(srv.data_dir, "bob")
        out = asyncio.run(decline_accept_vanish_hangup(srv, tmp_path))
        assert out["decline"] == {"ok": True}
        assert out["declined"]["reason"] == "declined"
        assert out["accept"] == {"ok": True}
        assert out["reoffer"]["callId"] == out["declined"]["callId"]
        assert out["hangup_cancel"]["reason"] == "caller_hangup"
        assert out["sipp_ok"] is True, out["sipp_ok"]
        srv.wait_for(lambda: len(srv.call_records()) == 1, what="call record")
        states = [e["state"] for e in srv.call_records()[0]["events"] if e["type"] == "state"]
        assert states == ["bot", "queued", "human", "queued", "ended"]


async def ring_out_then_next(server: Server, tmp_path: Path) -> dict[str, Any]:
    alice, bob = Agent("alice"), Agent("bob")
    for agent in (alice, bob):
        await agent.connect(server, login(server, agent.name)[1]["token"])
        await agent.wait("agent_state")
    sipp = asyncio.create_task(asyncio.to_thread(
        run_sipp, "bot_agent_then_bye", server.sip_port(), tmp_path, duration_ms=9800,
        timeout=60))
    first, second = await asyncio.wait_for(_first_ringing(alice, bob), 30)
    out: dict[str, Any] = {"first_cancel": await first.wait("call_cancelled")}
    out["second_offer"] = await second.wait("incoming_call")
    out["first_offers"] = len(first.events.get("incoming_call", []))
    out["second_decline"] = await second.call("decline_call",
                                              {"callId": out["second_offer"]["callId"]})
    result = await sipp
    assert isinstance(result, SippResult)
    out["sipp_ok"] = result.ok or result.explain()
    for agent in (alice, bob):
        await agent.sio.disconnect()
    return out


async def _first_ringing(a: Agent, b: Agent) -> tuple[Agent, Agent]:
    while True:
        await asyncio.sleep(0.05)
        if a.events.get("incoming_call"):
            return a, b
        if b.events.get("incoming_call"):
            return b, a


def test_round_robin_moves_to_the_next_agent_after_a_ring_timeout(tmp_path: Path) -> None:
    extra = {"routing": {"strategy": "round_robin", "ring_timeout": 2, "queue_timeout": 60}}
    with running_server(tmp_path, extra=extra) as srv:
        add_agent(srv.data_dir, "alice")
        add_agent(srv.data_dir, "bob")
        out = asyncio.run(ring_out_then_next(srv, tmp_path))
        assert out["first_cancel"]["reason"] == "ring_timeout"
        assert out["second_offer"]["callId"] == out["first_cancel"]["callId"]
        assert out["first_offers"] == 1, "one agent at a time"
        assert out["second_decline"] == {"ok": True}
        assert out["sipp_ok"] is True, out["sipp_ok"]
