"""Carrier call control (hitl_sip/hub/carrier_control.py): the requests that reach stand-ins of
Twilio's REST API (plain HTTP on 127.0.0.1) and of Vonage's Voice API (HTTPS on 127.0.0.1,
through the ``vonage`` SDK) — path, authentication and body — and how their refusals come
back; which calls name a carrier leg; the settings and what the workers never get."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hitl_sip.config import Config, load_config
from hitl_sip.errors import ConfigError
from hitl_sip.hub.carrier_control import (
    TWILIO_PARENT_KEY,
    VONAGE_UUID_KEY,
    Carrier,
    CarrierControl,
    CarrierError,
    CarrierLeg,
    TwilioClient,
    VonageClient,
    carrier_leg,
    twiml_dial_number,
)
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.supervisor import Supervisor
from tests.support.net import free_port

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "f" * 32  # the shape of an Auth Token
PARENT = "CA" + "fedcba9876543210" * 2
UUID = "63f61863-4a51-4f6b-86e1-46edebcf9356"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
NUMBER = "+15551234567"


@dataclass
class StandIn:
    """An HTTP(S) server on 127.0.0.1 that records every request and answers as told."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append({"method": request.method, "path": request.path,
                              "headers": dict(request.headers), "body": raw})
        return web.json_response(self.body, status=self.status)


async def serve(stand_in: StandIn, ssl_context: ssl.SSLContext | None = None
                ) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    stand_in.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    return runner


@pytest.fixture
async def twilio_api() -> AsyncIterator[StandIn]:
    stand_in = StandIn(body={"sid": PARENT, "status": "in-progress"})
    runner = await serve(stand_in)
    yield stand_in
    await runner.cleanup()


