"""The carriers' voice webhooks (hitl_sip/hub/carrier.py): Twilio's request signature against
the examples Twilio publishes, Vonage's signed-webhook JWT made with PyJWT, and the answers —
TwiML ``<Dial><Sip>`` / an NCCO ``connect`` to our SIP URI carrying the thread and the caller
in ``X-`` headers. Anything unsigned, tampered, expired or badly signed is 403."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from vonage_jwt.verify_jwt import verify_signature  # type: ignore[import-untyped]

from hitl_sip.cli import main
from hitl_sip.config import Config, load_config
from hitl_sip.errors import ConfigError
from hitl_sip.hub.app import create_app
from hitl_sip.hub.carrier import (
    MAX_BODY,
    CallDetails,
    WebhookError,
    ncco_connect_sip,
    resolve_sip_uri,
    sip_target,
    twilio_headers,
    twilio_signature,
    twilio_signature_valid,
    twiml_dial_sip,
    uri_with_headers,
    vonage_claims,
)
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.supervisor import Supervisor
from hitl_sip.sip.profile import parse_profile

Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]

# Twilio's documented example (docs "Security", and the tests of its helper libraries)
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"), ("Digits", "1234"),
              ("From", "+14158675309"), ("To", "+18005551212")]
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"  # the shape of a Twilio Auth Token
VONAGE_SECRET = "vonage-signature-secret-0123456789abcdef"
PUBLIC_URL = "https://hub.example.com"
SIP_URI = "sip:sip.example.com:5060"
CALLER = "+14155550100"
CALLED = "+14155550123"
CALL_SID = "CA0123456789abcdef0123456789abcdef"


# --- Twilio's signature ---------------------------------------------------------------------


def test_the_signature_of_twilios_documented_example() -> None:
    assert twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    # the parameter order on the wire does not matter: they are sorted by name
    assert twilio_signature(DOC_TOKEN, DOC_URL, list(reversed(DOC_PARAMS))) == DOC_SIGNATURE
    # the older page's example, with other numbers (0/KCTR6DLpKmkAf8muzZqo1nDgQ=)
    older = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"),
             ("From", "+12349013030"), ("To", "+18005551212")]
    assert twilio_signature(DOC_TOKEN, DOC_URL, older) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_a_repeated_parameter_signs_its_values_in_order_like_twilios_libraries() -> None:
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio_signature(DOC_TOKEN, DOC_URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


@pytest.mark.parametrize(("url", "signature"), [
    (DOC_URL, DOC_SIGNATURE),
    (DOC_URL.replace(".com", ".com:1234"), DOC_SIGNATURE),  # signed without the port
    (DOC_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
    (DOC_URL.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
    (DOC_URL.replace(".com", ".com:1234").replace("https", "http"),
     "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),  # signed with the port
])
def test_a_signature_with_or_without_the_port_validates(url: str, signature: str) -> None:
    assert twilio_signature_valid(DOC_TOKEN, url, DOC_PARAMS, signature)


def test_a_tampered_request_or_another_token_does_not_validate() -> None:
    tampered = [(k, "+19005550000" if k == "From" else v) for k, v in DOC_PARAMS]
    assert not twilio_signature_valid(DOC_TOKEN, DOC_URL, tampered, DOC_SIGNATURE)
    assert not twilio_signature_valid(DOC_TOKEN, DOC_URL + "&baz=3", DOC_PARAMS, DOC_SIGNATURE)
    assert not twilio_signature_valid("54321", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not twilio_signature_valid(DOC_TOKEN, DOC_URL, DOC_PARAMS, "")


# --- the answers ----------------------------------------------------------------------------


def sip_headers(uri: str) -> tuple[str, dict[str, str]]:
    """A SIP URI's base and its ``?name=value&…`` headers, decoded (what the carrier puts
    in the INVITE)."""
    base, _, part = uri.partition("?")
    headers = {}
    for pair in part.split("&") if part else []:
        name, _, value = pair.partition("=")
        headers[name] = unquote(value)
    return base, headers


def test_the_twiml_dials_our_uri_with_every_value_escaped() -> None:
    details = CallDetails("t-1", caller='a&b<c>"d', called=CALLED, caller_name="O'Brien & Co",
                          call_id=CALL_SID)
    uri = uri_with_headers(sip_target(SIP_URI, CALLED), twilio_headers(details))
    document = ET.fromstring(twiml_dial_sip(uri))
    dial = document.find("Dial")
    assert document.tag == "Response" and dial is not None
    assert dial.get("answerOnBridge") == "true"
    sip = dial.find("Sip")
    assert sip is not None and sip.text == uri
    base, headers = sip_headers(uri)
    assert base == f"sip:{CALLED}@sip.example.com:5060"
    assert headers == {"X-Thread-Id": "t-1", "X-Parent-Call-Sid": CALL_SID,
                       "X-Called-Number": CALLED, "X-Caller-Number": 'a&b<c>"d',
                       "X-Caller-Name": "O'Brien & Co"}
    assert "&b" not in uri and "<" not in uri and " " not in uri  # nothing unescaped


def test_our_uri_keeps_its_own_user_and_takes_no_non_number_as_one() -> None:
    assert sip_target("sip:hitl@sip.example.com", CALLED).serialize() == "sip:hitl@sip.example.com"
    assert sip_target(SIP_URI, "client:alice").serialize() == SIP_URI


def test_optional_headers_are_dropped_before_the_headers_pass_twilios_limit() -> None:
    details = CallDetails("t", caller="€" * 64, called="€" * 64, caller_name="€" * 64,
                          call_id="€" * 64)
    uri = uri_with_headers(sip_target(SIP_URI, ""), twilio_headers(details))
    assert len(uri.partition("?")[2]) <= 1024
    assert sip_headers(uri)[1]["X-Thread-Id"] == "t"


def test_the_ncco_connects_our_sip_uri_with_the_headers_vonage_prefixes() -> None:
    ncco = ncco_connect_sip("sip:447700900123@sip.example.com", {"Thread-Id": "t"},
                            "447700900000")
    assert ncco == [{"action": "connect", "from": "447700900000", "endpoint": [
        {"type": "sip", "uri": "sip:447700900123@sip.example.com",
         "headers": {"Thread-Id": "t"}}]}]
    assert "from" not in ncco_connect_sip(SIP_URI, {}, "Unknown")[0]


# --- Vonage's JWT ---------------------------------------------------------------------------


def vonage_token(payload: bytes | None, *, secret: str = VONAGE_SECRET,
                 **claims: Any) -> str:
    """A signed-webhook JWT as Vonage makes one (HS256, the signature secret)."""
    body: dict[str, Any] = {"iat": int(time.time()), "jti": str(uuid.uuid4()), "iss": "Vonage",
                            "api_key": "abcd1234",
                            "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    if payload is not None:
        body["payload_hash"] = hashlib.sha256(payload).hexdigest()
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


def test_a_vonage_token_verifies_with_its_payload() -> None:
    payload = b'{"to":"447700900123"}'
    claims = vonage_claims(vonage_token(payload), VONAGE_SECRET, [payload])
    assert claims["iss"] == "Vonage"
    assert vonage_claims(vonage_token(None), VONAGE_SECRET, [payload])  # no hash: not checked


# each token made when its test runs (made at collection, a valid one would be stale by the
# time a long suite reaches it)
@pytest.mark.parametrize(("make", "reason"), [
    (lambda: vonage_token(b"{}", secret="another-secret-0123456789abcdef0123"),
     "bad token signature"),
    (lambda: vonage_token(b'{"to":"1"}'), "payload_hash does not match"),
    (lambda: vonage_token(b"{}", exp=int(time.time()) - 120), "token expired"),
    (lambda: vonage_token(b"{}", nbf=int(time.time()) + 600), "token not valid yet"),
    (lambda: vonage_token(b"{}", iat=int(time.time()) - 3600), "token too old"),
    (lambda: jwt.encode({"jti": "x"}, VONAGE_SECRET, algorithm="HS256"), "token without iat"),
    (lambda: jwt.encode({"iat": int(time.time())}, "", algorithm="none"), "bad token"),
    (lambda: "not.a.jwt", "bad token"),
])
def test_a_vonage_token_that_is_forged_tampered_or_stale_is_forbidden(
        make: Callable[[], str], reason: str) -> None:
    with pytest.raises(WebhookError) as raised:
        vonage_claims(make(), VONAGE_SECRET, [b"{}"])
    assert raised.value.status == 403
    assert reason in str(raised.value)



# Vonage's published pair: the token and signature secret of the verification test of
# Vonage's own Python SDK (github.com/Vonage/vonage-python-sdk, jwt/tests/test_verify_jwt.py,
# also the key of its ``verify_signature``). HS256; issued 2023-10-18 (iat 1697634680), no
# payload_hash claim. No Vonage page publishes a webhook token with its secret.
SDK_TOKEN = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJPbmxpbmUgSldUIEJ1aWxkZXIiLCJp"
             "YXQiOjE2OTc2MzQ2ODAsImV4cCI6MzMyNTQ1NDA4MjgsImF1ZCI6IiIsInN1YiI6IiJ9.88vJc3I2Hhu"
             "qEDixHXVhc9R30tA6U_HQHZTC29y6CGM")
SDK_SECRET = "qwertyuiopasdfghjklzxcvbnm123456"
SDK_IAT = 1697634680


def test_vonages_published_token_verifies_when_fresh_and_is_refused_as_stale_now() -> None:
    # the SDK itself accepts it with that secret, and refuses another one
    assert verify_signature(SDK_TOKEN, SDK_SECRET) is True
    assert verify_signature(SDK_TOKEN, "asdf" * 8) is False
    # ours: its signature verifies, read as if it had just been issued
    claims = vonage_claims(SDK_TOKEN, SDK_SECRET, [b"{}"], now=SDK_IAT + 60)
    assert (claims["iat"], claims["iss"]) == (SDK_IAT, "Online JWT Builder")
    head, _, signature = SDK_TOKEN.split(".")
    changed = base64.urlsafe_b64encode(json.dumps(
        {**claims, "sub": "someone else"}, separators=(",", ":")).encode()).rstrip(b"=")
    refused = {
        "stale": (SDK_TOKEN, SDK_SECRET, None),  # today: issued years ago
        "wrong secret": (SDK_TOKEN, "asdf" * 8, SDK_IAT + 60),
        "tampered": (f"{head}.{changed.decode()}.{signature}", SDK_SECRET, SDK_IAT + 60),
    }
    reasons = {}
    for name, (token, secret, now) in refused.items():
        with pytest.raises(WebhookError) as raised:
            vonage_claims(token, secret, [b"{}"], now=now)
        assert raised.value.status == 403
        reasons[name] = str(raised.value)
    assert "token too old" in reasons["stale"]
    assert "bad token signature" in reasons["wrong secret"]
    assert "bad token signature" in reasons["tampered"]

# --- the routes -----------------------------------------------------------------------------


def carrier_config(**carrier: str) -> Config:
    values = {"public_url": PUBLIC_URL, "sip_uri": SIP_URI, "twilio_auth_token": AUTH_TOKEN,
              "vonage_signature_secret": VONAGE_SECRET, **carrier}
    return load_config(None, env={}, overrides={
        "http.dashboard_dir": "", **{f"carrier.{k}": v for k, v in values.items()}})


@pytest.fixture
def registry() -> WorkerRegistry:
    return WorkerRegistry()


@pytest.fixture
async def client(registry: WorkerRegistry) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(carrier_config(), registry, "t"))) as c:
        yield c


def counted(registry: WorkerRegistry, name: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(
        registry.metrics.render().decode()) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


TWILIO_PARAMS = [("AccountSid", "AC0123456789abcdef0123456789abcdef"), ("CallSid", CALL_SID),
                 ("CallStatus", "ringing"), ("Direction", "inbound"), ("From", CALLER),
                 ("To", CALLED), ("CallerName", "Jane Doe")]


async def post_twilio(client: Client, params: list[tuple[str, str]], *, query: str = "",
                      signed_url: str | None = None, token: str = AUTH_TOKEN,
                      signature: str | None = None) -> aiohttp.ClientResponse:
    path = "/carrier/twilio/voice" + (f"?{query}" if query else "")
    url = PUBLIC_URL + path if signed_url is None else signed_url
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    sig = twilio_signature(token, url, params) if signature is None else signature
    if sig:
        headers["X-Twilio-Signature"] = sig
    return await client.post(path, data=urlencode(params), headers=headers)


async def test_a_signed_twilio_webhook_gets_twiml_dialling_our_sip_uri_with_a_new_thread(
    client: Client, registry: WorkerRegistry, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "hitl_sip.hub.carrier")
    r = await post_twilio(client, TWILIO_PARAMS)
    assert r.status == 200, await r.text()
    assert r.content_type == "text/xml"
    sip = ET.fromstring(await r.read()).find("Dial/Sip")
    assert sip is not None and sip.text is not None
    base, headers = sip_headers(sip.text)
    assert base == f"sip:{CALLED}@sip.example.com:5060"
    assert uuid.UUID(headers["X-Thread-Id"]).version == 4
    assert headers["X-Parent-Call-Sid"] == CALL_SID
    assert (headers["X-Caller-Number"], headers["X-Called-Number"]) == (CALLER, CALLED)
    assert headers["X-Caller-Name"] == "Jane Doe"
    again = sip_headers(ET.fromstring(await (await post_twilio(client, TWILIO_PARAMS)).read())
                        .findtext("Dial/Sip") or "")[1]
    assert again["X-Thread-Id"] != headers["X-Thread-Id"]  # a fresh thread per call
    assert counted(registry, "hitl_sip_carrier_webhooks_total", carrier="twilio",
                   outcome="ok") == 2
    assert CALLER not in caplog.text and "Jane" not in caplog.text


@pytest.mark.parametrize(("query", "form"), [("threadId=thread-42", []),
                                             ("", [("threadId", "thread-42")])])
async def test_the_thread_the_carrier_passes_is_the_one_the_sip_leg_carries(
        client: Client, query: str, form: list[tuple[str, str]]) -> None:
    r = await post_twilio(client, TWILIO_PARAMS + form, query=query)
    assert r.status == 200, await r.text()
    assert sip_headers(ET.fromstring(await r.read()).findtext("Dial/Sip") or "")[1][
        "X-Thread-Id"] == "thread-42"


async def test_twilio_webhooks_unsigned_tampered_or_signed_for_another_url_are_forbidden(
    client: Client, registry: WorkerRegistry, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "hitl_sip.hub.carrier")
    r = await post_twilio(client, TWILIO_PARAMS, signature="")
    assert (r.status, await r.text()) == (403, "forbidden")
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + "/carrier/twilio/voice", TWILIO_PARAMS)
    tampered = [(k, "+19005550000" if k == "From" else v) for k, v in TWILIO_PARAMS]
    assert (await post_twilio(client, tampered, signature=signature)).status == 403
    # signed with another account's token, or for the hub's own address rather than the
    # public URL Twilio calls (a proxy in between)
    assert (await post_twilio(client, TWILIO_PARAMS, token="f" * 32)).status == 403
    local = str(client.make_url("/carrier/twilio/voice"))
    assert (await post_twilio(client, TWILIO_PARAMS, signed_url=local)).status == 403
    # the thread in the query is part of what Twilio signed
    r = await post_twilio(client, TWILIO_PARAMS, query="threadId=mine",
                          signed_url=PUBLIC_URL + "/carrier/twilio/voice?threadId=other")
    assert r.status == 403
    assert counted(registry, "hitl_sip_carrier_webhooks_total", carrier="twilio",
                   outcome="forbidden") == 5
    assert counted(registry, "hitl_sip_carrier_webhooks_total", outcome="ok") == 0
    assert CALLER not in caplog.text and "19005550000" not in caplog.text


async def test_malformed_twilio_webhooks_get_precise_400s_and_big_ones_413(
        client: Client, registry: WorkerRegistry) -> None:
    r = await post_twilio(client, [*TWILIO_PARAMS, ("threadId", "bad thread/id")])
    assert r.status == 400 and "threadId" in await r.text()
    path = "/carrier/twilio/voice"
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, [])
    r = await client.post(path, data=b'{"From": "x"}', headers={
        "Content-Type": "application/json", "X-Twilio-Signature": signature})
    assert r.status == 400 and "form" in await r.text()
    r = await client.post(path, data=b"From=%ff", headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
    assert r.status == 400
    r = await client.post(path, data=b"a=" + b"x" * MAX_BODY, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
    assert r.status == 413
    assert counted(registry, "hitl_sip_carrier_webhooks_total", carrier="twilio",
                   outcome="bad_request") == 3
    assert counted(registry, "hitl_sip_carrier_webhooks_total", outcome="too_large") == 1


VONAGE_QUERY = [("to", "447700900123"), ("from", "447700900000"),
                ("uuid", "63f61863-4a51-4f6b-86e1-46edebcf9356"),
                ("conversation_uuid", "CON-f972836a-550f-45fa-956c-12a2ab5b7d22"),
                ("region_url", "https://api-eu-1.vonage.com")]


def compact(data: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(data), separators=(",", ":")).encode()


async def test_a_signed_vonage_answer_by_get_gets_an_ncco_connecting_our_sip_uri(
        client: Client, registry: WorkerRegistry) -> None:
    token = vonage_token(compact(dict(VONAGE_QUERY)))
    r = await client.get("/carrier/vonage/answer?" + urlencode(VONAGE_QUERY),
                         headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, await r.text()
    [connect] = await r.json()
    assert connect["action"] == "connect" and connect["from"] == "447700900000"
    [endpoint] = connect["endpoint"]
    assert endpoint["type"] == "sip"
    assert endpoint["uri"] == "sip:447700900123@sip.example.com:5060"
    headers = endpoint["headers"]
    assert uuid.UUID(headers.pop("Thread-Id")).version == 4
    assert headers == {"uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
                       "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
                       "Called-Number": "447700900123", "Caller-Number": "447700900000"}
    assert counted(registry, "hitl_sip_carrier_webhooks_total", carrier="vonage",
                   hook="answer", outcome="ok") == 1


async def test_a_signed_vonage_answer_by_post_keeps_the_thread_it_names(client: Client) -> None:
    body = compact({**dict(VONAGE_QUERY), "threadId": "thread-7"})
    r = await client.post("/carrier/vonage/answer", data=body, headers={
        "Authorization": f"Bearer {vonage_token(body)}", "Content-Type": "application/json"})
    assert r.status == 200, await r.text()
    assert (await r.json())[0]["endpoint"][0]["headers"]["Thread-Id"] == "thread-7"


async def test_vonage_answers_unsigned_tampered_or_expired_are_forbidden(
        client: Client, registry: WorkerRegistry) -> None:
    body = compact(dict(VONAGE_QUERY))
    tampered = body.replace(b"447700900000", b"447700900999")
    for headers, data in [
        ({}, body),
        ({"Authorization": f"Bearer {vonage_token(body)}"}, tampered),
        ({"Authorization": f"Bearer {vonage_token(body, exp=int(time.time()) - 300)}"}, body),
        ({"Authorization": f"Basic {vonage_token(body)}"}, body),
    ]:
        r = await client.post("/carrier/vonage/answer", data=data,
                              headers={**headers, "Content-Type": "application/json"})
        assert (r.status, await r.text()) == (403, "forbidden")
    r = await client.get("/carrier/vonage/answer?" + urlencode(VONAGE_QUERY), headers={
        "Authorization": f"Bearer {vonage_token(compact({'to': '1'}))}"})
    assert r.status == 403
    assert counted(registry, "hitl_sip_carrier_webhooks_total", carrier="vonage",
                   outcome="forbidden") == 5
    r = await client.post("/carrier/vonage/answer", data=b"[1, 2]", headers={
        "Authorization": f"Bearer {vonage_token(b'[1, 2]')}", "Content-Type": "application/json"})
    assert r.status == 400 and "JSON object" in await r.text()
    r = await client.post("/carrier/vonage/answer", data=b"[1, 2]", headers={
        "Authorization": "Bearer not.a.jwt", "Content-Type": "application/json"})
    assert r.status == 403  # forged and malformed: refused as forged


async def test_vonage_events_are_acknowledged_and_counted_by_status(
        client: Client, registry: WorkerRegistry) -> None:
    for status in ("ringing", "answered", "something-new"):
        body = compact({"status": status, "uuid": "u-1", "from": CALLER, "to": CALLED})
        r = await client.post("/carrier/vonage/event", data=body, headers={
            "Authorization": f"Bearer {vonage_token(body)}", "Content-Type": "application/json"})
        assert r.status == 200
    r = await client.post("/carrier/vonage/event", data=b"{}")
    assert r.status == 403
    for status in ("ringing", "answered", "other"):
        assert counted(registry, "hitl_sip_carrier_call_events_total", carrier="vonage",
                       status=status) == 1


async def test_a_carrier_without_its_secret_has_no_routes() -> None:
    config = carrier_config(twilio_auth_token="", vonage_signature_secret="")
    async with TestClient(TestServer(create_app(config, WorkerRegistry(), "t"))) as c:
        assert (await c.post("/carrier/twilio/voice", data=b"a=b")).status == 404
        assert (await c.get("/carrier/vonage/answer")).status == 404
        assert (await c.post("/carrier/vonage/event", data=b"{}")).status == 404
    config = carrier_config(vonage_signature_secret="")
    async with TestClient(TestServer(create_app(config, WorkerRegistry(), "t"))) as c:
        assert (await c.get("/carrier/vonage/answer")).status == 404
        assert (await c.post("/carrier/twilio/voice", data=b"a=b")).status == 403


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "key"), [
    ({"HITL_SIP_CARRIER_TWILIO_AUTH_TOKEN": AUTH_TOKEN}, "carrier.public_url"),
    ({"HITL_SIP_CARRIER_TWILIO_AUTH_TOKEN": "short"}, "carrier.twilio_auth_token"),
    ({"HITL_SIP_CARRIER_VONAGE_SIGNATURE_SECRET": "with a space in it!"},
     "carrier.vonage_signature_secret"),
    ({"HITL_SIP_CARRIER_PUBLIC_URL": "hub.example.com"}, "carrier.public_url"),
    ({"HITL_SIP_CARRIER_PUBLIC_URL": "https://u:p@hub.example.com"}, "carrier.public_url"),
    ({"HITL_SIP_CARRIER_SIP_URI": "sips:sip.example.com"}, "carrier.sip_uri"),
    ({"HITL_SIP_CARRIER_SIP_URI": "sip:sip.example.com?X-A=b"}, "carrier.sip_uri"),
    ({"HITL_SIP_CARRIER_SIP_URI": "http://sip.example.com"}, "carrier.sip_uri"),
])
def test_a_bad_carrier_setting_names_its_key_and_never_the_secret(env: dict[str, str],
                                                                   key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, env=env)
    assert raised.value.key == key
    assert "short" not in raised.value.message and "space in" not in raised.value.message


def test_the_secrets_stay_out_of_the_configurations_repr() -> None:
    config = carrier_config()
    assert AUTH_TOKEN not in repr(config) and VONAGE_SECRET not in repr(config)


def test_the_sip_uri_defaults_to_the_profiles_public_address_and_the_sip_port() -> None:
    nat = parse_profile('name = "n"\n[nat]\npublic_address = "203.0.113.7"\n')
    config = carrier_config(sip_uri="")
    assert resolve_sip_uri(config, nat).carrier.sip_uri == "sip:203.0.113.7:5060"
    tcp = dataclasses.replace(config, sip=dataclasses.replace(config.sip, transports=("tcp",)))
    assert resolve_sip_uri(tcp, nat).carrier.sip_uri == "sip:203.0.113.7:5060;transport=tcp"
    given = carrier_config()
    assert resolve_sip_uri(given, nat) is given
    with pytest.raises(ConfigError) as raised:
        resolve_sip_uri(config, parse_profile('name = "n"\n'))
    assert raised.value.key == "carrier.sip_uri"
    off = carrier_config(sip_uri="", twilio_auth_token="", vonage_signature_secret="")
    assert resolve_sip_uri(off, parse_profile('name = "n"\n')) is off


async def test_workers_never_get_the_carrier_secrets(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    seen: dict[str, str] = {}

    async def spawn(*args: str, env: dict[str, str], **kwargs: Any) -> Any:
        seen.update(env)
        raise OSError("not started in a unit test")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    monkeypatch.setenv("HITL_SIP_CARRIER_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("HITL_SIP_CARRIER_VONAGE_SIGNATURE_SECRET", VONAGE_SECRET)
    supervisor = Supervisor(carrier_config(), WorkerRegistry(), "ws://127.0.0.1:1", "t")
    with pytest.raises(OSError):
        await supervisor._spawn(supervisor.slots[0])
    assert "HITL_SIP_CARRIER_TWILIO_AUTH_TOKEN" not in seen
    assert "HITL_SIP_CARRIER_VONAGE_SIGNATURE_SECRET" not in seen
    worker = json.loads(seen["HITL_SIP_WORKER_CONFIG"])["carrier"]
    assert worker["twilio_auth_token"] == worker["vonage_signature_secret"] == ""
    assert worker["sip_uri"] == SIP_URI
    assert AUTH_TOKEN not in seen["HITL_SIP_WORKER_CONFIG"]


def test_serve_without_a_sip_uri_to_give_the_carrier_exits_2_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HITL_SIP_CARRIER_VONAGE_SIGNATURE_SECRET", VONAGE_SECRET)
    # the local profile publishes no address: nothing to build our SIP URI from
    assert main(["serve", "--data-dir", str(tmp_path), "--profile", "local"]) == 2
    err = capsys.readouterr().err
    assert "carrier.sip_uri" in err and VONAGE_SECRET not in err
