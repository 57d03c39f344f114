"""The hub's REST JSON edges against what strangers send: random JSON, deep nesting,
oversized strings and bytes that are not UTF-8 get a typed refusal (400, 413 or 415 with
the error envelope) from ``POST /api/login`` and ``POST /api/calls/{id}/handoff`` — never
a 500, never an exception out of the parser (a body nested 2,000 levels deep used to raise
``RecursionError`` in the login)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl_sip.hub.agents import AgentStore, Hasher
from hitl_sip.hub.api import MAX_REST_BODY, HandoffBody, parse_body, setup_api
from hitl_sip.hub.core import Hub
from hitl_sip.hub.login import MAX_BODY_BYTES, MAX_FIELD_CHARS, _parse_credentials, setup_login
from hitl_sip.hub.sessions import Sessions
from hitl_sip.hub.tokens import TokenSigner
from hitl_sip.protocol.worker import CallState, HubCommand

Client = TestClient[web.Request, web.Application]
API_KEY = "k" * 32

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)
FIELDS = st.sampled_from(["username", "password", "reason", "x"])


def nested(levels: int, inner: str, kind: int) -> bytes:
    """``inner`` inside ``levels`` arrays, objects or a mix of both."""
    opens = ("[", '{"a":', '[{"a":')[kind]
    closes = ("]", "}", "}]")[kind]
    return (opens * levels + inner + closes * levels).encode()


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Random JSON, deep nesting, oversized strings, or bytes that are not UTF-8."""
    shape = draw(st.integers(min_value=0, max_value=4))
    if shape == 0:
        return json.dumps(draw(JSON)).encode()
    if shape == 1:
        body = {draw(FIELDS): draw(JSON) for _ in range(draw(st.integers(0, 4)))}
        return json.dumps(body).encode()
    if shape == 2:
        levels = draw(st.integers(min_value=1, max_value=20_000))
        return nested(levels, json.dumps(draw(st.text(max_size=20))), draw(st.integers(0, 2)))
    if shape == 3:
        size = draw(st.integers(min_value=200, max_value=40_000))
        return json.dumps({draw(FIELDS): "x" * size, "password": "p"}).encode()
    return draw(st.binary(max_size=300))


@settings(max_examples=400, deadline=None)
@given(raw=hostile_bodies())
def test_any_login_body_parses_to_credentials_or_a_message(raw: bytes) -> None:
    parsed = _parse_credentials(raw)
    if isinstance(parsed, tuple):
        assert all(isinstance(v, str) and 0 < len(v) <= MAX_FIELD_CHARS for v in parsed)
    else:
        assert isinstance(parsed, str) and parsed


@settings(max_examples=400, deadline=None)
@given(raw=hostile_bodies())
def test_any_handoff_body_parses_to_the_model_or_a_400(raw: bytes) -> None:
    parsed = parse_body(raw, HandoffBody, MAX_REST_BODY)
    if isinstance(parsed, web.Response):
        assert parsed.status == 400
        assert parsed.body is not None
        error = json.loads(cast(bytes, parsed.body))["error"]
        assert error["code"] == "bad_request" and error["message"]
    else:
        assert isinstance(parsed.reason, str) and len(parsed.reason) <= 200


def test_a_login_nested_two_thousand_levels_deep_is_a_precise_400() -> None:
    raw = nested(2_000, "{}", 0)
    assert len(raw) < MAX_BODY_BYTES
    assert _parse_credentials(raw) == "body: nested deeper than 4 levels"


@dataclass
class FakeHub:
    """What the handoff endpoint reads of the hub."""

    config: Any = field(default_factory=lambda: SimpleNamespace(
        api=SimpleNamespace(keys=[API_KEY])))
    registry: Any = field(default_factory=lambda: SimpleNamespace(
        calls={"c1": SimpleNamespace(state=CallState.BOT)}))
    commands: list[HubCommand] = field(default_factory=list)

    async def command(self, message: HubCommand) -> bool:
        self.commands.append(message)
        return True


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "agents.sqlite", hasher=Hasher(time_cost=1, memory_kib=8))
    yield s
    s.close()


@pytest.fixture
async def client(store: AgentStore) -> AsyncIterator[tuple[Client, FakeHub]]:
    hub = FakeHub()
    app = web.Application(client_max_size=1024 * 1024)  # as the hub's public listener
    setup_login(app, Sessions(store, TokenSigner(b"s" * 32)))
    setup_api(app, cast(Hub, hub))
    async with TestClient(TestServer(app)) as c:
        yield c, hub


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """A body sent chunked: no Content-Length for the server to refuse early."""
    for start in range(0, len(data), 64 * 1024):
        yield data[start:start + 64 * 1024]


HOSTILE: list[tuple[str, bytes | None, str, int]] = [
    ("deep arrays", nested(2_000, "{}", 0), "application/json", 400),
    ("deep objects", nested(5_000, "1", 1), "application/json", 400),
    ("deep and large", nested(200_000, "1", 2), "application/json", 400),
    ("long string", json.dumps({"username": "u" * 100_000}).encode(), "application/json", 400),
    ("not UTF-8", b'{"username": "\xff\xfe"}', "application/json", 400),
    ("lone surrogate", b'{"username": "\\ud800", "password": "p", "reason": "\\udfff"}',
     "application/json", 400),
    ("not JSON", b"{", "application/json", 400),
    ("a form", b"username=a&password=b", "application/x-www-form-urlencoded", 415),
    ("text", b'{"username": "a", "password": "b"}', "text/plain", 415),
    ("chunked, past the size limit", None, "application/json", 413),
]
HUGE = json.dumps({"reason": "r" * 2 * 1024 * 1024}).encode()


@pytest.mark.parametrize(("what", "body", "content_type", "status"), HOSTILE,
                         ids=[h[0] for h in HOSTILE])
async def test_hostile_login_bodies_get_a_typed_refusal(
    client: tuple[Client, FakeHub], what: str, body: bytes | None, content_type: str,
    status: int,
) -> None:
    c, _ = client
    data: Any = chunks(HUGE) if body is None else body
    r = await c.post("/api/login", data=data, headers={"Content-Type": content_type})
    assert r.status == status, what
    if status != 413:  # aiohttp's own answer for a body past client_max_size
        assert (await r.json())["error"]["code"] == "bad_request"


@pytest.mark.parametrize(("what", "body", "content_type", "status"),
                         [h for h in HOSTILE if h[3] != 415],
                         ids=[h[0] for h in HOSTILE if h[3] != 415])
async def test_hostile_handoff_bodies_get_a_typed_refusal_and_no_handoff(
    client: tuple[Client, FakeHub], what: str, body: bytes | None, content_type: str,
    status: int,
) -> None:
    c, hub = client
    data: Any = chunks(HUGE) if body is None else body
    r = await c.post("/api/calls/c1/handoff", data=data,
                     headers={"Content-Type": content_type, "X-Api-Key": API_KEY})
    assert r.status == status, what
    if status != 413:
        assert (await r.json())["error"]["code"] == "bad_request"
    assert hub.commands == []


async def test_a_well_formed_handoff_body_still_hands_off(client: tuple[Client, FakeHub]) -> None:
    c, hub = client
    r = await c.post("/api/calls/c1/handoff", json={"reason": "caller asked"},
                     headers={"X-Api-Key": API_KEY})
    assert (r.status, await r.json()) == (200, {"ok": True})
    assert [m.model_dump() for m in hub.commands] == [
        {"type": "handoff", "call_id": "c1", "reason": "caller asked"}]
