"""Flow files: the demo flow loads; every problem is reported at once with file, node and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_sip.bot.actions import Listen
from hitl_sip.bot.flow import (
    AgentNode,
    AskNode,
    Branch,
    FlowError,
    FlowIssue,
    GotoNode,
    HangupNode,
    Prompt,
    SayNode,
    audio_files,
    load_flow,
    parse_flow,
    render_text,
    template_variables,
)
from hitl_sip.bot.runner import FlowRunner
from hitl_sip.errors import HitlSipError

ROOT = Path(__file__).parents[2]
DEMO = ROOT / "flows" / "demo.yaml"

# line 1: name, 2: start, 3: nodes, so the first node id is on line 4
HEADER = "name: t\nstart: a\nnodes:\n"


def write(tmp_path: Path, nodes: str, header: str = HEADER) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(header + nodes, encoding="utf-8")
    return path


def issues_of(tmp_path: Path, nodes: str, header: str = HEADER) -> list[FlowIssue]:
    path = write(tmp_path, nodes, header)
    with pytest.raises(FlowError) as info:
        load_flow(path, project_root=tmp_path)
    assert all(issue.file == str(path) for issue in info.value.issues)
    return info.value.issues


def only_issue(tmp_path: Path, nodes: str, header: str = HEADER) -> FlowIssue:
    issues = issues_of(tmp_path, nodes, header)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


# --- the demo flow --------------------------------------------------------------------------


def test_the_demo_flow_loads_with_its_agent_node_reached_by_zero_and_by_keywords() -> None:
    flow = load_flow(DEMO)

    assert flow.name == "demo"
    assert flow.source == DEMO
    assert isinstance(flow.nodes[flow.start], SayNode)
    menu = flow.nodes["menu"]
    assert isinstance(menu, AskNode)
    to_agent = [b for b in menu.branches if b.next == "agent"]
    assert any(b.dtmf == "0" for b in to_agent)
    assert {"agent", "representative"} <= {k for b in to_agent for k in b.keywords}
    assert menu.fail == "agent"
    agent = flow.nodes["agent"]
    assert isinstance(agent, AgentNode)
    assert agent.message is not None and agent.message.text
    assert isinstance(flow.nodes[agent.fallback], SayNode)


def test_a_valid_flow_becomes_typed_nodes_with_their_lines(tmp_path: Path) -> None:
    (tmp_path / "hello.wav").write_bytes(b"RIFF")
    path = write(
        tmp_path,
        """\
  a:
    type: say
    audio: hello.wav
    text: "Hi {caller_name} {{literal}}"
    barge_in: false
    next: b
  b:
    type: ask
    prompt: "Code?"
    timeout: 2.5
    retries: 0
    dtmf_max: 4
    no_match: {text: "Again."}
    branches:
      - {dtmf: 1234, next: c}
      - {dtmf: "9", keywords: [Agent], phrases: ["My Bill!"], next: c}
      - {any: true, next: d}
    fail: d
    store_as: code
  c: {type: agent, queue: q1, skill: billing, fallback: d, resume: b}
  d: {type: goto, next: e}
  e: {type: hangup, text: "Bye {code} {headers.X-Account}."}
