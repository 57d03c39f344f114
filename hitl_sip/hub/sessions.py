"""Agent sessions: whether a token still opens one, and ending them (PROTOCOL.md §6).

A token (hitl_sip.hub.tokens) proves a hub issued it. It opens a session only while its
account exists and is enabled, the account's token version is still the one in the token
(removing the account, disabling it, changing its password or role bumps the version), and
the token itself was not logged out. REST checks this on every request; the ``/agent``
namespace at connect and again whenever the account store changes (:meth:`Sessions.watch`),
so a removed agent's socket is closed within a poll interval — even when the removal came
from ``hitl-sip agents remove`` in another process.

The audit trail (``hitl_sip.audit`` logger: logins, logouts, account changes, thread reads,
supervisor actions) names accounts by id and addresses, never callers' data.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from hitl_sip.hub.agents import Agent, AgentStore, Role
from hitl_sip.hub.tokens import TokenClaims, TokenError, TokenSigner
from hitl_sip.log import AUDIT_LOGGER

log = logging.getLogger(__name__)
audit_log = logging.getLogger(AUDIT_LOGGER)

POLL = 0.25  # seconds between looks at the account store for changes made elsewhere

Reason = Literal["malformed", "bad_signature", "expired", "no_account", "ended"]


def audit(event: str, **fields: str | int | bool | None) -> None:
    """One audit record: a JSON object on the ``hitl_sip.audit`` logger."""
    audit_log.info("%s", json.dumps({"event": event, **fields}, sort_keys=True))


class SessionError(ValueError):
    """The token opens no session; ``reason`` says why (for logs, not for the client)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(f"token refused: {reason}")
        self.reason: Reason = reason


@dataclass(frozen=True)
class Session:
    claims: TokenClaims
    account: Agent

    @property
    def agent_id(self) -> str:
        return self.account.agent_id

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def role(self) -> Role:
        return self.account.role


class Sessions:
    def __init__(self, store: AgentStore, signer: TokenSigner) -> None:
        self.store = store
        self.signer = signer
        self.changed = asyncio.Event()  # set when this hub ended a session itself

    def issue(self, account: Agent) -> tuple[str, str]:
        return self.signer.issue(account.agent_id, account.name, account.token_version)

    def _check(self, token: str) -> Session:
        try:
            claims = self.signer.verify(token)
        except TokenError as e:
            raise SessionError(e.reason) from e
        account = self.store.get(claims.sub)
        if account is None:
            raise SessionError("no_account")
        if account.token_version != claims.ver or self.store.revoked(claims.jti):
            raise SessionError("ended")
        return Session(claims, account)

    async def check(self, token: str) -> Session:
        """The session ``token`` opens; :class:`SessionError` otherwise."""
        return await asyncio.to_thread(self._check, token)

    def _alive(self, claims: TokenClaims) -> bool:
        account = self.store.get(claims.sub)
        return (account is not None and account.token_version == claims.ver
                and not self.store.revoked(claims.jti))

    async def alive(self, claims: TokenClaims) -> bool:
        return await asyncio.to_thread(self._alive, claims)

    async def logout(self, session: Session) -> None:
        await asyncio.to_thread(self.store.revoke, session.claims.jti, session.claims.exp)
        self.changed.set()

    def ended_elsewhere(self) -> None:
        """An account changed through this hub (REST admin): look at the sessions now."""
        self.changed.set()

    async def watch(self, claims_of: Callable[[], dict[str, TokenClaims]],
                    end: Callable[[str], Awaitable[None]]) -> None:
        """Forever: when the store changed (here or in another process), ``end`` every
        connection (``claims_of``: connection id → its token's claims) whose token no
        longer opens a session."""
        seen = await asyncio.to_thread(self.store.version)
        while True:
            woke = False
            try:
                async with asyncio.timeout(POLL):
                    await self.changed.wait()
                    woke = True
            except TimeoutError:
                pass
            self.changed.clear()
            version = await asyncio.to_thread(self.store.version)
            if not woke and version == seen:
                continue
            seen = version
            for sid, claims in list(claims_of().items()):
                if not await self.alive(claims):
                    log.warning("agent %s: session ended (account removed or changed, or "
                                "logged out): disconnecting", claims.sub)
                    await end(sid)
