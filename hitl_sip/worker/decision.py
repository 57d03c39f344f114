"""What admission decides about an incoming INVITE — pure data, no pjsua2 (the SIP
stack in :mod:`hitl_sip.worker.pjsip` carries the decision out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decision:
    """What to do with an incoming INVITE: ``status == 0`` admits it."""

    status: int = 0
    reason: str = ""
    outcome: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    # A rejection of a well-framed INVITE is answered inside onIncomingCall, which frees
    # its call slot before the next INVITE of the same poll; anything else waits until the
    # callback has returned (see _on_incoming).
    immediate: bool = False


Admit = Callable[[str, str, int, bool], Decision]
