"""An agent transfers its call to a phone number (PROTOCOL.md §6, ``to: {number}``) on a real
server (Kamailio front, rtpengine, a worker), a SIPp scenario playing the carrier's trunk and
a Python agent (hitl_sip.testing.agent) holding the call:

* with a trunk profile that says the carrier takes REFER, the trunk receives a REFER whose
  ``Refer-To`` names the number, accepts it (202), reports ``SIP/2.0 200 OK`` in a NOTIFY and
  gets the server's BYE: the call left (and a REFER the trunk sends *to* the server, which the
  front now lets through inside dialogs, is declined: 603);
* with REFER off and Twilio's REST credentials set, a stand-in of Twilio's API receives the
  update of the caller's call (the account, the parent CallSid from ``X-Parent-Call-Sid``,
  ``<Dial><Number>``), and the SIP leg gets the server's BYE.

Either way the agent gets ``call_ended`` reason ``transferred`` and the thread the notice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from hitl_sip.media.ice import install_host_filter
from hitl_sip.testing.agent import TestAgent
from tests.integration.test_agents import PASSWORD, add_agent
from tests.support.server import Server, running_server
from tests.support.sipp import SippResult, finish, run_sipp

NUMBER = "+15557654321"
ACCOUNT = "AC" + "89abcdef01234567" * 2
TOKEN = "f00dfeed" * 4  # the shape of an Auth Token
PARENT = "CA0123456789abcdef0123456789abcdef"  # the scenarios' X-Parent-Call-Sid
API_KEY = "transfer-out-api-key-0123"
FLOW = """
name: straight_to_an_agent
start: agent
nodes:
  agent:
    type: agent
    message: "Connecting you."
    fallback: bye
  bye:
    type: hangup
"""


def lab_profile(refer: bool) -> str:
    return (
        'name = "lab"\n[allow]\ncidrs = ["127.0.0.0/8"]\n'
        '[headers]\nmap = { "X-Thread-Id" = "thread_id", '
        '"X-Parent-Call-Sid" = "twilio_parent_call_sid" }\n'
        f"[transfer]\nrefer = {'true' if refer else 'false'}\n")


class TwilioApi:
    """A stand-in of Twilio's REST API (the Calls resource) in a thread of its own, on
    127.0.0.1 and a free port: records every request, answers 200 with a call."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twilio-api", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> TwilioApi:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        runner = self._runner
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}", self._update)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _update(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path,
                              "authorization": request.headers.get("Authorization", ""),
                              "form": dict(parse_qsl((await request.read()).decode()))})
        call = request.match_info["call"].removesuffix(".json")
        return web.json_response({"sid": call, "account_sid": request.match_info["account"],
                                  "status": "in-progress"})


@pytest.fixture(scope="module", autouse=True)
def _host_candidates() -> None:
    install_host_filter(["127.0.0.1"])  # the agent's own aiortc: loopback candidates only


