"""Admission of an incoming INVITE: source allow-list, digest auth, drain and capacity.

Pure logic on the raw INVITE text and its source address, run on the pj thread inside
``onIncomingCall``. The order matters: a source outside the allow-list gets the same 403
whatever the number, before anything else is looked at (nothing to learn about numbers or
load); then authentication; then drain and capacity (503 with ``Retry-After`` so a trunk
fails over).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, replace

from hitl_sip.sip.acl import parse_source
from hitl_sip.sip.digest import AuthStatus, DigestAuthenticator
from hitl_sip.sip.message import SipMessage
from hitl_sip.sip.metadata import extract_call_metadata
from hitl_sip.sip.profile import TrunkProfile
from hitl_sip.worker.decision import Decision

log = logging.getLogger(__name__)

FORBIDDEN = Decision(403, "Forbidden", "rejected_forbidden")

# The wheel's pjsip is compiled with PJSIP_MAX_PKT_LEN = 4000: over TCP it drops a longer
# message, over UDP it silently truncates the datagram and parses the rest. A message this
# long may have been cut, so it is refused; a real trunk INVITE (with a STIR/SHAKEN Identity
# header) is 1.5-3 KiB.
PJSIP_MAX_PKT_LEN = 4000
VIA_TRANSPORTS = frozenset({"udp", "tcp", "tls", "sctp", "ws", "wss"})

_VIA = re.compile(
    r"^(?:Via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([^ \t\r\n]+)",
    re.IGNORECASE | re.MULTILINE,
)
SOURCE_HEADER = "X-Hitl-Source"  # the trunk's address, set by the SIP front
_FORWARDED = re.compile(r"^X-Hitl-Source[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$",
                        re.IGNORECASE | re.MULTILINE)
_CONTENT_LENGTH = re.compile(r"^(?:Content-Length|l)[ \t]*:[ \t]*(\S*)[ \t]*\r?$",
                             re.IGNORECASE | re.MULTILINE)


def bad_request(detail: str) -> Decision:
    return Decision(400, f"Bad Request ({detail})", "rejected_malformed")


def check_framing(raw: str) -> Decision | None:
    """Checks pjsip skips on UDP (RFC 3261 §18.3): size, Content-Length, Via transport."""
    data = raw.encode("utf-8", "surrogateescape")
    if len(data) >= PJSIP_MAX_PKT_LEN:
        return Decision(513, "Message Too Large", "rejected_malformed")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    if not sep:
        return bad_request("no end of headers")
    text = head.decode("utf-8", "replace")
    lengths = _CONTENT_LENGTH.findall(text)
    if len(lengths) > 1:
        return bad_request("repeated Content-Length")
    if lengths:
        if not lengths[0].isdigit():
            return bad_request("invalid Content-Length")
        if int(lengths[0]) != len(body):
            return bad_request("Content-Length does not match the body")
    via = _VIA.search(text)
    if via is None:
        return bad_request("no Via")
    if via.group(1).lower() not in VIA_TRANSPORTS:
        return bad_request("unknown Via transport")
    return None


class Admission:
    def __init__(
        self,
        profile: TrunkProfile,
        max_calls: int,
        retry_after: int,
        auth_secret: bytes,
        front: frozenset[str] | None = None,
    ) -> None:
        """``front``: the worker sits behind the SIP front, which alone may send to it; the
        trunk's own address comes in ``X-Hitl-Source`` and is checked like a direct one."""
        self.front = front
        self.profile = profile
        self.max_calls = max_calls
        self.retry_after = retry_after
        self.allow_list = profile.allow_list
        self.authenticator: DigestAuthenticator | None = profile.authenticator(auth_secret)

    def __call__(self, source: str, raw: str, active: int, draining: bool) -> Decision:
        return self.decide(source, raw, active, draining)

    def decide(self, source: str, raw: str, active: int, draining: bool) -> Decision:
        framing = check_framing(raw)
        decision = self._decide(source, raw, active, draining, framing)
        if decision.status and framing is None:
            return replace(decision, immediate=True)
        return decision

    def _decide(
        self, source: str, raw: str, active: int, draining: bool, framing: Decision | None
    ) -> Decision:
        try:
            ip, _port = parse_source(source)
        except ValueError:
            log.warning("INVITE from an unparsable source address refused")
            return FORBIDDEN
        via_transport = ""
        if self.front is not None:
            if ip not in self.front:
                log.warning("INVITE from %s refused: only the SIP front may send to this worker",
                            ip)
                return FORBIDDEN
            forwarded = _FORWARDED.findall(raw)
            try:
                if len(forwarded) != 1:
                    raise ValueError(f"{len(forwarded)} {SOURCE_HEADER} headers")
                # "ip:port;transport=udp|tcp|tls": the trunk's own address and transport
                source, _, params = forwarded[0].strip().partition(";")
                ip, _port = parse_source(source)
                via_transport = params.removeprefix("transport=").lower()
                if params and via_transport not in ("udp", "tcp", "tls"):
                    raise ValueError(f"unknown transport {params!r}")
            except ValueError as e:
                log.warning("INVITE via the front refused: bad %s: %s", SOURCE_HEADER, e)
                return FORBIDDEN
        if not self.allow_list.allows(ip):
            log.warning("INVITE from %s refused: source not in the %s allow-list", ip,
                        self.profile.name)
            return FORBIDDEN
        if framing is not None:
            log.warning("INVITE from %s refused: %s %s", ip, framing.status, framing.reason)
            return framing
        try:
            msg = SipMessage.parse(raw)
        except ValueError as e:
            log.warning("INVITE from %s refused: not parsable: %s", ip, e)
            return bad_request("unparsable message")
        if self.authenticator is not None:
            authorization = msg.get("Authorization")
            result = self.authenticator.verify("INVITE", authorization)
            if result.status is not AuthStatus.OK:
                stale = result.status is AuthStatus.STALE_NONCE
                if result.status is not AuthStatus.MISSING:
                    log.warning("INVITE from %s failed digest auth: %s (%s)", ip,
                                result.status.value, result.detail)
                return Decision(
                    401,
                    "Unauthorized",
                    "challenged" if result.status is AuthStatus.MISSING else "rejected_auth",
                    (("WWW-Authenticate", self.authenticator.challenge(stale=stale)),),
                )
        if draining:
            return Decision(
                503, "Service Unavailable", "rejected_draining",
                (("Retry-After", str(self.retry_after)),),
            )
        if active >= self.max_calls:
            log.warning("INVITE refused: worker at its limit of %d calls", self.max_calls)
            return Decision(
                503, "Service Unavailable", "rejected_capacity",
                (("Retry-After", str(self.retry_after)),),
            )
        metadata: dict[str, object] = {}
        try:
            meta = extract_call_metadata(
                msg, self.profile.header_mapping, self.profile.default_country_code
            )
            metadata = asdict(meta)
        except ValueError as e:
            log.warning("call metadata incomplete: %s", e)
        metadata["trunk"] = self.profile.name
        if self.front is not None:
            metadata["source"] = source
            if via_transport:
                metadata["transport"] = via_transport
        metadata["caller_name"] = metadata.pop("caller_display_name", None)
        return Decision(metadata=metadata)
