"""The flow runner: each input returns the actions the call session must carry out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hitl_sip.bot.actions import (
    Action,
    BotDialog,
    Handoff,
    Hangup,
    Listen,
    RunnerState,
    Say,
)
from hitl_sip.bot.flow import Flow, GotoNode, HangupNode, Prompt, SayNode, load_flow, parse_flow
from hitl_sip.bot.runner import MAX_STEPS, FlowRunner

DEMO = Path(__file__).parents[2] / "flows" / "demo.yaml"

FLOW = """\
name: test
start: greet
nodes:
  greet:
    type: say
    text: "Hello {caller_name}, you called {called_number}."
    next: menu
  menu:
    type: ask
    prompt: "Main menu."
    timeout: 5
    retries: 2
    no_input: "Nothing heard."
    no_match: "Not understood."
    branches:
      - {dtmf: "0", next: agent}
      - {keywords: [agent, "customer service"], next: agent}
      - {phrases: ["my bill"], next: billing}
      - {dtmf: "1", keywords: [billing], next: billing}
      - {dtmf: "2", next: code}
    fail: agent
    store_as: choice
  billing:
    type: say
    text: "Billing info for {headers.x_account}."
    barge_in: false
    next: back
  back: {type: goto, next: menu}
  code:
    type: ask
    prompt: "Enter your code."
    barge_in: false
    timeout: 3
    retries: 0
    dtmf_max: 3
    branches:
      - {dtmf: "123", next: thanks}
      - {any: true, next: thanks}
    fail: bye
    store_as: code
  thanks: {type: say, text: "Code {code} after {choice}.", next: bye}
  agent:
    type: agent
    queue: sales
    skill: billing
    message: "Please hold."
    fallback: busy
    resume: back
  busy: {type: say, text: "All agents are busy.", next: bye}
  bye: {type: hangup, text: "Goodbye."}
"""

VARIABLES = {"caller_name": "Ann", "called_number": "+15550100", "headers.x_account": "A-7"}

MENU_PROMPT = Say("Main menu.", None, True, "menu")
MENU_LISTEN = Listen(5.0, 1, "menu")
TO_AGENT = Say("Please hold.", None, False, "agent")


def handoff(reason: str, *answers: tuple[str, str]) -> Handoff:
    return Handoff(queue="sales", skill="billing", reason=reason, node_id="agent",
                   answers=answers)


def started(variables: dict[str, str] | None = None) -> FlowRunner:
    runner = FlowRunner(parse_flow(FLOW), VARIABLES if variables is None else variables)
    runner.start()
    return runner


# --- walking the nodes -----------------------------------------------------------------------


def test_start_says_the_greeting_and_the_prompt_then_listens() -> None:
    runner = FlowRunner(parse_flow(FLOW), VARIABLES)
    assert runner.current_node == "greet"

    actions = runner.start()

    assert actions == [
        Say("Hello Ann, you called +15550100.", None, True, "greet"),
        MENU_PROMPT,
        MENU_LISTEN,
    ]
    assert runner.state is RunnerState.LISTENING
    assert runner.current_node == "menu"


def test_a_digit_branch_hands_off_after_the_agent_message() -> None:
    runner = started()

    assert runner.dtmf("0") == [TO_AGENT, handoff("dtmf '0' at menu")]
    assert runner.state is RunnerState.HANDED_OFF
    assert runner.current_node == "agent"


def test_a_keyword_matches_as_a_whole_word_in_any_case_and_punctuation() -> None:
    runner = started()

    assert runner.speech("I'd like an AGENT, please!") == [
        TO_AGENT,
        handoff("keyword 'agent' at menu", ("choice", "I'd like an AGENT, please!")),
    ]


def test_a_multi_word_keyword_matches_across_punctuation() -> None:
    runner = started()

    assert runner.speech("Customer... service?")[-1] == handoff(
        "keyword 'customer service' at menu", ("choice", "Customer... service?")
    )


def test_a_keyword_inside_a_longer_word_does_not_match() -> None:
    runner = started()

    assert runner.speech("what an agency") == [
        Say("Not understood.", None, True, "menu"),
        MENU_PROMPT,
        MENU_LISTEN,
    ]
    assert runner.state is RunnerState.LISTENING


def test_a_phrase_matches_as_a_substring_then_say_and_goto_lead_back_to_the_menu() -> None:
    runner = started()

    actions = runner.speech("It's about my billing, thanks")

    assert actions == [
        Say("Billing info for A-7.", None, False, "billing"),
        MENU_PROMPT,
        MENU_LISTEN,
    ]
    assert runner.variables["choice"] == "It's about my billing, thanks"


def test_the_first_matching_branch_wins_in_file_order() -> None:
    runner = started()

    # "agent" (branch 2) and "my bill" (branch 3) both match
    assert runner.speech("my bill agent")[-1] == handoff("keyword 'agent' at menu",
                                                         ("choice", "my bill agent"))


def test_the_handoff_carries_spoken_answers_never_digits_typed_at_a_node_not_safe() -> None:
    flow = parse_flow("""\
