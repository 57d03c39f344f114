"""Roles and sessions against a real hub, worker and SIPp caller (PROTOCOL.md §6, issue 15):
an agent sees only the calls offered to it and their threads, a supervisor sees all, an
admin manages accounts; removing an account, changing its role or logging out ends its
sessions at once (REST 401, socket closed within a second) and a removed agent is never
offered a call again; login reads JSON only and a flood of refused logins from one address
never locks the agent out from another."""

from __future__ import annotations

import asyncio
import http.client
import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.integration.test_agents import PASSWORD, Agent, login
from tests.support.server import ROOT, Server, running_server
from tests.support.sipp import SippResult, run_sipp

pytestmark = pytest.mark.sipp


def cli(data_dir: Path, *argv: str, password: str = PASSWORD) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hitl_sip.cli", "agents", *argv, "--data-dir", str(data_dir)],
        input=password + "\n", capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rest(server: Server, method: str, path: str, token: str | None,
         body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.http_url + path, data=data, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def on_disconnect(agent: Agent) -> asyncio.Event:
    """Set when the hub closes ``agent``'s /agent socket."""
    gone = asyncio.Event()

    async def handler(*_: Any) -> None:
        gone.set()
    agent.sio.on("disconnect", handler, namespace="/agent")
    return gone


async def disconnected_within(gone: asyncio.Event, limit: float) -> float:
    """Seconds until ``gone`` is set (fails after ``limit``)."""
    t0 = time.monotonic()
    async with asyncio.timeout(limit):
        await gone.wait()
    return time.monotonic() - t0


async def refused_connect(server: Server, name: str, token: str) -> str:
    """What the hub said to a /agent socket opening with ``token`` ("connected" if it let
    it in)."""
    agent = Agent(name)
    try:
        await agent.connect(server, token)
    except socketio.exceptions.ConnectionError:
        return str(agent.events.get("connect_error"))
    await agent.sio.disconnect()
    return "connected"


async def offer_other_than(agent: Agent, call_id: str, limit: float = 30) -> dict[str, Any]:
    """The first ``incoming_call`` ``agent`` got for a call other than ``call_id``."""
    async with asyncio.timeout(limit):
        while True:
            agent.arrived.clear()
            for offer in agent.events.get("incoming_call", []):
                if offer["callId"] != call_id:
                    return offer
            await agent.arrived.wait()


async def scenario(srv: Server, tmp_path: Path) -> dict[str, Any]:
    tokens = {name: login(srv, name)[1]["token"] for name in ("alice", "carol", "sue", "root")}
    alice, carol, sue = Agent("alice"), Agent("carol"), Agent("sue")
    gone = {}
    for agent in (alice, carol, sue):
        gone[agent.name] = on_disconnect(agent)
        await agent.connect(srv, tokens[agent.name])
        await agent.wait("agent_state")
    out: dict[str, Any] = {"roles": {a.name: a.events["agent_state"][0]["role"]
                                     for a in (alice, carol, sue)}}
    for agent in (carol, sue):  # only alice is offered the call
        assert await agent.call("set_status", {"status": "away"}) == {"ok": True}
    sipp = asyncio.create_task(asyncio.to_thread(
        run_sipp, "bot_dtmf_agent", srv.sip_port(), tmp_path, duration_ms=9800, timeout=60))
    offer = await alice.wait("incoming_call")
    call_id, thread_id = offer["callId"], offer["threadId"]
    assert await alice.call("accept_call", {"callId": call_id}) == {"ok": True}

    def calls(name: str) -> list[str]:
        return [c["callId"] for c in rest(srv, "GET", "/api/calls", tokens[name])[1]["calls"]]
    out["calls"] = {name: await asyncio.to_thread(calls, name)
                    for name in ("alice", "carol", "sue")}
    out["threads"] = {name: (await asyncio.to_thread(
        rest, srv, "GET", f"/api/threads/{thread_id}", tokens[name]))[0]
        for name in ("alice", "carol", "sue")}
    out["carol_acts"] = await carol.call("hangup", {"callId": call_id})
    out["board"] = await sue.call("board_subscribe", {})
    out["carol_board"] = await carol.call("board_subscribe", {})
    out["accounts_by_agent"] = (await asyncio.to_thread(
        rest, srv, "GET", "/api/agents", tokens["alice"]))[0]
    out["accounts"] = (await asyncio.to_thread(rest, srv, "GET", "/api/agents",
                                               tokens["root"]))[1]

    # the CLI removes carol while her socket is open
    await asyncio.to_thread(cli, srv.data_dir, "remove", "carol")
    out["carol_gone_s"] = await disconnected_within(gone["carol"], 3)
    out["carol_rest"] = (await asyncio.to_thread(rest, srv, "GET", "/api/calls",
                                                 tokens["carol"]))[0]
    # her old token opens no socket, and another call rings only the agent still there
    out["carol_again"] = await refused_connect(srv, "carol", tokens["carol"])
    dave = Agent("dave")
    await dave.connect(srv, login(srv, "dave")[1]["token"])
    await dave.wait("agent_state")
    sipp2 = asyncio.create_task(asyncio.to_thread(  # the menu takes the 0 typed ahead
        run_sipp, "bot_dtmf_agent", srv.sip_port(), tmp_path, duration_ms=500, timeout=60))
    # sue logs out: that token ends, her socket with it
    out["logout"] = await asyncio.to_thread(rest, srv, "POST", "/api/logout", tokens["sue"])
    out["sue_gone_s"] = await disconnected_within(gone["sue"], 3)
    out["sue_rest"] = (await asyncio.to_thread(rest, srv, "GET", "/api/calls",
                                               tokens["sue"]))[0]
    # the admin makes alice a supervisor: her sessions end, the call stays up
    alice_id = next(a["agentId"] for a in out["accounts"]["agents"] if a["name"] == "alice")
    out["promote"] = await asyncio.to_thread(rest, srv, "PATCH", f"/api/agents/{alice_id}",
                                             tokens["root"], {"role": "supervisor"})
    out["alice_gone_s"] = await disconnected_within(gone["alice"], 3)
    out["alice_rest"] = (await asyncio.to_thread(rest, srv, "GET", "/api/calls",
                                                 tokens["alice"]))[0]
    out["root_self"] = await asyncio.to_thread(rest, srv, "DELETE", "/api/agents/" + next(
        a["agentId"] for a in out["accounts"]["agents"] if a["name"] == "root"), tokens["root"])
    second = await offer_other_than(dave, call_id)
    out["second"] = second
    out["second_accept"] = await dave.call("accept_call", {"callId": second["callId"]})
    out["second_hangup"] = await dave.call("hangup", {"callId": second["callId"]})
    await dave.sio.disconnect()  # not offered the first call when it is queued again
    result2 = await sipp2
    assert isinstance(result2, SippResult)
    out["sipp2_ok"] = result2.ok or result2.explain()
    result = await sipp
    assert isinstance(result, SippResult)
    out["carol_offers"] = carol.events.get("incoming_call", [])
    for agent in (alice, carol, sue):
        if agent.sio.connected:
            await agent.sio.disconnect()
    out["call_id"] = call_id
    return out


def test_roles_scope_what_an_account_sees_and_ending_a_session_is_immediate(
    tmp_path: Path,
) -> None:
    extra = {"routing": {"queue_timeout": 30, "ring_timeout": 20}}
    with running_server(tmp_path, extra=extra) as srv:
        cli(srv.data_dir, "add", "alice")
        cli(srv.data_dir, "add", "carol")
        cli(srv.data_dir, "add", "dave")
        cli(srv.data_dir, "add", "sue", "--role", "supervisor")
        cli(srv.data_dir, "add", "root", "--role", "admin")
        out = asyncio.run(scenario(srv, tmp_path))
        audit = (srv.data_dir / "audit.log").read_text()
    with sqlite3.connect(srv.data_dir / "threads.sqlite") as db:  # who was offered what
        access = set(db.execute("SELECT thread_id, agent_id FROM thread_access"))
    call_id = out["call_id"]
    assert out["roles"] == {"alice": "agent", "carol": "agent", "sue": "supervisor"}
    assert out["calls"] == {"alice": [call_id], "carol": [], "sue": [call_id]}
    assert out["threads"] == {"alice": 200, "carol": 403, "sue": 200}
    assert out["carol_acts"]["error"]["code"] == "forbidden"
    board = out["board"]
    assert board["ok"] is True and [c["callId"] for c in board["calls"]] == [call_id], board
    # taken by alice (the worker may not have reported the human phase yet)
    assert board["calls"][0]["state"] in ("queued", "human") and board["calls"][0]["agentId"]
    assert {a["name"]: a["status"] for a in board["agents"]} == {
        "alice": "busy", "carol": "away", "sue": "away"}
    assert out["carol_board"]["error"]["code"] == "forbidden"
    assert out["accounts_by_agent"] == 403
    assert sorted((a["name"], a["role"]) for a in out["accounts"]["agents"]) == [
        ("alice", "agent"), ("carol", "agent"), ("dave", "agent"), ("root", "admin"),
        ("sue", "supervisor")]
    assert out["carol_gone_s"] < 1.0 and out["carol_rest"] == 401
    assert "unauthorized" in out["carol_again"]
    # the next call rang dave, never carol: no offer reached her, none was recorded for her
    ids = {a["name"]: a["agentId"] for a in out["accounts"]["agents"]}
    second = out["second"]
    assert out["second_accept"] == {"ok": True} and out["second_hangup"] == {"ok": True}
    assert out["sipp2_ok"] is True, out["sipp2_ok"]
    assert out["carol_offers"] == []
    assert (second["threadId"], ids["dave"]) in access
    assert not any(agent == ids["carol"] for _, agent in access), access
    assert out["logout"] == (200, {"ok": True})
    assert out["sue_gone_s"] < 1.0 and out["sue_rest"] == 401
    assert out["promote"][0] == 200 and out["promote"][1]["agent"]["role"] == "supervisor"
    assert out["alice_gone_s"] < 1.0 and out["alice_rest"] == 401
    assert out["root_self"][0] == 403
    events = [json.loads(line)["record"]["event"] for line in audit.splitlines()]
    for event in ("account_added", "login", "thread_read", "account_removed", "logout",
                  "account_changed"):
        assert event in events, events
    assert PASSWORD not in audit and "+1415" not in audit


def post_login(port: int, source: str, body: bytes, content_type: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=(source, 0))
    try:
        conn.request("POST", "/api/login", body=body, headers={"Content-Type": content_type})
        return conn.getresponse().status
    finally:
        conn.close()


def test_refused_logins_from_one_address_never_lock_the_agent_out_from_another(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path) as srv:
        cli(srv.data_dir, "add", "alice")
        port = int(srv.http_url.rsplit(":", 1)[1])
        right = json.dumps({"username": "alice", "password": PASSWORD}).encode()
        wrong = json.dumps({"username": "alice", "password": "wrong horse"}).encode()
        texts = [post_login(port, "127.0.0.2", right, "text/plain") for _ in range(10)]
        assert texts == [415] * 10
        guesses = [post_login(port, "127.0.0.2", wrong, "application/json")
                   for _ in range(10)]
        assert guesses[:5] == [401] * 5 and 429 in guesses[5:]
        assert post_login(port, "127.0.0.3", right, "application/json") == 200
        assert post_login(port, "127.0.0.2", right, "application/json") == 429