""",
        header="name: t\nstart: a\nvoice: en-US-Jenny\nnodes:\n",
    )
    with pytest.raises(FlowError):  # 1234 unquoted is an int, not a digit string
        load_flow(path)

    path.write_text(path.read_text().replace("dtmf: 1234", 'dtmf: "1234"'))
    flow = load_flow(path)

    assert flow.voice == "en-US-Jenny"
    assert flow.nodes["a"] == SayNode(
        "a", Prompt("Hi {caller_name} {{literal}}", tmp_path / "hello.wav"), "b", False, 5
    )
    ask = flow.nodes["b"]
    assert isinstance(ask, AskNode)
    assert (ask.timeout, ask.retries, ask.dtmf_max, ask.store_as) == (2.5, 0, 4, "code")
    assert ask.no_input is None and ask.no_match == Prompt("Again.")
    assert ask.branches[0] == Branch("c", dtmf="1234", line=19)
    assert ask.branches[1].keywords == ("agent",) and ask.branches[1].phrases == ("my bill",)
    assert ask.branches[2].any_input
    assert flow.nodes["c"] == AgentNode("c", "d", "q1", "billing", None, "b", 24)
    assert flow.nodes["d"] == GotoNode("d", "e", 25)
    assert flow.nodes["e"] == HangupNode("e", Prompt("Bye {code} {headers.X-Account}."), 26)


def test_defaults_apply_when_optional_keys_are_left_out(tmp_path: Path) -> None:
    flow = parse_flow(
        HEADER + "  a: {type: ask, prompt: Hi, branches: [{dtmf: '1', next: a}], fail: a}\n"
    )
    ask = flow.nodes["a"]

    assert isinstance(ask, AskNode)
    assert (ask.timeout, ask.retries, ask.dtmf_max, ask.barge_in) == (6.0, 2, 1, True)
    assert ask.type_ahead is True


def test_an_ask_node_can_turn_type_ahead_off_and_its_listen_says_so() -> None:
    flow = parse_flow(
        HEADER + "  a: {type: ask, prompt: Hi, type_ahead: false,"
        " branches: [{dtmf: '1', next: a}], fail: a}\n"
    )
    ask = flow.nodes["a"]
    assert isinstance(ask, AskNode) and ask.type_ahead is False
    listen = FlowRunner(flow, {}).start()[-1]
    assert isinstance(listen, Listen) and listen.type_ahead is False


def test_audio_paths_resolve_against_the_flow_folder_then_the_project_root(
    tmp_path: Path,
) -> None:
    flow = load_flow(
        write(
            tmp_path,
            "  a: {type: say, audio: rtp/prompts/greeting.wav, next: b}\n  b: {type: hangup}\n",
        ),
        project_root=ROOT,
    )
    node = flow.nodes["a"]

    assert isinstance(node, SayNode)
    assert node.prompt.audio == (ROOT / "rtp/prompts/greeting.wav").resolve()


def test_audio_files_lists_every_prompt_file_of_the_flow(tmp_path: Path) -> None:
    (tmp_path / "bye.wav").write_bytes((ROOT / "rtp/prompts/greeting.wav").read_bytes())
    flow = load_flow(
        write(
            tmp_path,
            "  a: {type: say, audio: rtp/prompts/greeting.wav, next: b}\n"
            "  b: {type: ask, prompt: Where to, no_input: {text: Sorry., audio: bye.wav},\n"
            "      branches: [{dtmf: '1', next: c}], fail: c}\n"
            "  c: {type: hangup, text: Goodbye., audio: bye.wav}\n",
        ),
        project_root=ROOT,
    )
    assert audio_files(flow) == {(ROOT / "rtp/prompts/greeting.wav").resolve(),
                                 (tmp_path / "bye.wav").resolve()}
    assert audio_files(load_flow(DEMO)) == {(ROOT / "rtp/prompts/greeting.wav").resolve()}


# --- one kind of problem at a time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "node_id", "line", "fragment"),
    [
        pytest.param(
            "  a: {type: speak, next: a}\n", "a", 4, "unknown node type 'speak'", id="unknown-type"
        ),
        pytest.param("  a: {text: hi}\n", "a", 4, "missing required key 'type'", id="no-type"),
        pytest.param(
            "  a: {type: goto, next: b}\n  b: 3\n",
            "b",
            5,
            "a node is a mapping",
            id="node-not-mapping",
        ),
        pytest.param(
            "  a:\n    type: hangup\n    txt: bye\n", "a", 6, "unknown key 'txt'", id="unknown-key"
        ),
        pytest.param(
            "  a:\n    type: hangup\n    text: a\n    text: b\n",
            "a",
            7,
            "duplicate key 'text'",
            id="duplicate-key",
        ),
        pytest.param(
            "  a: {type: say, text: hi}\n", "a", 4, "missing required key 'next'", id="say-next"
        ),
        pytest.param(
            "  a: {type: say, next: b}\n  b: {type: hangup}\n",
            "a",
            4,
            "needs 'text' or 'audio'",
            id="say-without-text-or-audio",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, branches: [{dtmf: '1', next: a}]}\n",
            "a",
            4,
            "missing required key 'fail'",
            id="ask-fail",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, fail: a}\n",
            "a",
            4,
            "missing required key 'branches'",
            id="ask-branches",
        ),
        pytest.param(
            "  a: {type: ask, branches: [{dtmf: '1', next: a}], fail: a}\n",
            "a",
            4,
            "needs 'prompt' or 'audio'",
            id="ask-prompt",
        ),
        pytest.param("  a: {type: agent}\n", "a", 4, "missing required key 'fallback'", id="agent"),
        pytest.param("  a: {type: goto}\n", "a", 4, "missing required key 'next'", id="goto"),
        pytest.param(
            "  a: {type: say, text: hi, next: nowhere}\n",
            "a",
            4,
            "'next' goes to unknown node 'nowhere'",
            id="dangling-next",
        ),
        pytest.param(
            "  a:\n    type: ask\n    prompt: p\n    branches:\n      - {dtmf: '1', next: x}\n"
            "    fail: a\n",
            "a",
            8,
            "'next' goes to unknown node 'x'",
            id="dangling-branch",
        ),
        pytest.param(
            "  a:\n    type: ask\n    prompt: p\n    branches: [{dtmf: '1', next: a}]\n"
            "    fail: x\n",
            "a",
            8,
            "'fail' goes to unknown node 'x'",
            id="dangling-fail",
        ),
        pytest.param(
            "  a:\n    type: agent\n    fallback: x\n",
            "a",
            6,
            "'fallback' goes to unknown node 'x'",
            id="dangling-fallback",
        ),
        pytest.param(
            "  a: {type: agent, fallback: b, resume: x}\n  b: {type: hangup}\n",
            "a",
            4,
            "'resume' goes to unknown node 'x'",
            id="dangling-resume",
        ),
        pytest.param(
            "  a: {type: hangup}\n  orphan: {type: hangup}\n",
            "orphan",
            5,
            "unreachable from start node 'a'",
            id="unreachable",
        ),
        pytest.param(
            "  a:\n    type: hangup\n    text: Hi {account_id}\n",
            "a",
            6,
            "unknown variable {account_id}",
            id="unknown-variable",
        ),
        pytest.param(
            "  a: {type: hangup, text: 'Hi {caller_name'}\n", "a", 4, "stray '{'", id="stray-brace"
        ),
        pytest.param(
            "  a:\n    type: ask\n    prompt: p\n    timeout: 0\n"
            "    branches: [{dtmf: '1', next: a}]\n    fail: a\n",
            "a",
            7,
            "'timeout' must be a positive number",
            id="timeout-zero",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, timeout: 6s, branches: [{any: true, next: a}], fail: a}\n",
            "a",
            4,
            "'timeout' must be a positive number",
            id="timeout-text",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, retries: -1, branches: [{dtmf: '1', next: a}], fail: a}\n",
            "a",
            4,
            "'retries' must be an integer from 0",
            id="retries-negative",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, dtmf_max: 0, branches: [{dtmf: '1', next: a}], fail: a}\n",
            "a",
            4,
            "'dtmf_max' must be an integer from 1",
            id="dtmf-max-zero",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, branches: [{dtmf: '12', next: a}], fail: a}\n",
            "a",
            4,
            "longer than dtmf_max 1",
            id="dtmf-longer-than-max",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, branches: [{dtmf: 'x', next: a}], fail: a}\n",
            "a",
            4,
            "'dtmf' must be a quoted string",
            id="dtmf-bad-digit",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, branches: [{keywords: agent, next: a}], fail: a}\n",
            "a",
            4,
            "'keywords' must be a non-empty list",
            id="keywords-not-list",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, branches: [{next: a}], fail: a}\n",
            "a",
            4,
            "branch 1 needs a matcher",
            id="branch-without-matcher",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, branches: [], fail: a}\n",
            "a",
            4,
            "'branches' must be a non-empty list",
            id="branches-empty",
        ),
        pytest.param(
            "  a: {type: say, text: hi, barge_in: yes please, next: b}\n  b: {type: hangup}\n",
            "a",
            4,
            "'barge_in' must be true or false",
            id="barge-in-not-bool",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, type_ahead: 1, branches: [{any: true, next: a}],"
            " fail: a}\n",
            "a",
            4,
            "'type_ahead' must be true or false",
            id="type-ahead-not-bool",
        ),
        pytest.param(
            "  a: {type: ask, prompt: p, store_as: caller_name, branches: [{any: true, next: a}],"
            " fail: a}\n",
            "a",
            4,
            "would overwrite a call variable",
            id="store-as-shadows",
        ),
        pytest.param(
            "  a: {type: agent, message: [1], fallback: b}\n  b: {type: hangup}\n",
            "a",
            4,
            "'message' must be a text or a mapping",
            id="message-bad-type",
        ),
        pytest.param(
            "  a: {type: hangup, audio: missing.wav}\n",
            "a",
            4,
            "audio file not found: missing.wav",
            id="audio-missing",
        ),
        pytest.param(
            "  a:\n    type: ask\n    prompt: p\n    no_input: {audio: gone.wav}\n"
            "    branches: [{dtmf: '1', next: a}]\n    fail: a\n",
            "a",
            7,
            "audio file not found: gone.wav",
            id="nested-audio-missing",
        ),
        pytest.param(
            "  a: {type: goto, next: b}\n  b: {type: goto, next: a}\n",
            "a",
            4,
            "goto loop with no say or ask node: a → b → a",
            id="goto-loop",
        ),
        pytest.param(
            "  a: {type: say, text: hi, next: b}\n  b: {type: goto, next: a}\n",
            "a",
            4,
            "loop of say/goto nodes never waits for the caller: a → b → a",
            id="say-loop",
        ),
        pytest.param(
            "  a: {type: goto, next: a}\n", "a", 4, "goto loop with no say or ask node", id="self"
        ),
        pytest.param(
            "  a: {type: hangup}\n  7: {type: hangup}\n", None, 5, "bad node id 7", id="bad-node-id"
        ),
    ],
)
def test_each_problem_is_reported_with_its_node_and_line(
    tmp_path: Path, nodes: str, node_id: str | None, line: int, fragment: str
) -> None:
    issue = only_issue(tmp_path, nodes)

    assert (issue.node_id, issue.line) == (node_id, line), str(issue)
    assert fragment in issue.message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        pytest.param("", 1, "this one is empty", id="empty"),
        pytest.param("- a\n- b\n", 1, "this one is a list", id="list"),
        pytest.param("name: t\nstart: [a\n", 3, "YAML:", id="syntax"),
        pytest.param("start: a\nnodes:\n  a: {type: hangup}\n", 1, "'name'", id="no-name"),
        pytest.param("name: t\nnodes:\n  a: {type: hangup}\n", 1, "'start'", id="no-start"),
        pytest.param("name: t\nstart: a\n", 1, "missing required key 'nodes'", id="no-nodes"),
        pytest.param("name: t\nstart: a\nnodes: {}\n", 3, "non-empty mapping", id="nodes-empty"),
        pytest.param(
            "name: t\nstart: b\nnodes:\n  a: {type: hangup}\n",
            2,
            "start node 'b' is not a node",
            id="start-missing",
        ),
        pytest.param(
            "name: t\nstart: a\ngreeting: hi\nnodes:\n  a: {type: hangup}\n",
            3,
            "unknown key 'greeting' in the flow",
            id="unknown-top-key",
        ),
    ],
)
def test_problems_outside_nodes_name_the_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    issue = only_issue(tmp_path, text, header="")

    assert (issue.node_id, issue.line) == (None, line), str(issue)
    assert fragment in issue.message


def test_every_problem_in_a_file_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    nodes = """\
  a:
    type: ask
    prompt: "Hi {nobody}"
    timeout: -3
    branches:
      - {dtmf: "1", next: ghost}
    fail: a
  b: {type: shout}
  c: {type: hangup, colour: red}
