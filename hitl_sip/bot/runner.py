"""The flow runner: walks a :class:`~hitl_sip.bot.flow.Flow` one caller input at a time.

Pure state machine — no timers, no audio, no asyncio. The call session calls
:meth:`FlowRunner.start` once, then one method per event, and carries out the returned
actions; the contract is in :mod:`hitl_sip.bot.actions`.

Matching at an ask node (first matching branch wins, in file order):

* speech: the transcript is lower-cased, apostrophes dropped, other punctuation turned
  into spaces; a keyword matches as whole word(s), a phrase as a substring; ``any``
  matches every non-blank transcript. A blank transcript is ignored.
* DTMF: digits are collected up to ``dtmf_max`` or ``#`` (or until no_input() with
  digits pending), then compared exactly with each branch's ``dtmf``; ``any`` matches
  every entry, even ``#`` alone.

A no-input or no-match uses up one of the node's ``retries``: its message (if any), the
prompt again, then Listen. With no retries left the flow continues at ``fail``. The
retry count restarts whenever the ask node is entered again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from hitl_sip.bot.actions import Action, Handoff, Hangup, Listen, RunnerState, Say
from hitl_sip.bot.flow import (
    DTMF_DIGITS,
    AgentNode,
    AskNode,
    Branch,
    Flow,
    GotoNode,
    HangupNode,
    Prompt,
    SayNode,
    normalize_words,
    render_text,
)

MAX_STEPS = 100  # nodes visited within one input before the runner calls it a loop

_log = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class FlowRunner:
    """One call's walk through a flow; see the module docstring for matching rules.

    ``variables`` fills ``{name}`` placeholders (caller_number, caller_name, called_number,
    trunk, ``headers.<key>`` ...); a placeholder without a value renders as ''. ``store_as``
    results are added as the caller answers.
    """

    def __init__(
        self, flow: Flow, variables: Mapping[str, str], *, log: Logger | None = None
    ) -> None:
        self.flow = flow
        self._variables: dict[str, str] = dict(variables)
        self._log: Logger = log if log is not None else _log
        self._state = RunnerState.IDLE
        self._node_id = flow.start
        self._retries_used = 0
        self._digits = ""
        self._reason = "flow"
        # store_as answers an agent may read (Handoff.answers): not a number typed in
        self._answers: dict[str, str] = {}

    @property
    def state(self) -> RunnerState:
        return self._state

    @property
    def current_node(self) -> str:
        """The id of the node the runner is at (the start node before start())."""
        return self._node_id

    @property
    def digits_safe(self) -> bool:
        """Whether a digit pressed now may be stored as it is: the node it goes to (the one
        listening, or the ask node whose prompts are playing) says ``safe_digits``."""
        node = self.flow.nodes.get(self._node_id)
        return isinstance(node, AskNode) and node.safe_digits

    @property
    def variables(self) -> Mapping[str, str]:
        """The call variables, including every ``store_as`` result so far (read-only view)."""
        return MappingProxyType(self._variables)

    # -- inputs --

    def start(self) -> list[Action]:
        """Run from the start node to the first wait (Listen/Handoff/Hangup)."""
        if self._state is not RunnerState.IDLE:
            return []
        return self._run(self.flow.start)

    def speech(self, text: str) -> list[Action]:
        """A final transcript of the caller's speech."""
        node = self._listening_node()
        words = normalize_words(text)
        if node is None or not words:
            return []
        self._digits = ""
        padded = f" {words} "
        for branch in node.branches:
            for keyword in branch.keywords:
                if f" {normalize_words(keyword)} " in padded:
                    return self._take(node, branch, text.strip(), f"keyword '{keyword}'")
            for phrase in branch.phrases:
                if normalize_words(phrase) in words:
                    return self._take(node, branch, text.strip(), f"phrase '{phrase}'")
            if branch.any_input:
                return self._take(node, branch, text.strip(), "any input")
        return self._retry(node, node.no_match, "no match")

    def dtmf(self, digit: str) -> list[Action]:
        """One DTMF digit (0-9, *, #, A-D; lower-case a-d accepted)."""
        digit = digit.upper()
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        node = self._listening_node()
        if node is None:
            return []
        if digit != "#":
            self._digits += digit
            if len(self._digits) < node.dtmf_max:
                return [self._listen(node)]
        return self._match_digits(node)

    def no_input(self) -> list[Action]:
        """The Listen timer expired; digits collected so far are matched as they are."""
        node = self._listening_node()
        if node is None:
            return []
        if self._digits:
            return self._match_digits(node)
        return self._retry(node, node.no_input, "no input")

    def queue_timeout(self) -> list[Action]:
        """No agent took the handed-off call: continue at the agent node's ``fallback``."""
        node = self._agent_node()
        if node is None:
            return []
        self._reason = f"queue timeout at {node.id}"
        return self._run(node.fallback)

    def resume(self) -> list[Action]:
        """The agent handed the call back: continue at ``resume`` (default ``fallback``)."""
        node = self._agent_node()
        if node is None:
            return []
        self._reason = f"resumed at {node.id}"
        return self._run(node.resume if node.resume is not None else node.fallback)

    # -- internals --

    def _listening_node(self) -> AskNode | None:
        node = self.flow.nodes.get(self._node_id)
        if self._state is RunnerState.LISTENING and isinstance(node, AskNode):
            return node
        return None

    def _agent_node(self) -> AgentNode | None:
        node = self.flow.nodes.get(self._node_id)
        if self._state is RunnerState.HANDED_OFF and isinstance(node, AgentNode):
            return node
        return None

    def _match_digits(self, node: AskNode) -> list[Action]:
        digits, self._digits = self._digits, ""
        for branch in node.branches:
            if digits and branch.dtmf == digits:
                return self._take(node, branch, digits, f"dtmf '{digits}'", typed=True)
            if branch.any_input:
                return self._take(node, branch, digits, "any input", typed=True)
        return self._retry(node, node.no_match, "no match")

    def _take(self, node: AskNode, branch: Branch, answer: str, why: str, *,
              typed: bool = False) -> list[Action]:
        self._log.debug("flow %s: node %s matched %s", self.flow.name, node.id, why)
        if node.store_as is not None:
            self._variables[node.store_as] = answer
            if typed and not node.safe_digits:
                self._answers.pop(node.store_as, None)
            else:
                self._answers[node.store_as] = answer
        self._reason = f"{why} at {node.id}"
        return self._run(branch.next)

    def _retry(self, node: AskNode, message: Prompt | None, why: str) -> list[Action]:
        self._digits = ""
        if self._retries_used >= node.retries:
            self._log.info("flow %s: node %s: %s, retries used up", self.flow.name, node.id, why)
            self._reason = f"{why} at {node.id}"
            return self._run(node.fail)
        self._retries_used += 1
        actions: list[Action] = []
        if message is not None:
            actions.append(self._say(message, node.barge_in, node.id))
        actions += [self._say(node.prompt, node.barge_in, node.id), self._listen(node)]
        return actions

    def _say(self, prompt: Prompt, barge_in: bool, node_id: str) -> Say:
        text = render_text(prompt.text, self._variables) if prompt.text is not None else None
        return Say(text=text, audio=prompt.audio, barge_in=barge_in, node_id=node_id)

    @staticmethod
    def _listen(node: AskNode) -> Listen:
        return Listen(timeout=node.timeout, dtmf_max=node.dtmf_max, node_id=node.id,
                      type_ahead=node.type_ahead)

    def _end(self, why: str) -> list[Action]:
        self._log.error("flow %s: %s at node %s; hanging up", self.flow.name, why, self._node_id)
        self._state = RunnerState.ENDED
        return [Hangup(node_id=self._node_id)]

    def _run(self, node_id: str) -> list[Action]:
        """Walk from ``node_id`` until a node that waits; returns the batch."""
        self._state = RunnerState.RUNNING
        actions: list[Action] = []
        for _ in range(MAX_STEPS):
            node = self.flow.nodes.get(node_id)
            if node is None:
                return self._end(f"edge to unknown node {node_id!r}")
            self._node_id = node_id
            self._log.debug("flow %s: node %s", self.flow.name, node_id)
            match node:
                case SayNode():
                    actions.append(self._say(node.prompt, node.barge_in, node.id))
                    node_id = node.next
                case GotoNode():
                    node_id = node.next
                case AskNode():
                    self._retries_used = 0
                    self._digits = ""
                    self._state = RunnerState.LISTENING
                    actions += [self._say(node.prompt, node.barge_in, node.id), self._listen(node)]
                    return actions
                case AgentNode():
                    if node.message is not None:
                        actions.append(self._say(node.message, False, node.id))
                    self._log.info(
                        "flow %s: handoff at node %s (%s)", self.flow.name, node.id, self._reason
                    )
                    actions.append(
                        Handoff(
                            queue=node.queue, skill=node.skill, reason=self._reason,
                            node_id=node.id, answers=tuple(self._answers.items()),
                        )
                    )
                    self._state = RunnerState.HANDED_OFF
                    return actions
                case HangupNode():
                    if node.prompt is not None:
                        actions.append(self._say(node.prompt, False, node.id))
                    actions.append(Hangup(node_id=node.id))
                    self._state = RunnerState.ENDED
                    return actions
        return self._end(f"{MAX_STEPS} nodes without waiting for the caller (a loop?)")