def extra(home: Path, carrier: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    flow = home / "flow.yaml"
    flow.write_text(FLOW)
    sections: dict[str, dict[str, Any]] = {
        "bot": {"flow": str(flow)},
        "routing": {"queue_timeout": 60, "ring_timeout": 15},
        "webrtc": {"codecs": ["pcmu"], "host_addresses": ["127.0.0.1"]},
        "api": {"keys": [API_KEY]},
    }
    if carrier is not None:
        sections["carrier"] = carrier
    return sections


def thread_texts(srv: Server, thread_id: str) -> list[str]:
    req = urllib.request.Request(f"{srv.http_url}/api/threads/{thread_id}",
                                 headers={"X-Api-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        return [str(t["text"]) for t in json.loads(r.read())["turns"]]


def transfer_a_call(srv: Server, tmp: Path, scenario: str,
                    sipp_args: list[str] | None = None) -> tuple[dict[str, Any], SippResult]:
    """alice takes the scenario's call and transfers it to NUMBER; her ``call_ended``, and
    how the scenario ended."""
    async def run() -> tuple[dict[str, Any], Any]:
        alice = TestAgent(srv.http_url, "alice", PASSWORD, codecs=("pcmu",))
        await alice.connect()
        sipp = run_sipp(scenario, srv.sip_port(), tmp, background=True, timeout=50,
                        extra=sipp_args)
        assert not isinstance(sipp, SippResult)
        try:
            offer = await alice.answer_next_call(limit=30)
            ack = await alice.call("transfer_call", {
                "callId": offer["callId"], "to": {"number": NUMBER}, "mode": "cold"})
            assert ack == {"ok": True}, ack
            ended = await alice.wait("call_ended", limit=30)
            assert not alice.events.get("transfer_failed"), alice.events["transfer_failed"]
            return {**ended, "threadId": offer["threadId"]}, sipp
        finally:
            await alice.close()

    ended, sipp = asyncio.run(run())
    return ended, finish(sipp, tmp)


@contextmanager
def agent_server(home: Path, *, refer: bool,
                 carrier: dict[str, Any] | None = None) -> Iterator[Server]:
    """A server whose trunk profile takes REFER or not, with alice as its agent."""
    with running_server(home, extra=extra(home, carrier), profile="lab",
                        profiles={"lab": lab_profile(refer)}) as srv:
        add_agent(srv.data_dir, "alice")
        yield srv


def test_a_transfer_by_refer_reaches_the_trunk_and_the_call_leaves(tmp_path: Path) -> None:
    log = tmp_path / "sipp-refer.log"
    with agent_server(tmp_path, refer=True) as srv:
        # the front lets REFER through in dialogs now: one *to* a worker is still declined
        declined = run_sipp("refer_to_us", srv.sip_port(), tmp_path, timeout=20)
        assert isinstance(declined, SippResult)
        assert declined.ok, declined.explain() + srv.log()
        # that call is over for the hub too before alice logs in: else she may be offered
        # it while its end is on its way (a worker that just started is still loading its
        # decoders and detectors, which delays the end of a call's recogniser)
        srv.wait_for(lambda: len(srv.call_records()) >= 1, 15, what="the declined call's end")
        ended, result = transfer_a_call(srv, tmp_path, "transfer_refer",
                                        ["-trace_logs", "-log_file", str(log)])
        assert result.ok, result.explain() + srv.log()
        texts = thread_texts(srv, ended["threadId"])
        completed = srv.metric("hitl_sip_hub_transfers_total", mode="cold",
                               outcome="completed")
        refers = srv.metric("hitl_sip_hub_transfer_out_attempts_total", means="refer",
                            outcome="ok")
        server_log = srv.log()
    # the trunk got REFER to the number, accepted it, reported 200 OK and got our BYE
    assert f"refer-to {NUMBER}" in log.read_text(), log.read_text()
    assert (ended["reason"], ended["by"]) == ("transferred", "agent")
    assert f"Transferred to {NUMBER}" in texts
    assert completed == 1 and refers == 1
    assert NUMBER not in server_log  # personal data: never in a plain log line


def test_without_refer_the_carrier_s_api_moves_the_caller(tmp_path: Path) -> None:
    with TwilioApi() as api:
        carrier = {"public_url": "http://127.0.0.1:8080", "sip_uri": "sip:127.0.0.1:5060",
                   "twilio_auth_token": TOKEN, "twilio_account_sid": ACCOUNT,
                   "twilio_api_url": api.url}
        with agent_server(tmp_path, refer=False, carrier=carrier) as srv:
            ended, result = transfer_a_call(srv, tmp_path, "carrier_leg_bye")
            assert result.ok, result.explain() + srv.log()
            texts = thread_texts(srv, ended["threadId"])
            attempts = srv.metric("hitl_sip_hub_transfer_out_attempts_total", means="twilio",
                                  outcome="ok")
            log = srv.log()
    assert ended["threadId"] == "thread-transfer-out-1"  # the webhook's thread, kept
    assert (ended["reason"], ended["by"]) == ("transferred", "agent")
    assert f"Transferred to {NUMBER}" in texts
    assert attempts == 1
    (update,) = api.requests
    assert update["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{PARENT}.json"
    assert update["authorization"] == "Basic " + base64.b64encode(
        f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert update["form"] == {
        "Twiml": f"<Response><Dial><Number>{NUMBER}</Number></Dial></Response>"}
    assert NUMBER not in log  # personal data: never in a plain log line
    assert TOKEN not in log
