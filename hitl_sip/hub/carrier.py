"""Voice webhooks for phone numbers on Twilio and Vonage: the carrier asks where a call goes,
the hub answers "to our SIP URI", with the call's thread and the caller in ``X-`` headers, so
the SIP leg arrives with its thread already known (the profiles map ``X-Thread-Id`` to the
``thread_id`` metadata key the worker reads).

- ``POST /carrier/twilio/voice`` — Twilio's voice webhook (form-encoded). Authenticated by
  ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the account's Auth Token, over the URL
  Twilio called (``carrier.public_url`` + the path and query) followed by every POST
  parameter sorted by name, name then value. Answers TwiML
  ``<Response><Dial answerOnBridge="true"><Sip>sip:…?X-Thread-Id=…&amp;…</Sip></Dial></Response>``
  (Twilio turns the URI's ``?name=value`` pairs into INVITE headers).
- ``GET|POST /carrier/vonage/answer`` — Vonage's answer webhook (query or JSON). Authenticated
  by the signed JWT in ``Authorization: Bearer`` (HS256 with the account's signature secret;
  ``iat`` required and at most five minutes old, ``exp``/``nbf`` when present, and when the
  token carries ``payload_hash``, the SHA-256 of the payload). Answers an NCCO ``connect`` to
  a ``sip`` endpoint whose ``headers`` Vonage sends as ``X-<name>``.
- ``POST /carrier/vonage/event`` — Vonage's call events, verified the same way, counted by
  status and acknowledged 200.

The thread is the ``threadId`` the carrier passes (a query parameter of the webhook URL, or a
form/JSON field), else a fresh UUID. A missing or bad signature is 403, a malformed body 400,
a body over 64 KiB 413 — each counted (``hitl_sip_carrier_webhooks_total``) and logged
without caller data. Every value taken from a request is cleaned, bounded and percent-encoded
(SIP URI) or escaped by the XML/JSON writer, never pasted into markup.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import jwt
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hitl_sip.config import CarrierConfig, Config
from hitl_sip.errors import ConfigError, HitlSipError
from hitl_sip.metrics import Counter, Registry
from hitl_sip.protocol.agent import explain
from hitl_sip.protocol.wire import WireError, loads_object
from hitl_sip.sip.metadata import clean_value
from hitl_sip.sip.profile import TrunkProfile
from hitl_sip.sip.uri import SipUri

log = logging.getLogger(__name__)

TWILIO_VOICE = "/carrier/twilio/voice"
VONAGE_ANSWER = "/carrier/vonage/answer"
VONAGE_EVENT = "/carrier/vonage/event"

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
MAX_BODY = 64 * 1024
MAX_FIELDS = 200
MAX_VALUE = 64  # a value passed on in a header (numbers, SIDs, UUIDs, a caller name)
MAX_HEADERS_PART = 1024  # Twilio: the headers after the <Sip> URI's '?'
VONAGE_MAX_AGE = 300.0  # seconds a signed Vonage webhook's iat may lie in the past
CLOCK_LEEWAY = 30.0  # seconds of clock skew allowed on iat / exp / nbf

# the SIP headers the leg carries (profiles map X-Thread-Id to thread_id, and the Twilio one
# X-Parent-Call-Sid to twilio_parent_call_sid; Vonage's uuid headers are mapped already)
THREAD_HEADER = "X-Thread-Id"
TWILIO_CALL_HEADER = "X-Parent-Call-Sid"  # the inbound call's CallSid (the <Dial> leg's parent)
CALLER_HEADER = "X-Caller-Number"
CALLER_NAME_HEADER = "X-Caller-Name"
CALLED_HEADER = "X-Called-Number"

# Vonage call statuses counted under their own label (anything else is "other")
VONAGE_STATUSES = frozenset({
    "started", "ringing", "answered", "busy", "cancelled", "unanswered", "disconnected",
    "rejected", "failed", "human", "machine", "timeout", "completed", "transfer", "input",
    "record",
})

_THREAD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_NUMBER_RE = re.compile(r"\+?[0-9]{3,20}")
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

ThreadId = Annotated[str, Field(pattern=f"^{_THREAD_RE.pattern}$", max_length=128)]
Value = Annotated[str, Field(max_length=1024)]


class WebhookError(HitlSipError):
    """A webhook refused: ``status`` 400/403/413; ``outcome`` labels the counter; the
    message names what was wrong, never a value from the request."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


