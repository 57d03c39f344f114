"""What the flow runner asks the call session to do, and how the session drives the runner.

The runner (:class:`hitl_sip.bot.runner.FlowRunner`) is pure: no timers, no audio, no I/O.
The session owns those, feeds the runner events and carries out the actions it gets back.

Batches. Every input method returns a *batch*, ``list[Action]``:

* ``[]`` — the input was not expected now (speech over a prompt with no ask active, DTMF
  after a hangup...) or changes nothing the session must act on. The session keeps doing
  what it was doing (prompts keep playing, a running Listen timer keeps running).
* a non-empty batch is zero or more :class:`Say` followed by exactly one terminal action:
  :class:`Listen`, :class:`Handoff` or :class:`Hangup`. It *replaces* whatever is still
  pending from the previous batch: the session stops the prompt playing (if any), drops
  queued prompts, cancels a running Listen timer and stops hold audio, then works through
  the new batch in order.

Actions.

* :class:`Say` — play ``audio`` if given (``text`` is then only its caption for the
  transcript), else speak ``text`` with TTS (voice: ``runner.flow.voice``). Says play one
  after another. While a Say with ``barge_in=True`` plays, caller input (a DTMF digit, or
  the start of speech) stops it and every remaining Say of the batch, and the input is
  passed on to the runner (the transcript once it is final). Speech that arrives while a
  Say with ``barge_in=False`` plays is discarded, not passed on. A DTMF digit pressed then
  is *typed ahead*: kept, in order, and passed to ``runner.dtmf()`` as soon as no such Say
  plays any more (the way Asterisk's ``Background`` and carrier IVRs keep digits), unless
  the Listen waiting for it says ``type_ahead=False`` (then it is dropped). Digits pressed
  while the call is queued (hold audio) or with an agent never reach the runner.
* :class:`Listen` — when every Say before it has finished or been cut, start a
  ``timeout``-second timer; when it expires call ``runner.no_input()``. Meanwhile pass
  final transcripts to ``runner.speech()`` and digits to ``runner.dtmf()``. The runner
  collects up to ``dtmf_max`` digits (``#`` ends early) and answers a partial entry with a
  fresh ``[Listen]``, so the timer restarts after every digit (inter-digit timeout).
* :class:`Handoff` — after the Says before it, put the call in the human-agent queue and
  play hold audio. If no agent takes the call, call ``runner.queue_timeout()``; if an agent
  hands the call back to the bot (``return_to_bot``), call ``runner.resume()``.
* :class:`Hangup` — after the Says before it, end the call (BYE). The runner then answers
  every input with ``[]``.

There is no "prompt finished" input: the session knows when playback ends and starts the
Listen timer itself, so the runner never waits on audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Say:
    """Play a prompt: ``audio`` when given (``text`` is its caption), else TTS of ``text``."""

    text: str | None
    audio: Path | None
    barge_in: bool
    node_id: str


@dataclass(frozen=True)
class Listen:
    """Wait for caller input; ``timeout`` seconds of silence after the prompts → no_input()."""

    timeout: float
    dtmf_max: int
    node_id: str
    type_ahead: bool = True  # digits typed ahead during unbargeable prompts count here


@dataclass(frozen=True)
class Handoff:
    """Queue the call for a human agent.

    ``reason`` says why the flow got there, e.g. ``dtmf '0' at menu``, ``keyword 'agent' at
    menu``, ``phrase 'my bill' at menu``, ``any input at menu``, ``no input at menu`` /
    ``no match at menu`` (retries exhausted), ``queue timeout at agent``, ``resumed at
    agent``, or ``flow`` (reached without a caller choice). Never caller speech or digits
    beyond the flow's own branch values.

    ``answers``: the ``store_as`` answers so far, for the agent briefing — digits collected
    at a node that does not say ``safe_digits`` are left out (like ``[pressed •]``).
    """

    queue: str | None
    skill: str | None
    reason: str
    node_id: str
    answers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Hangup:
    """End the call once the Says before it have played."""

    node_id: str


Action = Say | Listen | Handoff | Hangup


class RunnerState(StrEnum):
    IDLE = "idle"  # before start()
    RUNNING = "running"  # inside a call, walking nodes; never seen between calls
    LISTENING = "listening"  # at an ask node, waiting for speech/DTMF/no_input()
    HANDED_OFF = "handed_off"  # at an agent node: waiting for queue_timeout()/resume()
    ENDED = "ended"  # a Hangup was emitted


@runtime_checkable
class BotDialog(Protocol):
    """The seam between the call session and a bot flow (see the module docstring)."""

    @property
    def state(self) -> RunnerState: ...

    @property
    def current_node(self) -> str: ...

    @property
    def digits_safe(self) -> bool: ...

    def start(self) -> list[Action]: ...

    def speech(self, text: str) -> list[Action]: ...

    def dtmf(self, digit: str) -> list[Action]: ...

    def no_input(self) -> list[Action]: ...

    def queue_timeout(self) -> list[Action]: ...

    def resume(self) -> list[Action]: ...
