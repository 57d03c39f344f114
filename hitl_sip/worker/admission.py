"""Admission of an incoming INVITE: source allow-list, digest auth, drain and capacity.

Pure logic on the raw INVITE text and its source address, run on the pj thread inside
``onIncomingCall``. The order matters: a source outside the allow-list gets the same 403
whatever the number, before anything else is looked at (nothing to learn about numbers or
load); then authentication; then drain and capacity (503 with ``Retry-After`` so a trunk
fails over).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from hitl_sip.sip.acl import parse_source
from hitl_sip.sip.digest import AuthStatus, DigestAuthenticator
from hitl_sip.sip.message import SipMessage
from hitl_sip.sip.metadata import extract_call_metadata
from hitl_sip.sip.profile import TrunkProfile
from hitl_sip.worker.pjsip import Decision

log = logging.getLogger(__name__)

FORBIDDEN = Decision(403, "Forbidden", "rejected_forbidden")


class Admission:
    def __init__(
        self,
        profile: TrunkProfile,
        max_calls: int,
        retry_after: int,
        auth_secret: bytes,
    ) -> None:
        self.profile = profile
        self.max_calls = max_calls
        self.retry_after = retry_after
        self.allow_list = profile.allow_list
        self.authenticator: DigestAuthenticator | None = profile.authenticator(auth_secret)

    def __call__(self, source: str, raw: str, active: int, draining: bool) -> Decision:
        return self.decide(source, raw, active, draining)

    def decide(self, source: str, raw: str, active: int, draining: bool) -> Decision:
        try:
            ip, _port = parse_source(source)
        except ValueError:
            log.warning("INVITE from an unparsable source address refused")
            return FORBIDDEN
        if not self.allow_list.allows(ip):
            log.warning("INVITE from %s refused: source not in the %s allow-list", ip,
                        self.profile.name)
            return FORBIDDEN
        try:
            msg = SipMessage.parse(raw)
        except ValueError as e:
            # pjsip accepted it, so it is a valid SIP message; our stricter parser did not.
            log.warning("INVITE from %s not understood by the metadata parser: %s", ip, e)
            msg = None
        if self.authenticator is not None:
            authorization = msg.get("Authorization") if msg is not None else None
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
        if msg is not None:
            try:
                meta = extract_call_metadata(
                    msg, self.profile.header_mapping, self.profile.default_country_code
                )
                metadata = asdict(meta)
            except ValueError as e:
                log.warning("call metadata incomplete: %s", e)
        metadata["trunk"] = self.profile.name
        metadata["caller_name"] = metadata.pop("caller_display_name", None)
        return Decision(metadata=metadata)
