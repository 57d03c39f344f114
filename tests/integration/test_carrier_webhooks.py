"""Phone numbers on Twilio / Vonage, end to end: a stand-in carrier (an aiohttp client) posts
a signed voice webhook to a real ``hitl-sip serve``, reads the TwiML / NCCO, then places the
SIP call itself with SIPp (tests/sipp/carrier_invite.xml) carrying the headers it names, plays
audio and holds the call — and the call's ``threadId`` is the one in those headers, as the
hub's REST API and the call record show."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import aiohttp
import jwt
import pytest

from hitl_sip.hub.carrier import twilio_signature
from hitl_sip.sip.uri import SipUri
from tests.support.server import Server, running_server
from tests.support.sipp import finish, run_sipp

pytestmark = pytest.mark.sipp

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
VONAGE_SECRET = "vonage-signature-secret-0123456789abcdef"
API_KEY = "carrier-test-api-key-0123456789"
PUBLIC_URL = "https://hub.example.com"  # what the carrier calls: a proxy in front of the hub
SIP_URI = "sip:sip.example.com:5060"
CALLER = "+14155550166"
CALLED = "+14155550123"
CALL_SID = "CA0123456789abcdef0123456789abcdef"
HOLD_MS = 4000  # SIPp holds the call this long, while the test reads GET /api/calls


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("carrier"), extra={
        "carrier": {"public_url": PUBLIC_URL, "sip_uri": SIP_URI,
                    "twilio_auth_token": AUTH_TOKEN,
                    "vonage_signature_secret": VONAGE_SECRET},
        "api": {"keys": [API_KEY]},
    }) as server:
        yield server


class StandInCarrier:
    """Plays the carrier: signs a voice webhook as Twilio or Vonage does and posts it to the
    hub (its local address; the signature names the public URL), then dials what came back."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv

    async def _send(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.request(
                method, self.srv.http_url + path, **kwargs) as r:
            return r.status, await r.read()

    def twilio_voice(self, params: list[tuple[str, str]], *, query: str = "",
                     signature: str | None = None) -> tuple[int, bytes]:
        path = "/carrier/twilio/voice" + (f"?{query}" if query else "")
        sig = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)
        return asyncio.run(self._send("POST", path, data=urlencode(params), headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sig if signature is None else signature}))

    def vonage_answer(self, query: list[tuple[str, str]]) -> tuple[int, bytes]:
        payload = json.dumps(dict(query), separators=(",", ":")).encode()
        token = jwt.encode({"iat": int(time.time()), "jti": str(uuid.uuid4()), "iss": "Vonage",
                            "payload_hash": hashlib.sha256(payload).hexdigest()},
                           VONAGE_SECRET, algorithm="HS256")
        return asyncio.run(self._send("GET", "/carrier/vonage/answer?" + urlencode(query),
                                      headers={"Authorization": f"Bearer {token}"}))

    def dial(self, uri: str, headers: dict[str, str], caller: str, tmp: Path) -> str:
        """Places the call our SIP URI names with SIPp (to the server's SIP port:
        sip.example.com is the public name), its INVITE carrying ``headers``; reads
        ``GET /api/calls`` while SIPp plays a tone and holds the call, then SIPp hangs up.
        Returns the call's thread as ``GET /api/calls`` shows it."""
        target = SipUri.parse(uri)
        assert target.host == "sip.example.com" and target.port == 5060, uri
        assert target.user is not None
        before = len(self.srv.call_records())
        known = {c["callId"] for c in api_calls(self.srv)}  # an earlier call may linger
        lines = "\r\n".join(f"{name}: {value}" for name, value in headers.items())
        sipp = run_sipp("carrier_invite", self.srv.sip_port(), tmp, service=target.user,
                        keys={"caller": caller, "headers": lines}, duration_ms=HOLD_MS,
                        timeout=30, background=True)
        assert isinstance(sipp, subprocess.Popen)
        listed: list[dict[str, Any]] = []

        def live() -> bool:
            listed[:] = [c for c in api_calls(self.srv) if c["callId"] not in known]
            return bool(listed)
        try:
            self.srv.wait_for(live, HOLD_MS / 1000, what="the call in GET /api/calls")
        finally:
            result = finish(sipp, tmp)
        assert result.ok, result.explain()  # it held the call and hung up itself
        self.srv.wait_for(lambda: len(self.srv.call_records()) == before + 1,
                          what="the call record")
        return str(listed[0]["threadId"])