def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def self_signed_ca(directory: Path) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 that is its own CA (the SDK's requests trusts it through
    REQUESTS_CA_BUNDLE): the server's TLS context."""
    key = private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vonage stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_text(pem(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "ca.pem", directory / "key.pem")
    return context


@dataclass
class VonageApi:
    stand_in: StandIn
    key: rsa.RSAPrivateKey


@pytest.fixture
async def vonage_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> AsyncIterator[VonageApi]:
    context = self_signed_ca(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    stand_in = StandIn(status=204)
    runner = await serve(stand_in, context)
    yield VonageApi(stand_in, private_key())
    await runner.cleanup()


def vonage_client(api: VonageApi) -> VonageClient:
    return VonageClient(APP_ID, pem(api.key), api.stand_in.url, request_timeout=5)


# --- which calls have a carrier leg -------------------------------------------------------


def test_a_call_names_its_carrier_leg_only_in_the_carrier_s_format() -> None:
    assert carrier_leg({TWILIO_PARENT_KEY: PARENT}, "+14155550123") == CarrierLeg(
        Carrier.TWILIO, PARENT, "+14155550123")
    assert carrier_leg({VONAGE_UUID_KEY: UUID.upper()}) == CarrierLeg(Carrier.VONAGE, UUID)
    assert carrier_leg({VONAGE_UUID_KEY: UUID}, "4155550123") == CarrierLeg(
        Carrier.VONAGE, UUID)  # the called number is no E.164 number: left out
    for bad in ("CA123", "CA../../Accounts", PARENT + "0", "", "CA" + "g" * 32):
        assert carrier_leg({TWILIO_PARENT_KEY: bad}) is None, bad
    assert carrier_leg({VONAGE_UUID_KEY: "not-a-uuid/../x"}) is None
    assert carrier_leg({"X-Twilio-CallSid": PARENT}) is None  # a trunk call: no REST


def test_the_control_acts_only_for_the_carriers_it_has_credentials_for() -> None:
    control = CarrierControl(twilio=TwilioClient(ACCOUNT, TOKEN))
    assert control.leg({TWILIO_PARENT_KEY: PARENT}) is not None
    assert control.leg({VONAGE_UUID_KEY: UUID}) is None


def test_twiml_dials_the_number() -> None:
    assert twiml_dial_number(NUMBER) == (
        "<Response><Dial><Number>+15551234567</Number></Dial></Response>")
    assert "&lt;" in twiml_dial_number("<x>")  # escaped, should a number ever carry markup


# --- Twilio ---------------------------------------------------------------------------------


async def test_a_twilio_transfer_updates_the_parent_call_with_dial_number(
    twilio_api: StandIn,
) -> None:
    client = TwilioClient(ACCOUNT, TOKEN, twilio_api.url)
    leg = CarrierLeg(Carrier.TWILIO, PARENT)
    await client.transfer(leg, NUMBER)
    await client.hangup(leg)
    transfer, hangup = twilio_api.requests
    assert transfer["method"] == "POST"
    assert transfer["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{PARENT}.json"
    scheme, _, credentials = transfer["headers"]["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{ACCOUNT}:{TOKEN}"
    assert transfer["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(transfer["body"].decode()) == [
        ("Twiml", "<Response><Dial><Number>+15551234567</Number></Dial></Response>")]
    assert hangup["path"] == transfer["path"]
    assert parse_qsl(hangup["body"].decode()) == [("Status", "completed")]
    assert TOKEN not in repr(client)


async def test_a_twilio_refusal_is_a_carrier_error_with_twilio_s_code(
    twilio_api: StandIn,
) -> None:
    twilio_api.status = 400
    twilio_api.body = {"code": 21220, "status": 400,
                       "message": f"Call to {NUMBER} is not in-progress. Cannot redirect."}
    client = TwilioClient(ACCOUNT, TOKEN, twilio_api.url)
    with pytest.raises(CarrierError) as raised:
        await client.transfer(CarrierLeg(Carrier.TWILIO, PARENT), NUMBER)
    assert raised.value.status == 400 and raised.value.carrier is Carrier.TWILIO
    assert "21220" in str(raised.value)
    assert TOKEN not in str(raised.value) and NUMBER not in str(raised.value)


async def test_an_unreachable_twilio_is_a_carrier_error_without_status() -> None:
    client = TwilioClient(ACCOUNT, TOKEN, f"http://127.0.0.1:{free_port()}",
                          request_timeout=2)
    with pytest.raises(CarrierError) as raised:
        await client.hangup(CarrierLeg(Carrier.TWILIO, PARENT))
    assert raised.value.status is None


# --- Vonage ---------------------------------------------------------------------------------


async def test_a_vonage_transfer_puts_an_ncco_connect_to_the_number(
    vonage_api: VonageApi,
) -> None:
    client = vonage_client(vonage_api)
    await client.transfer(CarrierLeg(Carrier.VONAGE, UUID, "+14155550123"), NUMBER)
    await client.transfer(CarrierLeg(Carrier.VONAGE, UUID), NUMBER)
    await client.hangup(CarrierLeg(Carrier.VONAGE, UUID))
    named, anonymous, hangup = vonage_api.stand_in.requests
    assert (named["method"], named["path"]) == ("PUT", f"/v1/calls/{UUID}")
    assert json.loads(named["body"]) == {"action": "transfer", "destination": {
        "type": "ncco", "ncco": [{"endpoint": [{"number": "15551234567", "type": "phone"}],
                                  "from": "14155550123", "action": "connect"}]}}
    ncco = json.loads(anonymous["body"])["destination"]["ncco"]
    assert ncco[0]["randomFromNumber"] is True and "from" not in ncco[0]
    assert (hangup["method"], hangup["path"]) == ("PUT", f"/v1/calls/{UUID}")
    assert json.loads(hangup["body"]) == {"action": "hangup"}
    # the application's JWT, signed with its private key
    scheme, _, token = named["headers"]["Authorization"].partition(" ")
    claims = jwt.decode(token, vonage_api.key.public_key(), algorithms=["RS256"])
    assert scheme == "Bearer" and claims["application_id"] == APP_ID
    assert "PRIVATE" not in repr(client)


async def test_a_vonage_refusal_is_a_carrier_error_with_the_status(
    vonage_api: VonageApi,
) -> None:
    vonage_api.stand_in.status = 404
    vonage_api.stand_in.body = {"title": "Not Found", "type": "https://developer.nexmo.com"}
    with pytest.raises(CarrierError) as raised:
        await vonage_client(vonage_api).hangup(CarrierLeg(Carrier.VONAGE, UUID))
    assert raised.value.status == 404 and raised.value.carrier is Carrier.VONAGE


async def test_an_unreachable_vonage_is_a_carrier_error_without_status() -> None:
    client = VonageClient(APP_ID, pem(private_key()), f"https://127.0.0.1:{free_port()}",
                          request_timeout=2)
    with pytest.raises(CarrierError) as raised:
        await asyncio.wait_for(client.hangup(CarrierLeg(Carrier.VONAGE, UUID)), 20)
    assert raised.value.status is None


# --- settings -------------------------------------------------------------------------------


def control_config(tmp_path: Path, **carrier: str) -> Config:
    values = {"public_url": "https://hub.example.com", "sip_uri": "sip:127.0.0.1:5060",
              "twilio_auth_token": TOKEN, **carrier}
    return load_config(None, env={}, overrides={
        "http.dashboard_dir": "", "data_dir": str(tmp_path),
        **{f"carrier.{k}": v for k, v in values.items()}})


def test_the_control_is_built_from_the_carrier_settings(tmp_path: Path) -> None:
    key = tmp_path / "vonage.key"
    key.write_text(pem(private_key()))
    config = control_config(tmp_path, twilio_account_sid=ACCOUNT,
                            vonage_application_id=APP_ID, vonage_private_key_path=str(key))
    assert set(CarrierControl.from_config(config).clients) == {Carrier.TWILIO, Carrier.VONAGE}
    assert not CarrierControl.from_config(control_config(tmp_path)).clients
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as raised:
        CarrierControl.from_config(config)
    assert raised.value.key == "carrier.vonage_private_key_path"


@pytest.mark.parametrize(("carrier", "key"), [
    ({"twilio_account_sid": "AC123"}, "carrier.twilio_account_sid"),
    ({"twilio_account_sid": ACCOUNT, "twilio_auth_token": "", "public_url": ""},
     "carrier.twilio_auth_token"),
    ({"vonage_application_id": APP_ID}, "carrier.vonage_private_key_path"),
    ({"vonage_private_key_path": "/nonexistent.key"}, "carrier.vonage_application_id"),
    ({"vonage_application_id": APP_ID, "vonage_private_key_path": "/nonexistent.key"},
     "carrier.vonage_private_key_path"),
    ({"vonage_api_url": "http://127.0.0.1:8080"}, "carrier.vonage_api_url"),
    ({"twilio_api_url": "https://api.twilio.com/2010-04-01"}, "carrier.twilio_api_url"),
    ({"refer_timeout": "0"}, "carrier.refer_timeout"),
])
def test_carrier_control_settings_are_checked(tmp_path: Path, carrier: dict[str, str],
                                              key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        control_config(tmp_path, **carrier)
    assert raised.value.key == key
    assert TOKEN not in str(raised.value)


async def test_workers_never_get_the_carriers_api_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    seen: dict[str, str] = {}

    async def spawn(*args: str, env: dict[str, str], **kwargs: Any) -> Any:
        seen.update(env)
        raise OSError("not started in a unit test")

    key = tmp_path / "vonage.key"
    key.write_text(pem(private_key()))
    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    config = control_config(tmp_path, twilio_account_sid=ACCOUNT,
                            vonage_application_id=APP_ID, vonage_private_key_path=str(key))
    supervisor = Supervisor(config, WorkerRegistry(), "ws://127.0.0.1:1", "t")
    with pytest.raises(OSError):
        await supervisor._spawn(supervisor.slots[0])
    worker = json.loads(seen["HITL_SIP_WORKER_CONFIG"])["carrier"]
    assert worker["twilio_account_sid"] == worker["vonage_application_id"] == ""
    assert worker["vonage_private_key_path"] == ""
    for secret in (ACCOUNT, TOKEN, APP_ID, str(key)):
        assert secret not in seen["HITL_SIP_WORKER_CONFIG"]
