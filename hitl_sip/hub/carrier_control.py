"""Carrier call control: what the SIP leg alone cannot do, through the carrier's REST API.

A call that reached us through the hub's voice webhooks (hitl_sip/hub/carrier.py) has a leg
on the carrier's side — the caller's — that the carrier's API can move or end:

- **Twilio** (plain HTTPS with aiohttp, no SDK): our SIP leg is the ``<Dial>`` child of the
  caller's call, whose CallSid arrives as ``X-Parent-Call-Sid`` (metadata
  ``twilio_parent_call_sid``). ``POST {twilio_api_url}/2010-04-01/Accounts/{AccountSid}/
  Calls/{CallSid}.json`` with HTTP basic auth ``AccountSid:AuthToken`` and the form field
  ``Twiml=<Response><Dial><Number>+1…</Number></Dial></Response>`` moves the caller to the
  number (Twilio then ends the ``<Dial>``: our leg gets a BYE); ``Status=completed`` hangs
  the caller up.
- **Vonage** (the ``vonage`` SDK, Voice API with the application's JWT): the caller's leg
  is the call ``uuid`` the answer webhook passed on (``X-uuid``, metadata
  ``vonage_call_uuid``). ``voice.transfer_call_ncco`` (``PUT /v1/calls/{uuid}``, action
  ``transfer``) moves it to an NCCO ``connect`` to the number (``from``: the number the
  caller dialled, else one of the application's numbers at random); ``voice.hangup`` ends it.
  The SDK is synchronous: it runs in a thread.

Every failure is a :class:`CarrierError` (the carrier, the HTTP status when there is one, a
message naming no credential). Call ids from the SIP headers are checked against the
carriers' formats before they go into a URL; numbers never go into a log message text.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization

from hitl_sip.config import Config
from hitl_sip.errors import ConfigError, HitlSipError

log = logging.getLogger(__name__)

TWILIO_PARENT_KEY = "twilio_parent_call_sid"  # metadata key (profile [headers] map)
VONAGE_UUID_KEY = "vonage_call_uuid"
REQUEST_TIMEOUT = 10.0  # seconds for one REST request, connection included

_TWILIO_SID_RE = re.compile(r"CA[0-9a-fA-F]{32}")
_VONAGE_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                             r"[0-9a-fA-F]{12}")
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")


class Carrier(StrEnum):
    TWILIO = "twilio"
    VONAGE = "vonage"


class CarrierError(HitlSipError):
    """A carrier's API refused or did not answer; ``status`` is its HTTP status (None: no
    answer)."""

    def __init__(self, carrier: Carrier, message: str, status: int | None = None) -> None:
        super().__init__(f"{carrier.value}: {message}")
        self.carrier = carrier
        self.status = status


@dataclass(frozen=True)
class CarrierLeg:
    """The carrier's side of one of our calls: what its API acts on."""

    carrier: Carrier
    call_id: str  # Twilio: the parent call's CallSid; Vonage: the caller's call uuid
    called: str = ""  # the number the caller dialled (+E.164), when known


def carrier_leg(metadata: Mapping[str, Any], called: str | None = None) -> CarrierLeg | None:
    """The carrier leg the call's metadata names (the profile maps the headers), or None;
    a value not in the carrier's format is ignored (it came in a SIP header)."""
    number = called if called and _E164_RE.fullmatch(called) else ""
    sid = str(metadata.get(TWILIO_PARENT_KEY) or "")
    if _TWILIO_SID_RE.fullmatch(sid):
        return CarrierLeg(Carrier.TWILIO, sid, number)
    uuid = str(metadata.get(VONAGE_UUID_KEY) or "")
    if _VONAGE_UUID_RE.fullmatch(uuid):
        return CarrierLeg(Carrier.VONAGE, uuid.lower(), number)
    return None


class CarrierClient(Protocol):
    """One carrier's REST control of a call leg."""

    carrier: Carrier

    async def transfer(self, leg: CarrierLeg, number: str) -> None: ...

    async def hangup(self, leg: CarrierLeg) -> None: ...


# --- Twilio --------------------------------------------------------------------------------


def twiml_dial_number(number: str) -> str:
    """``<Response><Dial><Number>+1…</Number></Dial></Response>`` (ElementTree escapes)."""
    response = ET.Element("Response")
    ET.SubElement(ET.SubElement(response, "Dial"), "Number").text = number
    return ET.tostring(response, encoding="unicode")


class TwilioClient:
    """Twilio's Calls resource, updated with plain HTTPS."""

    carrier = Carrier.TWILIO

    def __init__(self, account_sid: str, auth_token: str,
                 base_url: str = "https://api.twilio.com", *,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.account_sid = account_sid
        basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}"}
        self.base_url = base_url.rstrip("/")
        self.request_timeout = request_timeout

    def __repr__(self) -> str:  # never the token
        return f"TwilioClient({self.account_sid}, {self.base_url})"

    def call_url(self, call_sid: str) -> str:
        return (f"{self.base_url}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}"
                f"/Calls/{quote(call_sid, safe='')}.json")

    async def transfer(self, leg: CarrierLeg, number: str) -> None:
        await self._update(leg.call_id, {"Twiml": twiml_dial_number(number)}, "transfer")

    async def hangup(self, leg: CarrierLeg) -> None:
        await self._update(leg.call_id, {"Status": "completed"}, "hangup")

    async def _update(self, call_sid: str, form: dict[str, str], what: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    self.call_url(call_sid), data=form, headers=self._headers,
                    allow_redirects=False) as response:
                if response.status < 300:
                    log.info("twilio call %s: %s done (%d)", call_sid, what, response.status)
                    return
                detail = await _twilio_error(response)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise CarrierError(Carrier.TWILIO, f"{what}: no answer from the API "
                               f"({type(e).__name__})") from e
        raise CarrierError(Carrier.TWILIO, f"{what}: HTTP {response.status}{detail}",
                           response.status)