def api_calls(srv: Server) -> list[dict[str, Any]]:
    req = urllib.request.Request(srv.http_url + "/api/calls", headers={"X-Api-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        calls: list[dict[str, Any]] = json.loads(r.read())["calls"]
        return calls


def uri_headers(uri: str) -> tuple[str, dict[str, str]]:
    base, _, part = uri.partition("?")
    return base, {name: unquote(value) for name, _, value in
                  (pair.partition("=") for pair in part.split("&") if pair)}


def test_a_twilio_number_reaches_the_hub_with_its_thread_known(srv: Server,
                                                              tmp_path: Path) -> None:
    carrier = StandInCarrier(srv)
    status, body = carrier.twilio_voice([
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"), ("CallSid", CALL_SID),
        ("CallStatus", "ringing"), ("Direction", "inbound"), ("From", CALLER), ("To", CALLED)])
    assert status == 200, body
    uri = ET.fromstring(body).findtext("Dial/Sip")
    assert uri is not None
    base, headers = uri_headers(uri)
    assert base == f"sip:{CALLED}@sip.example.com:5060"
    thread = headers["X-Thread-Id"]
    assert uuid.UUID(thread).version == 4
    assert headers["X-Parent-Call-Sid"] == CALL_SID

    assert carrier.dial(uri, headers, CALLER, tmp_path) == thread
    record = srv.call_records()[-1]
    assert record["threadId"] == thread
    assert record["metadata"]["headers"]["thread_id"] == thread
    assert record["metadata"]["headers"]["X-Parent-Call-Sid"] == CALL_SID
    assert record["metadata"]["caller_number"] == CALLER


def test_a_vonage_number_reaches_the_hub_with_the_thread_it_named(srv: Server,
                                                                 tmp_path: Path) -> None:
    carrier = StandInCarrier(srv)
    status, body = carrier.vonage_answer([
        ("to", "14155550123"), ("from", "14155550166"), ("uuid", "63f61863-4a51-4f6b-86e1"),
        ("conversation_uuid", "CON-f972836a-550f"), ("threadId", "crm-thread-77")])
    assert status == 200, body
    [connect] = json.loads(body)
    [endpoint] = connect["endpoint"]
    assert endpoint["type"] == "sip"
    # Vonage sends each NCCO header as X-<name>
    headers = {f"X-{name}": value for name, value in endpoint["headers"].items()}
    assert headers["X-Thread-Id"] == "crm-thread-77"

    assert carrier.dial(endpoint["uri"], headers, "+" + connect["from"],
                        tmp_path) == "crm-thread-77"
    record = srv.call_records()[-1]
    assert record["threadId"] == "crm-thread-77"
    assert record["metadata"]["headers"]["X-uuid"] == "63f61863-4a51-4f6b-86e1"


def test_a_forged_webhook_is_refused_counted_and_logged_without_the_caller(
        srv: Server) -> None:
    carrier = StandInCarrier(srv)
    params = [("CallSid", CALL_SID), ("From", "+14155550199"), ("To", CALLED)]
    assert carrier.twilio_voice(params, signature="forged")[0] == 403
    assert carrier.twilio_voice(params, signature="")[0] == 403
    srv.wait_for(lambda: srv.metric("hitl_sip_carrier_webhooks_total", carrier="twilio",
                                    outcome="forbidden") == 2, what="the refusals counted")
    assert "twilio voice webhook refused" in srv.log()
    assert "+14155550199" not in srv.log() and CALLER not in srv.log()