name: answers
start: why
nodes:
  why:
    type: ask
    prompt: "Why do you call?"
    branches: [{any: true, next: account}]
    fail: account
    store_as: reason
  account:
    type: ask
    prompt: "Your account number?"
    dtmf_max: 4
    branches: [{any: true, next: tier}]
    fail: tier
    store_as: account
  tier:
    type: ask
    prompt: "Press 1 for home, 2 for business."
    safe_digits: true
    branches: [{any: true, next: agent}]
    fail: agent
    store_as: tier
  agent: {type: agent, fallback: bye}
  bye: {type: hangup}
""")
    runner = FlowRunner(flow, {})
    runner.start()
    runner.speech("my router is broken")
    for digit in "4711":
        runner.dtmf(digit)
    handed = runner.dtmf("2")[-1]
    assert runner.variables["account"] == "4711"  # the flow may use it
    assert isinstance(handed, Handoff)
    assert handed.answers == (("reason", "my router is broken"), ("tier", "2"))
    runner = started()
    runner.speech("my bill")
    assert runner.dtmf("0")[-1] == handoff("dtmf '0' at menu")  # a typed choice replaces it
    runner = started()
    runner.speech("my bill")
    assert runner.speech("agent")[-1] == handoff("keyword 'agent' at menu", ("choice", "agent"))


def test_a_branch_with_several_matchers_matches_on_any_of_them() -> None:
    by_digit = started().dtmf("1")
    by_word = started().speech("billing")

    assert by_digit[0].node_id == by_word[0].node_id == "billing"


def test_a_hangup_node_says_goodbye_without_barge_in_then_hangs_up() -> None:
    runner = started()
    runner.dtmf("0")

    actions = runner.queue_timeout()

    assert actions == [
        Say("All agents are busy.", None, True, "busy"),
        Say("Goodbye.", None, False, "bye"),
        Hangup("bye"),
    ]
    assert runner.state is RunnerState.ENDED


def test_audio_prompts_are_passed_through_with_their_caption() -> None:
    wav = Path("/prompts/hi.wav")
    flow = Flow(
        name="audio",
        start="a",
        nodes={
            "a": SayNode("a", Prompt("Hi {caller_name}", wav), "b"),
            "b": GotoNode("b", "c"),
            "c": SayNode("c", Prompt(audio=wav), "d"),
            "d": HangupNode("d"),
        },
    )

    actions = FlowRunner(flow, {"caller_name": "Bo"}).start()

    assert actions == [Say("Hi Bo", wav, True, "a"), Say(None, wav, True, "c"), Hangup("d")]


# --- retries --------------------------------------------------------------------------------


def test_no_input_reprompts_with_its_message_until_retries_run_out_then_takes_fail() -> None:
    runner = started()
    reprompt = [Say("Nothing heard.", None, True, "menu"), MENU_PROMPT, MENU_LISTEN]

    assert runner.no_input() == reprompt
    assert runner.no_input() == reprompt
    assert runner.no_input() == [TO_AGENT, handoff("no input at menu")]


def test_no_match_and_no_input_share_the_retries() -> None:
    runner = started()

    runner.speech("weather forecast")
    runner.no_input()

    assert runner.speech("still the weather") == [TO_AGENT, handoff("no match at menu")]


def test_retries_start_again_when_the_ask_node_is_entered_again() -> None:
    runner = started()
    runner.no_input()
    runner.no_input()
    runner.speech("billing")  # back to the menu

    assert runner.no_input()[0] == Say("Nothing heard.", None, True, "menu")


def test_an_ask_without_a_message_just_reprompts() -> None:
    runner = FlowRunner(
        parse_flow(
            "name: t\nstart: a\nnodes:\n"
            "  a: {type: ask, prompt: 'Yes?', retries: 1, branches: [{dtmf: '1', next: b}],"
            " fail: b}\n"
            "  b: {type: hangup}\n"
        ),
        {},
    )
    runner.start()

    assert runner.speech("hmm") == [Say("Yes?", None, True, "a"), Listen(6.0, 1, "a")]
    assert runner.speech("hmm") == [Hangup("b")]


# --- DTMF collection and store_as ---------------------------------------------------------


def test_digits_are_collected_up_to_dtmf_max_and_each_restarts_the_timer() -> None:
    runner = started()

    assert runner.dtmf("2") == [
        Say("Enter your code.", None, False, "code"),
        Listen(3.0, 3, "code"),
    ]
    assert runner.dtmf("1") == [Listen(3.0, 3, "code")]
    assert runner.dtmf("2") == [Listen(3.0, 3, "code")]
    assert runner.dtmf("3") == [
        Say("Code 123 after 2.", None, True, "thanks"),
        Say("Goodbye.", None, False, "bye"),
        Hangup("bye"),
    ]
    assert runner.variables["code"] == "123"


def test_hash_ends_the_entry_early() -> None:
    runner = started()
    runner.dtmf("2")
    runner.dtmf("4")

    assert runner.dtmf("#")[0] == Say("Code 4 after 2.", None, True, "thanks")


def test_no_input_submits_the_digits_collected_so_far() -> None:
    runner = started()
    runner.dtmf("2")
    runner.dtmf("7")

    assert runner.no_input()[0] == Say("Code 7 after 2.", None, True, "thanks")


def test_unmatched_digits_count_as_no_match() -> None:
    runner = started()

    assert runner.dtmf("9") == [
        Say("Not understood.", None, True, "menu"),
        MENU_PROMPT,
        MENU_LISTEN,
    ]


def test_hash_alone_is_an_entry_that_only_any_matches() -> None:
    runner = started()
    assert runner.dtmf("#")[0] == Say("Not understood.", None, True, "menu")

    runner.dtmf("2")
    assert runner.dtmf("#")[0] == Say("Code after 2.", None, True, "thanks")


def test_lower_case_letters_are_dtmf_and_other_characters_are_refused() -> None:
    runner = started()
    runner.dtmf("2")

    assert runner.dtmf("a") == [Listen(3.0, 3, "code")]
    with pytest.raises(ValueError, match="not a DTMF digit"):
        runner.dtmf("x")


# --- variables -----------------------------------------------------------------------------


def test_missing_variables_render_empty_and_the_text_stays_tidy() -> None:
    runner = FlowRunner(parse_flow(FLOW), {})

    assert runner.start()[0] == Say("Hello, you called.", None, True, "greet")


def test_variables_are_a_read_only_view_including_store_as_results() -> None:
    given = {"caller_name": "Ann"}
    runner = started(given)
    runner.speech("agent")

    assert dict(runner.variables) == {"caller_name": "Ann", "choice": "agent"}
    assert given == {"caller_name": "Ann"}
    with pytest.raises(TypeError):
        runner.variables["x"] = "y"  # type: ignore[index]


# --- handoff ----------------------------------------------------------------------------------


def test_queue_timeout_continues_at_the_fallback() -> None:
    runner = started()
    runner.dtmf("0")

    assert runner.queue_timeout()[0] == Say("All agents are busy.", None, True, "busy")


def test_resume_continues_at_the_resume_node() -> None:
    runner = started()
    runner.dtmf("0")

    assert runner.resume() == [MENU_PROMPT, MENU_LISTEN]
    assert runner.state is RunnerState.LISTENING


def test_resume_without_a_resume_node_continues_at_the_fallback() -> None:
    flow = parse_flow(
        "name: t\nstart: a\nnodes:\n  a: {type: agent, fallback: b}\n  b: {type: hangup}\n"
    )
    runner = FlowRunner(flow, {})

    assert runner.start() == [Handoff(None, None, "flow", "a")]
    assert runner.resume() == [Hangup("b")]


def test_a_second_handoff_names_the_queue_timeout_as_its_reason() -> None:
    flow = parse_flow(
        "name: t\nstart: a\nnodes:\n"
        "  a: {type: agent, queue: first, fallback: b}\n"
        "  b: {type: agent, queue: overflow, fallback: c}\n"
        "  c: {type: hangup}\n"
    )
    runner = FlowRunner(flow, {})
    runner.start()

    assert runner.queue_timeout() == [Handoff("overflow", None, "queue timeout at a", "b")]


# --- inputs that are not expected -------------------------------------------------------------


def test_inputs_before_start_are_ignored() -> None:
    runner = FlowRunner(parse_flow(FLOW), VARIABLES)

    assert runner.speech("agent") == runner.dtmf("0") == runner.no_input() == []
    assert runner.queue_timeout() == runner.resume() == []
    assert runner.state is RunnerState.IDLE


def test_start_twice_does_nothing_the_second_time() -> None:
    runner = started()

    assert runner.start() == []
    assert runner.current_node == "menu"


def test_queue_timeout_and_resume_while_listening_are_ignored() -> None:
    runner = started()

    assert runner.queue_timeout() == runner.resume() == []
    assert runner.state is RunnerState.LISTENING
    assert runner.no_input()[0] == Say("Nothing heard.", None, True, "menu")  # retries untouched


def test_caller_input_while_handed_off_is_ignored() -> None:
    runner = started()
    runner.dtmf("0")

    assert runner.speech("hello?") == runner.dtmf("5") == runner.no_input() == []
    assert runner.state is RunnerState.HANDED_OFF
    assert runner.current_node == "agent"


def test_everything_after_hangup_is_ignored() -> None:
    runner = started()
    runner.dtmf("0")
    runner.queue_timeout()

    inputs: list[list[Action]] = [
        runner.speech("agent"),
        runner.dtmf("0"),
        runner.no_input(),
        runner.queue_timeout(),
        runner.resume(),
        runner.start(),
    ]
    assert inputs == [[]] * 6
    assert runner.state is RunnerState.ENDED


def test_a_blank_transcript_is_ignored_and_uses_no_retry() -> None:
    runner = started()

    assert runner.speech("  ... ") == []
    runner.no_input()
    runner.no_input()
    assert runner.no_input()[-1] == handoff("no input at menu")


# --- runtime guards ---------------------------------------------------------------------------


def test_a_loop_that_never_waits_hangs_up_and_logs_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flow = Flow(  # built by hand: the loader would refuse this loop
        name="loop",
        start="a",
        nodes={"a": SayNode("a", Prompt("again"), "b"), "b": GotoNode("b", "a")},
    )
    runner = FlowRunner(flow, {})

    with caplog.at_level(logging.ERROR, logger="hitl_sip.bot.runner"):
        actions = runner.start()

    assert actions == [Hangup(runner.current_node)]
    assert runner.state is RunnerState.ENDED
    assert f"{MAX_STEPS} nodes without waiting" in caplog.text


def test_an_edge_to_a_missing_node_hangs_up_and_logs_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flow = Flow(name="broken", start="a", nodes={"a": GotoNode("a", "gone")})

    with caplog.at_level(logging.ERROR, logger="hitl_sip.bot.runner"):
        actions = FlowRunner(flow, {}).start()

    assert actions == [Hangup("a")]
    assert "unknown node 'gone'" in caplog.text


def test_log_messages_go_to_the_given_call_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.LoggerAdapter(logging.getLogger("test.call"), {})
    runner = FlowRunner(parse_flow(FLOW), VARIABLES, log=logger)

    with caplog.at_level(logging.INFO, logger="test.call"):
        runner.start()
        runner.dtmf("0")

    assert [r.name for r in caplog.records] == ["test.call"]


# --- the demo flow ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "value"),
    [("dtmf", "0"), ("speech", "agent"), ("speech", "Representative, please.")],
)
def test_the_demo_flow_reaches_its_agent_node(method: str, value: str) -> None:
    runner = FlowRunner(load_flow(DEMO), {})
    actions = runner.start()
    assert isinstance(actions[-1], Listen)

    actions = getattr(runner, method)(value)

    assert isinstance(actions[-1], Handoff)
    assert runner.state is RunnerState.HANDED_OFF


def test_the_runner_is_a_bot_dialog() -> None:
    assert isinstance(FlowRunner(load_flow(DEMO), {}), BotDialog)