def forbidden(message: str) -> WebhookError:
    return WebhookError(403, "forbidden", message)


def bad_request(message: str) -> WebhookError:
    return WebhookError(400, "bad_request", message)


# --- signatures ------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 keyed with the Auth Token over ``url``
    followed by each parameter, sorted by name, as name then value (a repeated name: its
    distinct values in sorted order, as Twilio's helper libraries do)."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(grouped)
                         for value in sorted(grouped[name]))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """``url`` as given, and with its port removed or the scheme's default port added:
    what Twilio signed depends on how the number's webhook URL was written."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    variants = [url]
    if parts.port is not None:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    elif parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{port}")))
    return variants


def twilio_signature_valid(auth_token: str, url: str, params: Sequence[tuple[str, str]],
                           signature: str) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` value) signs ``url`` and
    ``params``; compared in constant time."""
    if not signature:
        return False
    given = signature.strip().encode()
    found = False
    for variant in _url_variants(url):
        expected = twilio_signature(auth_token, variant, params).encode()
        found |= hmac.compare_digest(expected, given)
    return found


def vonage_claims(token: str, secret: str, payloads: Sequence[bytes], *,
                  now: float | None = None) -> dict[str, Any]:
    """The claims of Vonage's signed-webhook JWT, or :class:`WebhookError` (403).

    HS256 with the signature secret only (no other algorithm, never ``none``); ``iat`` is
    required and may be at most :data:`VONAGE_MAX_AGE` old; ``exp`` and ``nbf`` are checked
    when present; a ``payload_hash`` claim must be the SHA-256 (hex) of one of ``payloads``
    (the ways the same payload can be written, see :func:`payload_candidates`)."""
    with warnings.catch_warnings():
        # a secret shorter than SHA-256's 32 bytes is the account's choice, checked at start
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, secret, algorithms=["HS256"], options={"require": ["iat"]},
                leeway=CLOCK_LEEWAY)
        except jwt.ExpiredSignatureError as e:
            raise forbidden("token expired") from e
        except jwt.ImmatureSignatureError as e:
            raise forbidden("token not valid yet") from e
        except jwt.MissingRequiredClaimError as e:
            raise forbidden("token without iat") from e
        except jwt.InvalidSignatureError as e:
            raise forbidden("bad token signature") from e
        except jwt.InvalidTokenError as e:
            raise forbidden(f"bad token ({type(e).__name__})") from e
    current = time.time() if now is None else now
    iat = claims["iat"]
    if not isinstance(iat, (int, float)) or current - iat > VONAGE_MAX_AGE + CLOCK_LEEWAY:
        raise forbidden("token too old")
    if "payload_hash" in claims:
        claimed = claims["payload_hash"]
        if not isinstance(claimed, str):
            raise forbidden("payload_hash is not a string")
        given = claimed.strip().lower().encode()
        found = False
        for payload in payloads:
            found |= hmac.compare_digest(hashlib.sha256(payload).hexdigest().encode(), given)
        if not found:
            raise forbidden("payload_hash does not match the payload")
    return claims


def payload_candidates(raw: bytes | None, data: Mapping[str, Any]) -> list[bytes]:
    """The bytes Vonage may have hashed for ``payload_hash``: the body as received, and the
    payload (a JSON body, or the query of a GET) written as compact JSON in its order."""
    compact = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False).encode()
    return [raw, compact] if raw else [compact]


# --- what we answer --------------------------------------------------------------------------


@dataclass(frozen=True)
class CallDetails:
    """What the carrier told us about a call (cleaned), passed on to the SIP leg."""

    thread_id: str
    caller: str = ""
    called: str = ""
    caller_name: str = ""
    call_id: str = ""  # Twilio's CallSid; Vonage's call uuid
    conversation_id: str = ""  # Vonage's conversation_uuid


def _clean(value: str | None) -> str:
    return clean_value(value or "", MAX_VALUE)


def thread_or_new(*candidates: str | None) -> str:
    """The first thread id given (already checked by the model), else a fresh UUID."""
    for candidate in candidates:
        if candidate:
            return candidate
    return str(uuid.uuid4())


