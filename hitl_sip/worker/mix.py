"""Who hears whom on a call with more than two parties (PROTOCOL.md §6 media rules).

A call's parties: the caller (the trunk leg), the agent who holds it (the primary WebRTC
leg) and extra WebRTC legs — a transfer's target in full conference (``agent``) or a
supervisor (``listen``, ``whisper``, ``barge``). Every listener gets its own mix, without
its own voice:

* the caller hears the agent, agent legs and a barging supervisor;
* an agent (primary or leg) hears the caller, the other agents, and whispering or barging
  supervisors;
* a supervisor hears the caller, the agents and the other supervisors who talk.

Mixing adds no buffering beyond one frame: each listener keeps, per other talker, a queue
of at most two 20 ms frames (:class:`Taps`), and sums one queued frame into its main input
when its own clock takes a frame — the agent's track when aiortc pulls, the caller's
output when the agent's frame arrives (or, the agent silent, when another talker's
does). The talker's frames come on another clock, with jitter: two may land between two
of the listener's ticks, then none. The second place holds that frame instead of
overwriting the first; the oldest frame goes when a third comes, so the queue holds at
most one frame of standing delay (20 ms). Measured (tests/integration/test_supervision.py,
loopback, a supervisor barging): with one place 14 of 101 frames of the supervisor were
missing at the caller's ear (17 frames overwritten, 19 empty ticks in ~860 mixes); with
two, none of 100 missing, none overwritten, and at the mix the queue held one frame (no
standing delay) in 373-850 of the mixes and two (one frame of standing delay) in 8-482,
depending on the phase of the two clocks. A talker that is not audible to a listener has
no queue there, so a mode switch takes effect at the next frame (2-32 ms from the
``monitor_mode`` request to the ear, measured there).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import numpy as np

from hitl_sip.protocol.worker import LegRole
from hitl_sip.speech.base import SttStream

PRIMARY = "agent"  # the agent who holds the call
DEPTH = 2  # frames kept per talker for one listener: one of jitter, one of latency

# who a talker is heard by, by the talker's role and the listener's kind
_TALKS_TO_AGENTS = {LegRole.AGENT, LegRole.WHISPER, LegRole.BARGE}
_TALKS_TO_CALLER = {LegRole.AGENT, LegRole.BARGE}


def audible(talker: LegRole | None, listener: LegRole | None) -> bool:
    """Whether a leg in role ``talker`` is heard by a listener in role ``listener``
    (``None``: the primary agent; the caller is :func:`caller_hears`)."""
    if talker is None:  # the primary agent: heard by every leg
        return True
    if listener is None or listener is LegRole.AGENT:
        return talker in _TALKS_TO_AGENTS
    return talker is not LegRole.LISTEN  # supervisors hear whoever talks


def caller_hears(talker: LegRole) -> bool:
    return talker in _TALKS_TO_CALLER


class Taps:
    """One listener's queues of the other talkers' frames (each at most :data:`DEPTH`)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[bytes]] = {}

    def __contains__(self, talker: str) -> bool:
        return talker in self._queues

    def __len__(self) -> int:
        """How many other talkers this listener hears now."""
        return len(self._queues)

    def open(self, talker: str) -> None:
        self._queues.setdefault(talker, deque(maxlen=DEPTH))

    def close(self, talker: str) -> None:
        self._queues.pop(talker, None)

    def set(self, talker: str, heard: bool) -> None:
        if heard:
            self.open(talker)
        else:
            self.close(talker)

    def push(self, talker: str, frame: bytes) -> None:
        queue = self._queues.get(talker)
        if queue is not None:
            queue.append(frame)

    def waiting(self, talker: str) -> int:
        queue = self._queues.get(talker)
        return len(queue) if queue is not None else 0

    def mix(self, frame: bytes | None) -> bytes | None:
        """``frame`` (the listener's main input; None: nothing this tick) with one queued
        frame of every other talker summed in (saturating). None when all were silent."""
        extra = [q.popleft() for q in self._queues.values() if q]
        if not extra:
            return frame
        if frame is None and len(extra) == 1:
            return extra[0]
        parts = extra if frame is None else [frame, *extra]
        size = min(len(p) for p in parts)
        acc = np.zeros(size // 2, dtype=np.int32)
        for part in parts:
            acc += np.frombuffer(part, dtype="<i2", count=size // 2)
        return np.clip(acc, -32768, 32767).astype("<i2").tobytes()


class Leg:
    """One extra WebRTC leg of a call, as the conference routes it."""

    def __init__(self, name: str, role: LegRole, push: Callable[[bytes], None],
                 taps: Taps) -> None:
        self.name = name
        self.role = role
        self.push = push  # the caller's frames into the leg's track (its main input)
        self.taps = taps  # what else the leg hears, mixed in at its track's pull
        self.last_at = 0.0  # loop time of its last frame
        self.stt: SttStream | None = None
        self.stt_task: asyncio.Task[None] | None = None


class Conference:
    """The extra legs of one call and who hears whom (see the module docstring).

    The session keeps the two-party path as it was (caller frames into the primary's track,
    the primary's frames to the caller's output); the conference adds the legs' frames to
    the listeners' taps, and speaks for the caller's output when the primary is silent.
    """

    def __init__(self, to_caller: Callable[[bytes], None],
                 primary_driving: Callable[[], bool]) -> None:
        self.legs: dict[str, Leg] = {}
        self.caller_taps = Taps()
        self.primary_taps: Taps | None = None
        self._to_caller = to_caller
        self._primary_driving = primary_driving

    def __bool__(self) -> bool:
        return bool(self.legs)

    # -- membership ---------------------------------------------------------------------

    def attach_primary(self, taps: Taps | None) -> None:
        self.primary_taps = taps
        if taps is not None:
            for leg in self.legs.values():
                taps.set(leg.name, audible(leg.role, None))

    def add(self, leg: Leg) -> None:
        self.legs[leg.name] = leg
        leg.taps.open(PRIMARY)
        self._route(leg)

    def set_role(self, name: str, role: LegRole) -> Leg | None:
        leg = self.legs.get(name)
        if leg is not None:
            leg.role = role
            self._route(leg)
        return leg

    def remove(self, name: str) -> Leg | None:
        leg = self.legs.pop(name, None)
        if leg is None:
            return None
        self.caller_taps.close(name)
        if self.primary_taps is not None:
            self.primary_taps.close(name)
        for other in self.legs.values():
            other.taps.close(name)
        return leg

    def _route(self, leg: Leg) -> None:
        """Open or close ``leg``'s queue at every listener, by its role and theirs."""
        self.caller_taps.set(leg.name, caller_hears(leg.role))
        if self.primary_taps is not None:
            self.primary_taps.set(leg.name, audible(leg.role, None))
        for other in self.legs.values():
            if other is not leg:
                other.taps.set(leg.name, audible(leg.role, other.role))
                leg.taps.set(other.name, audible(other.role, leg.role))

    # -- frames ---------------------------------------------------------------------------

    def caller_frame(self, frame: bytes) -> None:
        """A caller frame (human phase): every leg's main input."""
        for leg in self.legs.values():
            leg.push(frame)

    def primary_frame(self, frame: bytes) -> bytes:
        """The primary agent's frame: into every leg's taps; returns what the caller hears
        (the frame with the other talkers queued for the caller mixed in)."""
        for leg in self.legs.values():
            leg.taps.push(PRIMARY, frame)
        mixed = self.caller_taps.mix(frame)
        return frame if mixed is None else mixed

    def leg_frame(self, name: str, frame: bytes, now: float) -> None:
        """A frame of ``name``'s voice: to whoever hears it. The caller's output is driven by
        the primary's frames; with the primary silent (muted, gone, not yet flowing), by
        the first leg the caller hears whose audio flows."""
        leg = self.legs.get(name)
        if leg is None:
            return
        leg.last_at = now
        if self.primary_taps is not None:
            self.primary_taps.push(name, frame)
        for other in self.legs.values():
            if other is not leg:
                other.taps.push(name, frame)
        if name in self.caller_taps:
            if not self._primary_driving() and self._driver(now) == name:
                mixed = self.caller_taps.mix(frame)
                self._to_caller(frame if mixed is None else mixed)
            else:
                self.caller_taps.push(name, frame)
        if leg.stt is not None:
            leg.stt.push_frame(frame)

    def _driver(self, now: float) -> str | None:
        for leg in self.legs.values():
            if leg.name in self.caller_taps and now - leg.last_at < 0.06:
                return leg.name
        return None
