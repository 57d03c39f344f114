"""Who hears whom (hitl_sip.worker.mix): the §6 media rules per role, one queue of at most
two frames per talker and listener, saturating sums, the caller's ear driven by the agent
or, when the agent is silent, by the first talking leg."""

from __future__ import annotations

import numpy as np
import pytest

from hitl_sip.protocol.worker import LegRole
from hitl_sip.worker.mix import DEPTH, Conference, Leg, Taps, audible, caller_hears


def frame(value: int) -> bytes:
    return np.full(160, value, dtype="<i2").tobytes()


def level(pcm: bytes | None) -> int:
    assert pcm is not None
    return int(np.frombuffer(pcm, dtype="<i2")[0])


@pytest.mark.parametrize(("talker", "agent", "caller", "supervisor"), [
    (LegRole.LISTEN, False, False, False),
    (LegRole.WHISPER, True, False, True),
    (LegRole.BARGE, True, True, True),
    (LegRole.AGENT, True, True, True),
])
def test_the_media_rules(talker: LegRole, agent: bool, caller: bool, supervisor: bool) -> None:
    assert audible(talker, None) is agent  # the agent who holds the call
    assert audible(talker, LegRole.AGENT) is agent  # a transfer's target
    assert caller_hears(talker) is caller
    assert audible(talker, LegRole.LISTEN) is supervisor
    assert audible(None, LegRole.LISTEN)  # every leg hears the agent


def test_taps_sum_one_frame_per_talker_saturating_and_keep_at_most_two() -> None:
    taps = Taps()
    taps.open("a")
    taps.open("b")
    for value in (1, 2, 3):
        taps.push("a", frame(value))
    taps.push("b", frame(30000))
    taps.push("nobody", frame(7))  # not heard here: no queue
    assert taps.waiting("a") == DEPTH and "nobody" not in taps
    assert level(taps.mix(frame(10000))) == 32767  # 10000 + 2 + 30000, clipped
    assert level(taps.mix(frame(10))) == 13  # the next of a; b is empty
    assert level(taps.mix(frame(10))) == 10
    assert taps.mix(None) is None
    taps.push("b", frame(-5))
    assert level(taps.mix(None)) == -5
    taps.close("b")
    taps.push("b", frame(1))
    assert taps.waiting("b") == 0


class Ears:
    def __init__(self) -> None:
        self.caller: list[bytes] = []
        self.driving = True

    def conference(self) -> Conference:
        return Conference(self.caller.append, lambda: self.driving)


def leg(name: str, role: LegRole, heard: list[bytes]) -> Leg:
    return Leg(name, role, heard.append, Taps())


def test_a_whisper_reaches_the_agent_not_the_caller_and_a_switch_applies_at_once() -> None:
    ears = Ears()
    conf = ears.conference()
    agent_taps = Taps()
    conf.attach_primary(agent_taps)
    sue_main: list[bytes] = []
    sue = leg("sue", LegRole.LISTEN, sue_main)
    conf.add(sue)
    conf.leg_frame("sue", frame(5), now=1.0)
    assert agent_taps.mix(frame(100)) == frame(100)  # listen: the agent hears nobody else
    assert level(conf.primary_frame(frame(100))) == 100  # nor does the caller
    assert level(sue.taps.mix(frame(1))) == 101  # sue hears caller (1) and agent (100)
    conf.set_role("sue", LegRole.WHISPER)
    conf.leg_frame("sue", frame(5), now=1.02)
    assert level(agent_taps.mix(frame(100))) == 105
    assert level(conf.primary_frame(frame(100))) == 100
    conf.set_role("sue", LegRole.BARGE)
    conf.leg_frame("sue", frame(5), now=1.04)
    assert level(agent_taps.mix(frame(100))) == 105
    assert level(conf.primary_frame(frame(100))) == 105
    conf.caller_frame(frame(1))
    assert sue_main == [frame(1)]
    conf.remove("sue")
    conf.leg_frame("sue", frame(5), now=1.06)
    assert agent_taps.mix(frame(100)) == frame(100)


def test_with_the_agent_silent_the_first_talking_leg_drives_the_caller_s_ear() -> None:
    ears = Ears()
    ears.driving = False  # the agent muted, or gone
    conf = ears.conference()
    conf.add(leg("bob", LegRole.AGENT, []))
    conf.add(leg("sue", LegRole.BARGE, []))
    conf.leg_frame("sue", frame(7), now=2.0)  # only sue talks: she drives
    assert [level(f) for f in ears.caller] == [7]
    conf.leg_frame("bob", frame(3), now=2.01)  # bob talks too: first in order, he drives
    conf.leg_frame("sue", frame(7), now=2.02)  # queued for bob's next frame
    conf.leg_frame("bob", frame(3), now=2.03)
    assert [level(f) for f in ears.caller] == [7, 3, 10]
    ears.driving = True
    conf.leg_frame("bob", frame(3), now=2.04)  # the agent is back: it drives
    assert len(ears.caller) == 3
    assert level(conf.primary_frame(frame(100))) == 103