async def _twilio_error(response: aiohttp.ClientResponse) -> str:
    """`` (code 21220)`` from Twilio's JSON error, or "": the code only (Twilio documents
    each), its message may quote the number."""
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return ""
    code = body.get("code") if isinstance(body, dict) else None
    return f" (code {code})" if isinstance(code, int) else ""


# --- Vonage --------------------------------------------------------------------------------


class VonageClient:
    """Vonage's Voice API through the ``vonage`` SDK (run in a worker thread)."""

    carrier = Carrier.VONAGE

    def __init__(self, application_id: str, private_key: str,
                 api_url: str = "https://api.nexmo.com", *,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        # imported only when configured: the SDK takes over half a second to import
        from vonage import Auth, HttpClientOptions, Vonage  # noqa: PLC0415 - when configured

        self.api_url = api_url
        host = urlsplit(api_url).netloc  # the SDK speaks https to this host[:port]
        options = HttpClientOptions(api_host=host, timeout=max(1, round(request_timeout)),
                                    max_retries=1)
        self._client: Any = Vonage(Auth(application_id=application_id,
                                        private_key=private_key), options)

    def __repr__(self) -> str:  # never the key
        return f"VonageClient({self.api_url})"

    async def transfer(self, leg: CarrierLeg, number: str) -> None:
        from vonage_voice import Connect, PhoneEndpoint  # noqa: PLC0415 - when configured

        dialled = leg.called.removeprefix("+")
        connect = Connect(endpoint=[PhoneEndpoint(number=number.removeprefix("+"))],
                          **({"from_": dialled} if dialled else {"randomFromNumber": True}))
        await self._call("transfer", self._client.voice.transfer_call_ncco, leg.call_id,
                         [connect])

    async def hangup(self, leg: CarrierLeg) -> None:
        await self._call("hangup", self._client.voice.hangup, leg.call_id)

    async def _call(self, what: str, method: Any, *args: Any) -> None:
        import requests  # noqa: PLC0415 - the SDK's transport, loaded with it
        from vonage import VonageError  # noqa: PLC0415 - when configured
        from vonage_http_client.errors import HttpRequestError  # noqa: PLC0415

        try:
            await asyncio.to_thread(method, *args)
        except HttpRequestError as e:
            status = int(e.response.status_code)
            raise CarrierError(Carrier.VONAGE, f"{what}: HTTP {status}", status) from e
        except (VonageError, requests.RequestException, jwt.PyJWTError, ValueError) as e:
            raise CarrierError(Carrier.VONAGE, f"{what}: no answer from the API "
                               f"({type(e).__name__})") from e
        log.info("vonage call %s: %s done", args[0], what)


# --- the hub's view ------------------------------------------------------------------------


class CarrierControl:
    """The carriers whose API credentials are configured, and the legs they can act on."""

    def __init__(self, twilio: CarrierClient | None = None,
                 vonage: CarrierClient | None = None) -> None:
        self.clients: dict[Carrier, CarrierClient] = {
            c.carrier: c for c in (twilio, vonage) if c is not None}

    @classmethod
    def from_config(cls, config: Config) -> CarrierControl:
        """From ``[carrier]``; :class:`ConfigError` when the Vonage key cannot be read."""
        c = config.carrier
        twilio = (TwilioClient(c.twilio_account_sid, c.twilio_auth_token, c.twilio_api_url)
                  if c.twilio_account_sid and c.twilio_auth_token else None)
        vonage = None
        if c.vonage_application_id and c.vonage_private_key_path:
            path = config.resolve_path(c.vonage_private_key_path)
            try:
                key = path.read_text(encoding="ascii")
                serialization.load_pem_private_key(key.encode(), password=None)
            except (OSError, ValueError, TypeError) as e:
                raise ConfigError("carrier.vonage_private_key_path", f"{path}: expected the "
                                  "application's private key (PEM, unencrypted)") from e
            vonage = VonageClient(c.vonage_application_id, key, c.vonage_api_url)
        return cls(twilio, vonage)

    def leg(self, metadata: Mapping[str, Any], called: str | None = None) -> CarrierLeg | None:
        """The call's carrier leg when this hub can act on it (credentials for its carrier)."""
        leg = carrier_leg(metadata, called)
        return leg if leg is not None and leg.carrier in self.clients else None

    async def transfer(self, leg: CarrierLeg, number: str) -> None:
        """Move the caller to ``number``; :class:`CarrierError` otherwise."""
        await self.clients[leg.carrier].transfer(leg, number)

    async def hangup(self, leg: CarrierLeg) -> None:
        """End the carrier's leg (when a BYE on ours is not enough); :class:`CarrierError`
        otherwise."""
        await self.clients[leg.carrier].hangup(leg)