def sip_target(sip_uri: str, called: str) -> SipUri:
    """Our SIP URI with the dialled number as its user part, when it has none and the number
    is one (``+14155550123``, ``447700900123``): the worker reads the called number there."""
    uri = SipUri.parse(sip_uri)
    if uri.user is None and _NUMBER_RE.fullmatch(called):
        uri = dataclasses.replace(uri, user=called)
    return dataclasses.replace(uri, headers={})


def uri_with_headers(uri: SipUri, headers: Sequence[tuple[str, str]]) -> str:
    """``uri`` with RFC 3261 URI headers (``?name=value&…``), each value percent-encoded
    (every character but the unreserved ones), so no value can add a header or a parameter.
    Optional headers at the end are dropped when the part would pass Twilio's 1024
    characters."""
    for name, _ in headers:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise ValueError(f"not a header name: {name!r}")
    kept = list(headers)
    while True:
        part = "&".join(f"{name}={quote(value, safe='')}" for name, value in kept)
        if len(part) <= MAX_HEADERS_PART or len(kept) <= 1:
            break
        kept.pop()
    return uri.serialize() + (f"?{part}" if part else "")


def twilio_headers(details: CallDetails) -> list[tuple[str, str]]:
    """The ``X-`` headers for the ``<Sip>`` URI, most important first."""
    headers = [(THREAD_HEADER, details.thread_id)]
    for name, value in ((TWILIO_CALL_HEADER, details.call_id), (CALLED_HEADER, details.called),
                        (CALLER_HEADER, details.caller),
                        (CALLER_NAME_HEADER, details.caller_name)):
        if value:
            headers.append((name, value))
    return headers


def vonage_headers(details: CallDetails) -> dict[str, str]:
    """The NCCO endpoint's ``headers``: Vonage sends each as ``X-<name>`` (``uuid`` and
    ``conversation_uuid`` as the vonage profile maps them)."""
    headers = {THREAD_HEADER.removeprefix("X-"): details.thread_id}
    for name, value in (("uuid", details.call_id), ("conversation_uuid", details.conversation_id),
                        (CALLED_HEADER.removeprefix("X-"), details.called),
                        (CALLER_HEADER.removeprefix("X-"), details.caller)):
        if value:
            headers[name] = value
    return headers


def twiml_dial_sip(sip_uri: str) -> bytes:
    """``<Response><Dial answerOnBridge="true"><Sip>URI</Sip></Dial></Response>``: the caller
    hears ringing until our leg answers. Written by ElementTree, which escapes ``&`` and the
    rest."""
    response = ET.Element("Response")
    dial = ET.SubElement(response, "Dial", {"answerOnBridge": "true"})
    ET.SubElement(dial, "Sip").text = sip_uri
    document: bytes = ET.tostring(response, encoding="utf-8", xml_declaration=True)
    return document


def ncco_connect_sip(sip_uri: str, headers: Mapping[str, str],
                     caller: str = "") -> list[dict[str, Any]]:
    """An NCCO ``connect`` to our SIP endpoint; ``from`` is the caller's number when it is
    one (so the INVITE's From carries it)."""
    action: dict[str, Any] = {"action": "connect",
                              "endpoint": [{"type": "sip", "uri": sip_uri,
                                            "headers": dict(headers)}]}
    if _NUMBER_RE.fullmatch(caller):
        action["from"] = caller.removeprefix("+")
    return [action]


# --- the wire models -------------------------------------------------------------------------


class TwilioVoiceParams(BaseModel):
    """The parameters of Twilio's voice webhook we use (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    call_sid: Value = Field("", alias="CallSid")
    caller: Value = Field("", alias="From")
    called: Value = Field("", alias="To")
    caller_name: Value = Field("", alias="CallerName")
    thread_id: ThreadId | None = Field(None, alias="threadId")


class VonageAnswer(BaseModel):
    """The fields of Vonage's answer webhook we use (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    uuid: Value = ""
    conversation_uuid: Value = ""
    caller: Value | None = Field("", alias="from")
    called: Value | None = Field("", alias="to")
    thread_id: ThreadId | None = Field(None, alias="threadId")


class VonageEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    status: Value = ""
    uuid: Value = ""


