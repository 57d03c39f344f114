"""Bot flow files (``flows/*.yaml``): a graph of nodes, loaded and validated in one pass.

Format (every key not listed is an error; ``{name}`` in a text is a variable, ``{{``/``}}``
are literal braces)::

    name: demo                  # required
    start: greet                # required: the first node
    voice: null                 # optional TTS voice name
    record: on                  # on (default) | consent | off: the call's two-channel recording
    consent: "This call may be recorded."   # with record: consent, played (no barge-in)
                                #   before the flow starts; recording begins when it ends
    nodes:                      # required: node id (letters, digits, '_', '-') → node
      greet:
        type: say               # plays a prompt, then goes on at once
        text: "Hello {caller_name}."     # text and/or audio (audio wins; text is the caption)
        audio: rtp/prompts/greeting.wav  # relative to the flow file's folder, else the project root
        barge_in: true          # caller input may interrupt the prompt (default true)
        next: menu              # required
      menu:
        type: ask               # prompt, then wait for speech or DTMF
        prompt: "Press zero or say agent."   # prompt and/or audio, like say's text/audio
        barge_in: true
        timeout: 6              # seconds of silence after the prompt (> 0, default 6)
        retries: 2              # re-prompts after no-input/no-match (>= 0, default 2)
        no_input: "Sorry, I didn't hear anything."   # text, or {text: ..., audio: ...}
        no_match: "Sorry, I didn't get that."
        dtmf_max: 1             # digits collected before matching; '#' ends early (default 1)
        type_ahead: true        # digits pressed while an earlier prompt played count here
        safe_digits: false      # true for a menu: its digits are kept; else "[pressed •]"
                                #   (default true; false: they are dropped)
        branches:               # first match wins, in file order; each has next + matchers
          - {dtmf: "0", next: agent}                    # exact digits
          - {keywords: [agent, representative], next: agent}   # whole words
          - {phrases: ["my bill"], next: billing}       # substrings
          - {any: true, next: other}                    # any non-empty input
        fail: agent             # required: retries exhausted
        store_as: last_answer   # optional: variable set to the matched transcript/digits
      agent:
        type: agent             # hand the call to a human
        queue: default          # optional
        skill: null             # optional
        message: "Please hold."  # optional: text or {text, audio}, played before hold audio
        fallback: busy          # required: no agent took the call
        resume: menu            # optional: where an agent's return_to_bot goes (default fallback)
      bye: {type: hangup, text: "Goodbye."}   # optional goodbye text/audio
      loop: {type: goto, next: menu}

Variables: the names given to the loader (default :data:`BUILTIN_VARIABLES`), any
``headers.<key>`` (call metadata from SIP headers) and every ``store_as`` name.

Validation collects every problem before raising one :class:`FlowError` whose ``issues``
each name the file, the node and the line: unknown node types and keys, missing or badly
typed fields, edges to missing nodes, nodes unreachable from ``start``, unknown variables,
missing audio files, and cycles of say/goto nodes (they would never wait for the caller).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from hitl_sip.errors import HitlSipError

BUILTIN_VARIABLES: frozenset[str] = frozenset(
    {"caller_number", "caller_name", "called_number", "trunk"}
)
HEADERS_PREFIX = "headers."
PROJECT_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_TIMEOUT = 6.0
DEFAULT_RETRIES = 2
DEFAULT_DTMF_MAX = 1
MAX_DTMF_MAX = 32
DTMF_DIGITS = frozenset("0123456789*#ABCD")

_NODE_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_STORE_AS_RE = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|headers\.[A-Za-z0-9_-]+")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_WORD_SPLIT_RE = re.compile(r"[\W_]+")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.!?;:])")
_SPACES_RE = re.compile(r"\s{2,}")


class NodeType(StrEnum):
    SAY = "say"
    ASK = "ask"
    AGENT = "agent"
    HANGUP = "hangup"
    GOTO = "goto"


@dataclass(frozen=True)
class Prompt:
    """What to play: ``audio`` when given (``text`` is then its caption), else TTS of ``text``."""

    text: str | None = None
    audio: Path | None = None


@dataclass(frozen=True)
class SayNode:
    id: str
    prompt: Prompt
    next: str
    barge_in: bool = True
    line: int = 0


@dataclass(frozen=True)
class Branch:
    """One way out of an ask node; it matches when any of its matchers does."""

    next: str
    dtmf: str | None = None
    keywords: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    any_input: bool = False
    line: int = 0


@dataclass(frozen=True)
class AskNode:
    id: str
    prompt: Prompt
    branches: tuple[Branch, ...]
    fail: str
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    dtmf_max: int = DEFAULT_DTMF_MAX
    no_input: Prompt | None = None
    no_match: Prompt | None = None
    store_as: str | None = None
    barge_in: bool = True
    type_ahead: bool = True
    # digits pressed here may be stored and shown (a menu); otherwise a turn, the call
    # record and the logs say only that a digit was pressed (card numbers, PINs)
    safe_digits: bool = False
    line: int = 0


@dataclass(frozen=True)
class AgentNode:
    id: str
    fallback: str
    queue: str | None = None
    skill: str | None = None
    message: Prompt | None = None
    resume: str | None = None
    line: int = 0


@dataclass(frozen=True)
class HangupNode:
    id: str
    prompt: Prompt | None = None
    line: int = 0


@dataclass(frozen=True)
class GotoNode:
    id: str
    next: str
    line: int = 0


Node = SayNode | AskNode | AgentNode | HangupNode | GotoNode


@dataclass(frozen=True)
class Flow:
    name: str
    start: str
    nodes: Mapping[str, Node]
    voice: str | None = None
    source: Path | None = None
    record: str = "on"  # on | consent | off (hitl_sip.worker.recorder)
    consent: Prompt | None = None


@dataclass(frozen=True)
class FlowIssue:
    file: str
    node_id: str | None
    line: int
    message: str

    def __str__(self) -> str:
        where = f"node '{self.node_id}': " if self.node_id is not None else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class FlowError(HitlSipError):
    """A flow file cannot be used; ``issues`` lists every problem found (at least one)."""

    def __init__(self, issues: list[FlowIssue]) -> None:
        self.issues = issues
        count = f"{len(issues)} error{'s' if len(issues) != 1 else ''}"
        super().__init__(f"invalid flow ({count}):\n" + "\n".join(f"  {i}" for i in issues))


# --- text helpers -------------------------------------------------------------------------


def template_variables(template: str) -> list[str]:
    """The ``{name}`` variables used in ``template``, in order.

    Raises ValueError for a stray ``{``/``}`` or a malformed name (``{{``/``}}`` are literal).
    """
    names: list[str] = []
    for match in _TOKEN_RE.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise ValueError(f"stray '{token}' (write '{token}{token}' for a literal brace)")
        if not _VARIABLE_RE.fullmatch(name):
            raise ValueError(f"malformed variable {{{name}}}")
        names.append(name)
    return names


def render_text(template: str, variables: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced; a variable without a value becomes ''.

    When a variable is empty the text is tidied (no doubled spaces, no space before
    punctuation), so "Hello {caller_name}, welcome" reads "Hello, welcome".
    """
    emptied = False

    def replace(match: re.Match[str]) -> str:
        nonlocal emptied
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None:
            return token
        value = variables.get(name, "")
        emptied = emptied or not value
        return value

    text = _TOKEN_RE.sub(replace, template)
    if emptied:
        text = _SPACES_RE.sub(" ", _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)).strip()
    return text


