"""The /agent namespace refuses what it must and survives garbage (PROTOCOL.md §1)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import socketio

from hitl_sip.hub.tokens import TokenSigner, load_or_create_secret
from tests.integration.test_agents import Agent, add_agent, login
from tests.support.server import ROOT, Server, running_server

ORIGIN = "https://agents.example.com"
ENGINEIO_PURGE = 60.0  # the longest the service cycle may take, not a wait
EVENTS = ("set_status", "accept_call", "decline_call", "webrtc_offer", "webrtc_candidate",
          "mute", "hangup", "return_to_bot")
GARBAGE: tuple[Any, ...] = (None, "text", 42, [], {}, {"callId": ""}, {"callId": 7},
                            {"callId": "x" * 500}, {"status": "sleeping"})


async def attempt(server: Server, token: str | None, origin: str | None = None) -> str:
    agent = Agent("x")
    try:
        await agent.connect(server, token, headers={"Origin": origin} if origin else None)
    except socketio.exceptions.ConnectionError:
        return str(agent.events.get("connect_error"))
    await agent.sio.disconnect()
    return "connected"


def test_expired_token_and_foreign_origin_are_refused(tmp_path: Path) -> None:
    extra = {"api": {"agent_origins": [ORIGIN]}}
    with running_server(tmp_path, extra=extra) as srv:
        add_agent(srv.data_dir, "alice")
        status, body = login(srv, "alice")
        assert status == 200
        secret = load_or_create_secret(srv.data_dir / "token.key", env={})
        past = TokenSigner(secret, ttl=60, clock=lambda: time.time() - 3600)
        expired, _ = past.issue(body["agentId"], "alice")
        assert "unauthorized" in asyncio.run(attempt(srv, expired, ORIGIN))
        # engine.io refuses a foreign Origin before the namespace sees it
        assert asyncio.run(attempt(srv, body["token"], "https://evil.test")) != "connected"
        assert asyncio.run(attempt(srv, body["token"], ORIGIN)) == "connected"


def test_a_removed_agent_s_token_stops_working(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        add_agent(srv.data_dir, "bob")
        token = login(srv, "bob")[1]["token"]
        assert asyncio.run(attempt(srv, token)) == "connected"
        subprocess.run([sys.executable, "-m", "hitl_sip.cli", "agents", "remove", "bob",
                        "--data-dir", str(srv.data_dir)], cwd=ROOT, check=True)
        assert "unauthorized" in asyncio.run(attempt(srv, token))


async def send_garbage(server: Server, token: str) -> list[tuple[str, Any, Any]]:
    agent = Agent("alice")
    await agent.connect(server, token)
    answers = []
    for event in EVENTS:
        for payload in GARBAGE:
            answers.append((event, payload, await agent.call(event, payload)))
    await agent.sio.disconnect()
    return answers


class Raw:
    """A payload sent exactly as given (a JSON encoder would refuse 5,000 levels)."""

    def __init__(self, text: str) -> None:
        self.text = text


class RawJson:
    """The test client's JSON module: :class:`Raw` payloads go out verbatim."""

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        if isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], Raw):
            return "[" + json.dumps(obj[0]) + "," + obj[1].text + "]"
        return json.dumps(obj, **kwargs)

    @staticmethod
    def loads(text: str | bytes, **kwargs: Any) -> Any:
        return json.loads(text, **kwargs)


async def send_hostile(server: Server, token: str) -> tuple[Any, Any, Any]:
    """A payload nested 5,000 levels deep, one of 300 KB, then a good event on the same
    socket: the two get bad_request acknowledgements, the socket stays up."""
    agent = Agent("alice")
    agent.sio = socketio.AsyncClient(reconnection=False, json=RawJson)
    await agent.connect(server, token)
    deep = await agent.call("set_status", Raw("[" * 5000 + "]" * 5000))
    big = await agent.call("set_status", Raw(json.dumps({"status": "x" * 300_000})))
    good = await agent.call("set_status", {"status": "away"})
    await agent.sio.disconnect()
    return deep, big, good


def test_malformed_payloads_of_every_event_get_an_error_and_change_nothing(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path) as srv:
        add_agent(srv.data_dir, "alice")
        token = login(srv, "alice")[1]["token"]
        for event, payload, ack in asyncio.run(send_garbage(srv, token)):
            assert isinstance(ack, dict) and ack.get("ok") is False, (event, payload, ack)
            assert ack["error"]["code"] in ("bad_request", "forbidden", "not_found"), (
                event, payload, ack)
            if payload is None or not isinstance(payload, dict):
                assert ack["error"]["code"] == "bad_request", (event, payload, ack)
        deep, big, good = asyncio.run(send_hostile(srv, token))
        assert deep["ok"] is False and deep["error"]["code"] == "bad_request", deep
        assert "nested deeper than" in deep["error"]["message"]
        assert big["ok"] is False and "bytes, more than" in big["error"]["message"], big
        assert good == {"ok": True}
        assert srv.metric("hitl_sip_hub_socket_payloads_refused_total", reason="too_deep") == 1
        assert srv.metric("hitl_sip_hub_socket_payloads_refused_total", reason="too_large") == 1
        assert srv.health()[0] == 200
        assert "Traceback" not in srv.log() and "RecursionError" not in srv.log()


def test_a_thousand_connects_and_disconnects_leave_the_hub_clean(tmp_path: Path) -> None:
    async def churn(server: Server, token: str) -> None:
        for _ in range(1000):
            sio = socketio.AsyncClient(reconnection=False)
            await sio.connect(server.http_url, namespaces=["/agent"], auth={"token": token},
                              transports=["websocket"])
            await sio.disconnect()

    with running_server(tmp_path) as srv:
        add_agent(srv.data_dir, "alice")
        token = login(srv, "alice")[1]["token"]
        hub = psutil.Process(srv.process.pid)
        samples = []
        base = srv.metric("hitl_sip_hub_tasks")
        for _ in range(2):
            asyncio.run(churn(srv, token))
            assert srv.metric("hitl_sip_hub_socket_sessions") == 0
            # each closed engine.io session lives on in its ping task until that task's
            # next tick (the 25 s ping interval): a thousand tasks must go (three stay for
            # good from the first connect on, engine.io's service task among them). That
            # bound, every round, is the leak check: the hub's own timers or the scrape's
            # connection may add a task to any one reading, so rounds are not compared
            srv.wait_for(lambda: srv.metric("hitl_sip_hub_tasks") <= base + 5,
                         timeout=ENGINEIO_PURGE, what="the sessions' tasks ended")
            samples.append(hub.memory_info().rss / 2**20)
        print("hub RSS after each 1000 connect/disconnects (MiB):", samples)
        assert samples[1] - samples[0] < 2, f"hub RSS keeps growing: {samples}"
        assert srv.health()[0] == 200