class QueryThread(BaseModel):
    """``threadId`` as a query parameter of the webhook URL the carrier was given."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    thread_id: ThreadId | None = Field(None, alias="threadId")


# --- the handlers ----------------------------------------------------------------------------


async def read_bounded(request: web.Request, limit: int = MAX_BODY) -> bytes:
    """The request body, or :class:`WebhookError` 413 past ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise WebhookError(413, "too_large", f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise WebhookError(413, "too_large", f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body (UTF-8), or :class:`WebhookError` 400."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                         errors="strict", max_num_fields=MAX_FIELDS)
    except ValueError as e:  # UnicodeDecodeError included
        raise bad_request("expected a UTF-8 form-encoded body") from e


M = TypeVar("M", bound=BaseModel)


def _model(model: type[M], data: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(data))
    except ValidationError as e:
        raise bad_request(explain(e)) from e


def _first(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    first: dict[str, str] = {}
    for name, value in pairs:
        first.setdefault(name, value)
    return first


class CarrierWebhooks:
    """The three routes' handlers, the secrets and the counters."""

    def __init__(self, config: CarrierConfig, metrics: Registry) -> None:
        self.config = config
        self.requests: Counter = metrics.counter(
            "hitl_sip_carrier_webhooks_total",
            "Carrier voice webhooks by carrier, hook and outcome (ok, forbidden, bad_request, "
            "too_large)", ["carrier", "hook", "outcome"])
        self.events: Counter = metrics.counter(
            "hitl_sip_carrier_call_events_total", "Carrier call events by status",
            ["carrier", "status"])

    def _refused(self, request: web.Request, carrier: str, hook: str,
                 e: WebhookError) -> web.Response:
        self.requests.inc(carrier=carrier, hook=hook, outcome=e.outcome)
        log.warning("%s %s webhook refused (%d) from %s: %s", carrier, hook, e.status,
                    request.remote, e)
        text = "forbidden" if e.status == 403 else str(e)
        return web.Response(status=e.status, text=text)

    # Twilio ------------------------------------------------------------------------------

    async def twilio_voice(self, request: web.Request) -> web.Response:
        try:
            body = await self._twilio_voice(request)
        except WebhookError as e:
            return self._refused(request, "twilio", "voice", e)
        self.requests.inc(carrier="twilio", hook="voice", outcome="ok")
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    async def _twilio_voice(self, request: web.Request) -> bytes:
        signature = request.headers.get(TWILIO_SIGNATURE_HEADER, "")
        if not signature:
            raise forbidden(f"no {TWILIO_SIGNATURE_HEADER}")
        if request.content_type != "application/x-www-form-urlencoded":
            raise bad_request("expected application/x-www-form-urlencoded")
        params = parse_form(await read_bounded(request))
        url = self.config.public_url.rstrip("/") + request.raw_path
        if not twilio_signature_valid(self.config.twilio_auth_token, url, params, signature):
            raise forbidden(f"bad {TWILIO_SIGNATURE_HEADER} (is carrier.public_url the URL "
                            "Twilio calls?)")
        form = _model(TwilioVoiceParams, _first(params))
        query = _model(QueryThread, request.query)
        details = CallDetails(
            thread_id=thread_or_new(query.thread_id, form.thread_id),
            caller=_clean(form.caller), called=_clean(form.called),
            caller_name=_clean(form.caller_name), call_id=_clean(form.call_sid))
        target = sip_target(self.config.sip_uri, details.called)
        log.info("twilio call %s: dialling our SIP URI, thread %s", details.call_id or "-",
                 details.thread_id, extra={"redact": {"caller": details.caller}})
        return twiml_dial_sip(uri_with_headers(target, twilio_headers(details)))

    # Vonage ------------------------------------------------------------------------------

    async def _vonage_payload(self, request: web.Request) -> dict[str, Any]:
        """The payload (JSON body, or the query of a GET) once the JWT verified it."""
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise forbidden("no signed JWT (Authorization: Bearer)")
        raw: bytes | None = None
        if request.method == "POST":
            raw = await read_bounded(request)
            try:
                data: dict[str, Any] = loads_object(raw, max_bytes=MAX_BODY) if raw else {}
            except WireError as e:
                # a forged request is refused as one (403) before its body is judged
                vonage_claims(token.strip(), self.config.vonage_signature_secret, [raw])
                raise bad_request(f"expected a JSON object: {e}") from e
        else:
            data = _first(request.query.items())
        vonage_claims(token.strip(), self.config.vonage_signature_secret,
                      payload_candidates(raw, data))
        return data

    async def vonage_answer(self, request: web.Request) -> web.Response:
        try:
            data = await self._vonage_payload(request)
            answer = _model(VonageAnswer, data)
            query = _model(QueryThread, request.query)
        except WebhookError as e:
            return self._refused(request, "vonage", "answer", e)
        details = CallDetails(
            thread_id=thread_or_new(query.thread_id, answer.thread_id),
            caller=_clean(answer.caller), called=_clean(answer.called),
            call_id=_clean(answer.uuid), conversation_id=_clean(answer.conversation_uuid))
        target = sip_target(self.config.sip_uri, details.called).serialize()
        log.info("vonage call %s: connecting our SIP URI, thread %s", details.call_id or "-",
                 details.thread_id, extra={"redact": {"caller": details.caller}})
        self.requests.inc(carrier="vonage", hook="answer", outcome="ok")
        return web.json_response(ncco_connect_sip(target, vonage_headers(details),
                                                  details.caller))

    async def vonage_event(self, request: web.Request) -> web.Response:
        try:
            event = _model(VonageEvent, await self._vonage_payload(request))
        except WebhookError as e:
            return self._refused(request, "vonage", "event", e)
        status = event.status if event.status in VONAGE_STATUSES else "other"
        self.requests.inc(carrier="vonage", hook="event", outcome="ok")
        self.events.inc(carrier="vonage", status=status)
        log.info("vonage call %s: %s", _clean(event.uuid) or "-", status)
        return web.Response(status=200)


async def not_mounted(request: web.Request) -> web.Response:
    return web.Response(status=404, text="not found")


def setup_carrier(app: web.Application, config: CarrierConfig, metrics: Registry) -> None:
    """Mount each carrier's routes when its secret is set; every other ``/carrier/`` path,
    and any method a route does not take, is 404 (before the dashboard's catch-all)."""
    if config.twilio_auth_token or config.vonage_signature_secret:
        if not config.sip_uri:
            raise ConfigError("carrier.sip_uri", "the carriers' webhooks need our public SIP "
                              "URI (resolved at start, see resolve_sip_uri)")
        hooks = CarrierWebhooks(config, metrics)
        if config.twilio_auth_token:
            app.router.add_post(TWILIO_VOICE, hooks.twilio_voice)
        if config.vonage_signature_secret:
            app.router.add_get(VONAGE_ANSWER, hooks.vonage_answer)
            app.router.add_post(VONAGE_ANSWER, hooks.vonage_answer)
            app.router.add_post(VONAGE_EVENT, hooks.vonage_event)
    app.router.add_route("*", "/carrier/{path:.*}", not_mounted)


def resolve_sip_uri(config: Config, profile: TrunkProfile) -> Config:
    """``config`` with ``carrier.sip_uri`` filled in when a webhook is on and it is empty:
    ``sip:<profile [nat] public_address>:<sip.port>`` (``;transport=tcp`` without UDP, TLS on
    ``sip.tls_port`` with neither). :class:`ConfigError` when there is no public address or
    the port is chosen at start."""
    c = config.carrier
    if c.sip_uri or not (c.twilio_auth_token or c.vonage_signature_secret):
        return config
    host = profile.public_address
    if not host:
        raise ConfigError("carrier.sip_uri", "the carrier dials our public SIP URI: set "
                          "carrier.sip_uri (sip:host:port) or the trunk profile's [nat] "
                          "public_address")
    host = f"[{host}]" if ":" in host else host
    transports = config.sip.transports
    if "udp" in transports or "tcp" in transports:
        port, params = config.sip.port, "" if "udp" in transports else ";transport=tcp"
    else:
        port, params = config.sip.tls_port, ";transport=tls"
    if not port:
        raise ConfigError("carrier.sip_uri", "the SIP port is chosen at start (0): set "
                          "carrier.sip_uri")
    uri = f"sip:{host}:{port}{params}"
    return dataclasses.replace(config, carrier=dataclasses.replace(c, sip_uri=uri))