def normalize_words(text: str) -> str:
    """Lower case, apostrophes dropped, other punctuation and runs of space → one space."""
    return " ".join(_WORD_SPLIT_RE.split(text.lower().replace("'", "").replace("’", ""))).strip()


# --- YAML with line numbers ---------------------------------------------------------------


class _YamlMap(dict[Hashable, Any]):
    """A YAML mapping that remembers its own line and each key's line (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Hashable, int] = {}
        self.duplicates: list[tuple[Hashable, int]] = []


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _YamlMap:
    loader.flatten_mapping(node)
    out = _YamlMap(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            )
        line = key_node.start_mark.line + 1
        if key in out:
            out.duplicates.append((key, line))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)


# --- loading --------------------------------------------------------------------------------


def load_flow(
    path: str | Path,
    *,
    variables: Collection[str] = BUILTIN_VARIABLES,
    project_root: Path = PROJECT_ROOT,
) -> Flow:
    """Read and validate a flow file; raises :class:`FlowError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FlowError([FlowIssue(str(path), None, 0, f"cannot read flow file: {e}")]) from e
    return parse_flow(text, source=path, variables=variables, project_root=project_root)


def parse_flow(
    text: str,
    *,
    source: Path = Path("<string>"),
    variables: Collection[str] = BUILTIN_VARIABLES,
    project_root: Path = PROJECT_ROOT,
) -> Flow:
    """Validate flow YAML ``text``; relative audio paths resolve against ``source``'s folder
    first, then ``project_root``. Raises :class:`FlowError` listing every problem."""
    file = str(source)
    try:
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = e.problem or e.context or "syntax error"
        raise FlowError([FlowIssue(file, None, line, f"YAML: {problem}")]) from e
    except yaml.YAMLError as e:
        raise FlowError([FlowIssue(file, None, 0, f"YAML: {e}")]) from e
    if not isinstance(data, _YamlMap):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise FlowError([FlowIssue(file, None, 1, f"a flow file is a mapping, this one is {what}")])
    return _Validator(file, source.parent, project_root, frozenset(variables)).flow(data, source)


_TOP_KEYS = frozenset({"name", "start", "voice", "nodes", "record", "consent"})
RECORD_MODES = ("on", "consent", "off")
DEFAULT_CONSENT = "This call may be recorded for quality and training."
_NODE_KEYS: dict[NodeType, frozenset[str]] = {
    NodeType.SAY: frozenset({"type", "text", "audio", "barge_in", "next"}),
    NodeType.ASK: frozenset(
        {
            "type",
            "prompt",
            "audio",
            "barge_in",
            "timeout",
            "retries",
            "no_input",
            "no_match",
            "dtmf_max",
            "branches",
            "fail",
            "store_as",
            "type_ahead",
            "safe_digits",
        }
    ),
    NodeType.AGENT: frozenset({"type", "queue", "skill", "message", "fallback", "resume"}),
    NodeType.HANGUP: frozenset({"type", "text", "audio"}),
    NodeType.GOTO: frozenset({"type", "next"}),
}
_BRANCH_KEYS = frozenset({"dtmf", "keywords", "phrases", "any", "next"})
_PROMPT_KEYS = frozenset({"text", "audio"})


@dataclass
class _Edge:
    label: str
    target: str
    line: int


class _Validator:
    def __init__(
        self, file: str, base_dir: Path, project_root: Path, variables: frozenset[str]
    ) -> None:
        self.file = file
        self.base_dir = base_dir
        self.project_root = project_root
        self.variables = variables
        self.issues: list[FlowIssue] = []
        self.edges: dict[str, list[_Edge]] = {}
        self.lines: dict[str, int] = {}
        self.store_names: dict[str, tuple[str, int]] = {}
        # (node id, line, key, text): variables are checked once every store_as name is known
        self.texts: list[tuple[str, int, str, str]] = []

    # -- reporting and typed getters --

    def issue(self, node_id: str | None, line: int, message: str) -> None:
        self.issues.append(FlowIssue(self.file, node_id, line, message))

    @staticmethod
    def line_of(m: _YamlMap, key: str) -> int:
        return m.key_lines.get(key, m.line)

    def check_keys(
        self, node_id: str | None, m: _YamlMap, allowed: frozenset[str], what: str
    ) -> None:
        for key, line in m.duplicates:
            self.issue(node_id, line, f"duplicate key '{key}'")
        for key in m:
            if key not in allowed:
                self.issue(
                    node_id,
                    m.key_lines[key],
                    f"unknown key '{key}' in {what} (allowed: {', '.join(sorted(allowed))})",
                )

    def get_str(
        self, node_id: str | None, m: _YamlMap, key: str, *, required: bool = False
    ) -> str | None:
        value = m.get(key)
        if value is None:
            if required:
                self.issue(node_id, m.line, f"missing required key '{key}'")
            return None
        if not isinstance(value, str) or not value.strip():
            self.issue(node_id, self.line_of(m, key), f"'{key}' must be a non-empty string")
            return None
        return value

    def get_bool(self, node_id: str, m: _YamlMap, key: str, default: bool) -> bool:
        value = m.get(key, default)
        if not isinstance(value, bool):
            self.issue(node_id, self.line_of(m, key), f"'{key}' must be true or false")
            return default
        return value

    def get_int(
        self, node_id: str, m: _YamlMap, key: str, default: int, *, low: int, high: int
    ) -> int:
        value = m.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.issue(
                node_id, self.line_of(m, key), f"'{key}' must be an integer from {low} to {high}"
            )
            return default
        return value

    def get_edge(self, node_id: str, m: _YamlMap, key: str, *, required: bool = True) -> str | None:
        target = self.get_str(node_id, m, key, required=required)
        if target is not None:
            self.edges[node_id].append(_Edge(key, target, self.line_of(m, key)))
        return target

    def text(self, node_id: str, line: int, key: str, value: str) -> str:
        self.texts.append((node_id, line, key, value))
        return value

    def audio(self, node_id: str, line: int, key: str, raw: str) -> Path | None:
        path = Path(raw)
        candidates = (
            [path] if path.is_absolute() else [self.base_dir / path, self.project_root / path]
        )
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        looked = " or ".join(str(c) for c in candidates)
        self.issue(node_id, line, f"'{key}': audio file not found: {raw} (looked for {looked})")
        return None

    def prompt_keys(
        self, node_id: str, m: _YamlMap, text_key: str, *, required: bool
    ) -> Prompt | None:
        """A prompt given as ``text_key``/``audio`` keys of the node itself."""
        text = self.get_str(node_id, m, text_key)
        raw_audio = self.get_str(node_id, m, "audio")
        if text is None and raw_audio is None:
            if required and text_key not in m and "audio" not in m:
                self.issue(node_id, m.line, f"needs '{text_key}' or 'audio'")
            return None
        if text is not None:
            self.text(node_id, self.line_of(m, text_key), text_key, text)
        audio = None
        if raw_audio is not None:
            audio = self.audio(node_id, self.line_of(m, "audio"), "audio", raw_audio)
            if audio is None:
                return None
        return Prompt(text=text, audio=audio)

    def prompt_value(self, node_id: str, m: _YamlMap, key: str) -> Prompt | None:
        """An optional prompt given as a string (text) or a ``{text, audio}`` mapping."""
        value = m.get(key)
        line = self.line_of(m, key)
        if value is None:
            return None
        if isinstance(value, str) and value.strip():
            return Prompt(text=self.text(node_id, line, key, value))
        if isinstance(value, _YamlMap):
            self.check_keys(node_id, value, _PROMPT_KEYS, f"'{key}'")
            if "text" not in value and "audio" not in value:
                self.issue(node_id, value.line, f"'{key}' needs 'text' or 'audio'")
                return None
            return self.prompt_keys(node_id, value, "text", required=False)
        self.issue(node_id, line, f"'{key}' must be a text or a mapping with 'text'/'audio'")
        return None

    # -- the flow --

    def flow(self, data: _YamlMap, source: Path) -> Flow:
        self.check_keys(None, data, _TOP_KEYS, "the flow")
        name = self.get_str(None, data, "name", required=True)
        start = self.get_str(None, data, "start", required=True)
        voice = self.get_str(None, data, "voice")
        record = data.get("record", "on")
        if record is True:  # YAML 1.1 reads a bare on/off as a boolean
            record = "on"
        elif record is False:
            record = "off"
        if record not in RECORD_MODES:
            self.issue(None, self.line_of(data, "record"),
                       f"'record' must be one of {', '.join(RECORD_MODES)}")
            record = "on"
        consent = self.prompt_value("consent", data, "consent")
        if consent is not None and record != "consent":
            self.issue(None, self.line_of(data, "consent"), "'consent' needs record: consent")
        if record == "consent" and consent is None:
            consent = Prompt(text=DEFAULT_CONSENT)
        raw_nodes = data.get("nodes")
        nodes: dict[str, Node] = {}
        if not isinstance(raw_nodes, _YamlMap) or not raw_nodes:
            if raw_nodes is None:
                self.issue(None, data.line, "missing required key 'nodes'")
            else:
                self.issue(None, self.line_of(data, "nodes"), "'nodes' must be a non-empty mapping")
        else:
            for key, line in raw_nodes.duplicates:
                self.issue(str(key), line, "duplicate node id")
            for node_id, raw in raw_nodes.items():
                line = raw_nodes.key_lines[node_id]
                if not isinstance(node_id, str) or not _NODE_ID_RE.fullmatch(node_id):
                    self.issue(
                        None,
                        line,
                        f"bad node id {node_id!r}: letters, digits, '_' or '-', "
                        "starting with a letter or '_'",
                    )
                    continue
                self.lines[node_id] = line
                self.edges[node_id] = []
                node = self.node(node_id, line, raw)
                if node is not None:
                    nodes[node_id] = node
        self.check_graph(start, data)
        self.check_texts()
        if self.issues:
            self.issues.sort(key=lambda i: i.line)
            raise FlowError(self.issues)
        assert name is not None and start is not None  # an issue was reported otherwise
        return Flow(name=name, start=start, nodes=nodes, voice=voice, source=source,
                    record=str(record), consent=consent)

    def node(self, node_id: str, line: int, raw: object) -> Node | None:
        if not isinstance(raw, _YamlMap):
            self.issue(node_id, line, "a node is a mapping with a 'type'")
            return None
        raw.line = line  # node-level problems point at the node id, not its first key
        raw_type = raw.get("type")
        if raw_type is None:
            self.issue(node_id, line, "missing required key 'type'")
            return None
        try:
            node_type = NodeType(raw_type)
        except ValueError:
            known = ", ".join(t.value for t in NodeType)
            self.issue(
                node_id,
                self.line_of(raw, "type"),
                f"unknown node type {raw_type!r} (known: {known})",
            )
            return None
        self.check_keys(node_id, raw, _NODE_KEYS[node_type], f"a {node_type} node")
        count = len(self.issues)
        node: Node | None
        match node_type:
            case NodeType.SAY:
                node = self.say(node_id, line, raw)
            case NodeType.ASK:
                node = self.ask(node_id, line, raw)
            case NodeType.AGENT:
                node = self.agent(node_id, line, raw)
            case NodeType.HANGUP:
                node = HangupNode(
                    node_id, self.prompt_keys(node_id, raw, "text", required=False), line
                )
            case NodeType.GOTO:
                target = self.get_edge(node_id, raw, "next")
                node = GotoNode(node_id, target, line) if target is not None else None
        return node if len(self.issues) == count else None

    def say(self, node_id: str, line: int, m: _YamlMap) -> SayNode | None:
        prompt = self.prompt_keys(node_id, m, "text", required=True)
        barge_in = self.get_bool(node_id, m, "barge_in", True)
        target = self.get_edge(node_id, m, "next")
        if prompt is None or target is None:
            return None
        return SayNode(node_id, prompt, target, barge_in, line)

    def ask(self, node_id: str, line: int, m: _YamlMap) -> AskNode | None:
        prompt = self.prompt_keys(node_id, m, "prompt", required=True)
        barge_in = self.get_bool(node_id, m, "barge_in", True)
        type_ahead = self.get_bool(node_id, m, "type_ahead", True)
        safe_digits = self.get_bool(node_id, m, "safe_digits", False)
        timeout = m.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            self.issue(node_id, self.line_of(m, "timeout"), "'timeout' must be a positive number")
            timeout = DEFAULT_TIMEOUT
        retries = self.get_int(node_id, m, "retries", DEFAULT_RETRIES, low=0, high=100)
        dtmf_max = self.get_int(node_id, m, "dtmf_max", DEFAULT_DTMF_MAX, low=1, high=MAX_DTMF_MAX)
        no_input = self.prompt_value(node_id, m, "no_input")
        no_match = self.prompt_value(node_id, m, "no_match")
        store_as = self.get_str(node_id, m, "store_as")
        if store_as is not None:
            if not _STORE_AS_RE.fullmatch(store_as):
                self.issue(
                    node_id,
                    self.line_of(m, "store_as"),
                    f"'store_as' {store_as!r} must be lower-case letters, digits and '_'",
                )
            elif store_as in self.variables:
                self.issue(
                    node_id,
                    self.line_of(m, "store_as"),
                    f"'store_as' {store_as!r} would overwrite a call variable",
                )
            else:
                self.store_names.setdefault(store_as, (node_id, self.line_of(m, "store_as")))
        branches = self.branches(node_id, m, dtmf_max)
        fail = self.get_edge(node_id, m, "fail")
        if prompt is None or fail is None or branches is None:
            return None
        return AskNode(
            id=node_id,
            prompt=prompt,
            branches=branches,
            fail=fail,
            timeout=float(timeout),
            retries=retries,
            dtmf_max=dtmf_max,
            no_input=no_input,
            no_match=no_match,
            store_as=store_as,
            barge_in=barge_in,
            type_ahead=type_ahead,
            safe_digits=safe_digits,
            line=line,
        )

    def branches(self, node_id: str, m: _YamlMap, dtmf_max: int) -> tuple[Branch, ...] | None:
        raw = m.get("branches")
        if raw is None:
            self.issue(node_id, m.line, "missing required key 'branches'")
            return None
        if not isinstance(raw, list) or not raw:
            self.issue(node_id, self.line_of(m, "branches"), "'branches' must be a non-empty list")
            return None
        out: list[Branch] = []
        for index, item in enumerate(raw, 1):
            if not isinstance(item, _YamlMap):
                self.issue(
                    node_id,
                    self.line_of(m, "branches"),
                    f"branch {index} must be a mapping with 'next' and a matcher",
                )
                continue
            branch = self.branch(node_id, item, index, dtmf_max)
            if branch is not None:
                out.append(branch)
        return tuple(out) if len(out) == len(raw) else None

    def branch(self, node_id: str, m: _YamlMap, index: int, dtmf_max: int) -> Branch | None:
        count = len(self.issues)
        self.check_keys(node_id, m, _BRANCH_KEYS, f"branch {index}")
        dtmf = m.get("dtmf")
        if dtmf is not None:
            if isinstance(dtmf, int) and not isinstance(dtmf, bool) and 0 <= dtmf <= 9:
                dtmf = str(dtmf)
            if not isinstance(dtmf, str) or not dtmf or not set(dtmf) <= DTMF_DIGITS - {"#"}:
                self.issue(
                    node_id,
                    self.line_of(m, "dtmf"),
                    f"branch {index}: 'dtmf' must be a quoted string of 0-9, *, A-D (e.g. \"12\")",
                )
                dtmf = None
            elif len(dtmf) > dtmf_max:
                self.issue(
                    node_id,
                    self.line_of(m, "dtmf"),
                    f"branch {index}: dtmf {dtmf!r} is longer than dtmf_max {dtmf_max}",
                )
        keywords = self.word_list(node_id, m, "keywords", index)
        phrases = self.word_list(node_id, m, "phrases", index)
        any_input = m.get("any", False)
        if not isinstance(any_input, bool):
            self.issue(
                node_id, self.line_of(m, "any"), f"branch {index}: 'any' must be true or false"
            )
            any_input = False
        if (
            dtmf is None
            and not keywords
            and not phrases
            and not any_input
            and len(self.issues) == count
        ):
            self.issue(
                node_id, m.line, f"branch {index} needs a matcher: dtmf, keywords, phrases or any"
            )
        target = self.get_edge(node_id, m, "next")
        if target is None or len(self.issues) != count:
            return None
        return Branch(target, dtmf, keywords, phrases, any_input, m.line)

    def word_list(self, node_id: str, m: _YamlMap, key: str, index: int) -> tuple[str, ...]:
        raw = m.get(key)
        if raw is None:
            return ()
        words = (
            tuple(normalize_words(w) for w in raw if isinstance(w, str))
            if isinstance(raw, list)
            else ()
        )
        if not isinstance(raw, list) or not raw or len(words) != len(raw) or not all(words):
            self.issue(
                node_id,
                self.line_of(m, key),
                f"branch {index}: '{key}' must be a non-empty list of words",
            )
            return ()
        return words

    def agent(self, node_id: str, line: int, m: _YamlMap) -> AgentNode | None:
        queue = self.get_str(node_id, m, "queue")
        skill = self.get_str(node_id, m, "skill")
        message = self.prompt_value(node_id, m, "message")
        fallback = self.get_edge(node_id, m, "fallback")
        resume = self.get_edge(node_id, m, "resume", required=False)
        if fallback is None:
            return None
        return AgentNode(node_id, fallback, queue, skill, message, resume, line)

    # -- whole-flow checks --

    def check_graph(self, start: str | None, data: _YamlMap) -> None:
        for node_id, edges in self.edges.items():
            for edge in edges:
                if edge.target not in self.edges:
                    self.issue(
                        node_id, edge.line, f"'{edge.label}' goes to unknown node '{edge.target}'"
                    )
        if start is None:
            return
        if start not in self.edges:
            if self.edges:
                self.issue(None, self.line_of(data, "start"), f"start node '{start}' is not a node")
            return
        seen = {start}
        todo = [start]
        while todo:
            for edge in self.edges[todo.pop()]:
                if edge.target in self.edges and edge.target not in seen:
                    seen.add(edge.target)
                    todo.append(edge.target)
        for node_id, line in self.lines.items():
            if node_id not in seen:
                self.issue(node_id, line, f"unreachable from start node '{start}'")
        self.check_loops(data)

    def check_loops(self, data: _YamlMap) -> None:
        """Say and goto nodes never wait: a cycle made only of them would run forever."""
        raw_nodes = data["nodes"]
        order = list(self.lines)
        passing: dict[str, str] = {}
        types: dict[str, object] = {}
        for node_id in order:
            raw = raw_nodes[node_id]
            if isinstance(raw, _YamlMap) and raw.get("type") in (NodeType.SAY, NodeType.GOTO):
                types[node_id] = raw.get("type")
                nexts = [e.target for e in self.edges[node_id] if e.label == "next"]
                if nexts and nexts[0] in self.edges:
                    passing[node_id] = nexts[0]
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for first in order:
            path: list[str] = []
            current = first
            while current in passing and current not in state:
                state[current] = 1
                path.append(current)
                current = passing[current]
            if state.get(current) == 1:
                cycle = path[path.index(current) :]
                pivot = min(cycle, key=order.index)
                at = cycle.index(pivot)
                cycle = cycle[at:] + cycle[:at]
                route = " → ".join([*cycle, pivot])
                if all(types[n] == NodeType.GOTO for n in cycle):
                    message = f"goto loop with no say or ask node: {route}"
                else:
                    message = f"loop of say/goto nodes never waits for the caller: {route}"
                self.issue(pivot, self.lines[pivot], message)
            for node_id in path:
                state[node_id] = 2

    def check_texts(self) -> None:
        known = self.variables | set(self.store_names)
        for node_id, line, key, text in self.texts:
            try:
                names = template_variables(text)
            except ValueError as e:
                self.issue(node_id, line, f"'{key}': {e}")
                continue
            for name in names:
                if name not in known and not name.startswith(HEADERS_PREFIX):
                    self.issue(
                        node_id,
                        line,
                        f"'{key}': unknown variable {{{name}}} (known: {', '.join(sorted(known))}, "
                        f"{HEADERS_PREFIX}<key>)",
                    )


def audio_files(flow: Flow) -> set[Path]:
    """Every audio file the flow's prompts name (to load them before the first call)."""
    found: set[Path] = set()
    seen: set[int] = set()

    def walk(value: object) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, Prompt):
            if value.audio is not None:
                found.add(value.audio)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(flow)
    return found