"""
    path = write(tmp_path, nodes)

    with pytest.raises(FlowError) as info:
        load_flow(path)
    issues = info.value.issues

    assert [(i.node_id, i.line) for i in issues] == [
        ("a", 6),  # unknown variable
        ("a", 7),  # timeout
        ("a", 9),  # dangling branch
        ("b", 11),  # unknown type
        ("b", 11),  # unreachable
        ("c", 12),  # unknown key
        ("c", 12),  # unreachable
    ]
    assert str(issues[0]) == f"{path}:6: node 'a': 'prompt': unknown variable {{nobody}} " + (
        "(known: called_number, caller_name, caller_number, trunk, headers.<key>)"
    )
    assert str(info.value).startswith("invalid flow (7 errors):\n")
    assert isinstance(info.value, HitlSipError)


def test_header_and_store_as_variables_are_allowed_anywhere(tmp_path: Path) -> None:
    nodes = """\
  a: {type: say, text: "{headers.x_account} {headers.X-Vonage-Id} {answer}", next: b}
  b: {type: ask, prompt: p, branches: [{any: true, next: c}], fail: c, store_as: answer}
  c: {type: hangup}
"""
    load_flow(write(tmp_path, nodes))


def test_the_loader_takes_the_allowed_variable_names(tmp_path: Path) -> None:
    path = write(tmp_path, "  a: {type: hangup, text: '{account}'}\n")

    with pytest.raises(FlowError):
        load_flow(path)
    load_flow(path, variables={"account"})


def test_an_unreadable_file_is_a_flow_error(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="cannot read flow file"):
        load_flow(tmp_path / "missing.yaml")


# --- templates ----------------------------------------------------------------------------------


def test_templates_list_their_variables_and_render_missing_ones_tidily() -> None:
    assert template_variables("{a} {{b}} {headers.x-y}") == ["a", "headers.x-y"]
    assert render_text("Hello {name}, {{ok}}", {"name": "Ann"}) == "Hello Ann, {ok}"
    assert render_text("Hello {name}, welcome.", {}) == "Hello, welcome."
    with pytest.raises(ValueError, match="malformed variable"):
        template_variables("{not valid}")


def test_a_problem_with_a_whole_block_node_points_at_its_id(tmp_path: Path) -> None:
    issue = only_issue(tmp_path, "  a:\n    type: agent\n    queue: q\n")

    assert (issue.node_id, issue.line) == ("a", 4)
    assert issue.message == "missing required key 'fallback'"


@pytest.mark.parametrize(("header", "record", "consent"), [
    ("", "on", None),
    ("record: off\n", "off", None),
    ("record: on\n", "on", None),
    ("record: consent\n", "consent", "This call may be recorded for quality and training."),
    ('record: consent\nconsent: "We record calls."\n', "consent", "We record calls."),
])
def test_the_recording_mode_and_its_consent_notice(tmp_path: Path, header: str, record: str,
                                                  consent: str | None) -> None:
    flow = load_flow(write(tmp_path, "  a: {type: hangup}\n", "name: t\nstart: a\n" + header
                           + "nodes:\n"), project_root=tmp_path)
    assert flow.record == record
    assert (flow.consent.text if flow.consent else None) == consent


@pytest.mark.parametrize(("header", "message"), [
    ("record: maybe\n", "'record' must be one of on, consent, off"),
    ('consent: "hi"\n', "'consent' needs record: consent"),
])
def test_a_bad_recording_mode_is_named(tmp_path: Path, header: str, message: str) -> None:
    issue = only_issue(tmp_path, "  a: {type: hangup}\n", "name: t\nstart: a\n" + header
                       + "nodes:\n")
    assert issue.line == 3 and message in issue.message
