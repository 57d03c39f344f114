"""An external logic engine on the ``/bot`` namespace (PROTOCOL.md §2) drives a real call:
it is told about the call and the caller's digits, and makes the bot speak and hand off."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.support.server import Server, running_server
from tests.support.sipp import SippResult, run_sipp

pytestmark = pytest.mark.sipp

API_KEY = "engine-api-key-0123456789"


def thread(server: Server, thread_id: str) -> list[tuple[str, str]]:
    req = urllib.request.Request(f"{server.http_url}/api/threads/{thread_id}",
                                 headers={"X-Api-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        return [(t["role"], t["text"]) for t in json.loads(r.read())["turns"]]


async def drive_call(server: Server, tmp_path: Path) -> dict[str, Any]:
    sio = socketio.AsyncClient(reconnection=False)
    seen: dict[str, list[Any]] = {"call_started": [], "dtmf": [], "call_ended": [], "acks": []}
    ended = asyncio.Event()

    @sio.on("call_started", namespace="/bot")  # type: ignore[untyped-decorator]
    async def on_started(data: dict[str, Any]) -> None:
        seen["call_started"].append(data)

    @sio.on("dtmf", namespace="/bot")  # type: ignore[untyped-decorator]
    async def on_dtmf(data: dict[str, Any]) -> None:
        seen["dtmf"].append(data)
        call_id = data["callId"]
        if data["digits"] == "1":
            ack = await sio.call("say", {"callId": call_id, "text": "Thanks, got your one."},
                                 namespace="/bot", timeout=5)
        else:
            ack = await sio.call("handoff", {"callId": call_id, "reason": "engine"},
                                 namespace="/bot", timeout=5)
        seen["acks"].append(ack)

    @sio.on("call_ended", namespace="/bot")  # type: ignore[untyped-decorator]
    async def on_ended(data: dict[str, Any]) -> None:
        seen["call_ended"].append(data)
        ended.set()

    await sio.connect(server.http_url, namespaces=["/bot"], auth={"apiKey": API_KEY},
                      transports=["websocket"])
    try:
        seen["bad_payload"] = await sio.call("say", "not an object", namespace="/bot", timeout=5)
        seen["unknown_call"] = await sio.call("hangup", {"callId": "nope"}, namespace="/bot",
                                              timeout=5)
        result = await asyncio.to_thread(run_sipp, "dtmf_pt101", server.sip_port(), tmp_path)
        assert isinstance(result, SippResult)
        assert result.ok, result.explain()
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        await sio.disconnect()
    return seen


def test_external_engine_hears_digits_speaks_and_hands_off(tmp_path: Path) -> None:
    extra: dict[str, dict[str, Any]] = {"bot": {"flow": "external"}, "api": {"keys": [API_KEY]},
             "routing": {"queue_timeout": 30}}
    with running_server(tmp_path, extra=extra) as srv:
        seen = asyncio.run(drive_call(srv, tmp_path))
        started = seen["call_started"][0]
        assert started["caller"]["number"] == "+14155550100"
        assert started["called"] == "+14155550123"
        assert started["threadId"]
        assert started["metadata"]["X-Twilio-CallSid"] == "CA0123456789abcdef0123456789abcdef"
        assert [d["digits"] for d in seen["dtmf"]] == ["1", "5"]
        assert seen["acks"] == [{"ok": True}, {"ok": True}]
        assert seen["bad_payload"]["error"]["code"] == "bad_request"
        assert seen["unknown_call"]["error"]["code"] == "not_found"
        assert seen["call_ended"][0]["callId"] == started["callId"]
        turns = thread(srv, started["threadId"])
        # the engine got the digits; the thread and the call record keep only that a
        # digit was pressed (no flow node says they are safe: they may be a card number)
        assert turns == [("caller", "[pressed •]"), ("bot", "Thanks, got your one."),
                         ("caller", "[pressed •]")]
        srv.wait_for(lambda: len(srv.call_records()) == 1, what="call record")
        states = [e["state"] for e in srv.call_records()[0]["events"] if e["type"] == "state"]
        assert states == ["bot", "queued", "ended"]
        events = srv.call_records()[0]["events"]
        assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["•", "•"]


def test_engine_with_a_wrong_api_key_is_refused(tmp_path: Path) -> None:
    async def connect(server: Server) -> str:
        sio = socketio.AsyncClient(reconnection=False)
        refused: list[Any] = []

        @sio.on("connect_error", namespace="/bot")  # type: ignore[untyped-decorator]
        async def on_error(data: Any) -> None:
            refused.append(data)

        try:
            await sio.connect(server.http_url, namespaces=["/bot"], auth={"apiKey": "forged"},
                              transports=["websocket"])
        except socketio.exceptions.ConnectionError:
            return str(refused)
        await sio.disconnect()
        return "connected"

    with running_server(tmp_path, extra={"api": {"keys": [API_KEY]}}) as srv:
        assert "unauthorized" in asyncio.run(connect(srv))
