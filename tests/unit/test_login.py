"""POST /api/login and /api/logout against a real aiohttp server: tokens, uniform refusals,
JSON only, the throttle per (address, name) and per address with backoff, and the bearer
helper agent endpoints use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hitl_sip.hub.agents import AgentStore, Hasher
from hitl_sip.hub.login import (
    LOGIN_THROTTLE,
    LoginThrottle,
    bearer_session,
    setup_login,
)
from hitl_sip.hub.sessions import Sessions
from hitl_sip.hub.tokens import TokenSigner

Client = TestClient[web.Request, web.Application]
SECRET = b"k" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def whoami(request: web.Request) -> web.Response:
    session = await bearer_session(request)
    if session is None:
        return web.json_response({"agent": None}, status=401)
    return web.json_response({"agent": session.agent_id, "name": session.name,
                              "role": session.role.value})


@web.middleware
async def remote_from_header(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Lets a test speak from several client addresses."""
    remote = request.headers.get("X-Test-Remote")
    return await handler(request.clone(remote=remote) if remote else request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "agents.sqlite", hasher=Hasher(time_cost=1, memory_kib=8))
    s.add("alice", "correct horse")
    yield s
    s.close()


@pytest.fixture
def throttle_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(store: AgentStore, throttle_clock: FakeClock) -> AsyncIterator[Client]:
    app = web.Application(middlewares=[remote_from_header])
    setup_login(app, Sessions(store, TokenSigner(SECRET)),
                LoginThrottle(per_user=3, per_address=5, window=60, clock=throttle_clock))
    app.router.add_get("/whoami", whoami)
    async with TestClient(TestServer(app)) as c:
        yield c


async def login(client: Client, body: Any, remote: str = "192.0.2.1") -> tuple[int, dict[str, Any]]:
    r = await client.post("/api/login", json=body, headers={"X-Test-Remote": remote})
    return r.status, await r.json()


async def test_right_credentials_get_a_token_for_the_agent(
    client: Client, store: AgentStore
) -> None:
    r = await client.post("/api/login", json={"username": "Alice", "password": "correct horse"})
    assert r.status == 200
    assert r.headers["Cache-Control"] == "no-store"
    body = await r.json()
    alice = store.list()[0]
    assert body["agentId"] == alice.agent_id and body["name"] == "alice"
    assert body["role"] == "agent"
    assert body["expiresAt"].endswith("Z")
    claims = TokenSigner(SECRET).verify(body["token"])
    assert claims.sub == alice.agent_id and claims.expires_at == body["expiresAt"]


async def test_wrong_password_and_unknown_user_get_the_same_401(client: Client) -> None:
    wrong = await login(client, {"username": "alice", "password": "wrong horse"})
    unknown = await login(client, {"username": "mallory", "password": "correct horse"})
    assert (
        wrong
        == unknown
        == (
            401,
            {
                "ok": False,
                "error": {"code": "unauthorized", "message": "invalid username or password"},
            },
        )
    )


@pytest.mark.parametrize("raw", [b"not json", b"{", b"\xff", b""])
async def test_a_body_that_is_not_json_is_a_bad_request(client: Client, raw: bytes) -> None:
    r = await client.post("/api/login", data=raw, headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert (await r.json())["error"] == {"code": "bad_request", "message": "body must be JSON"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "JSON object"),
        ({}, "username is required"),
        ({"username": "alice"}, "password is required"),
        ({"password": "correct horse"}, "username is required"),
        ({"username": 7, "password": "correct horse"}, "username is required"),
        ({"username": "alice", "password": None}, "password is required"),
        ({"username": "", "password": "correct horse"}, "username is required"),
        ({"username": "a" * 257, "password": "correct horse"}, "at most 256"),
        ({"username": "alice", "password": "p" * 257}, "at most 256"),
    ],
)
async def test_missing_or_wrong_fields_are_a_bad_request_naming_the_field(
    client: Client, body: Any, problem: str
) -> None:
    status, answer = await login(client, body)
    assert status == 400
    assert answer["ok"] is False and answer["error"]["code"] == "bad_request"
    assert problem in answer["error"]["message"]


async def test_an_oversized_body_is_a_bad_request(client: Client) -> None:
    r = await client.post("/api/login", data=b"{" + b" " * 9000 + b"}",
                          headers={"Content-Type": "application/json"})
    assert r.status == 400


async def test_only_json_is_read_so_no_web_page_can_post_a_login(client: Client) -> None:
    for _ in range(10):  # what any page may send cross-origin without a pre-flight
        r = await client.post("/api/login", data='{"username": "alice", "password": "x"}',
                              headers={"Content-Type": "text/plain"})
        assert r.status == 415
        assert "application/json" in (await r.json())["error"]["message"]
    r = await client.post("/api/login", data={"username": "alice", "password": "x"})
    assert r.status == 415  # a form
    assert (await login(client, {"username": "alice", "password": "correct horse"}))[0] == 200


async def test_failures_back_off_per_address_and_name(
    client: Client, throttle_clock: FakeClock
) -> None:
    for _ in range(3):
        assert (await login(client, {"username": "alice", "password": "guess-one"}))[0] == 401
    r = await client.post("/api/login", json={"username": "ALICE", "password": "correct horse"},
                          headers={"X-Test-Remote": "192.0.2.1"})
    assert r.status == 429
    assert r.headers["Retry-After"] == "1"
    assert (await r.json())["error"]["code"] == "unavailable"
    waits = ["1"]
    for _ in range(4):  # each further failure, once the wait is over, doubles it
        throttle_clock.now += int(waits[-1])
        assert (await login(client, {"username": "alice", "password": "guess"}))[0] == 401
        r = await client.post("/api/login", json={"username": "alice", "password": "guess"},
                              headers={"X-Test-Remote": "192.0.2.1"})
        waits.append(r.headers.get("Retry-After", "0"))
    assert waits == ["1", "2", "4", "8", "16"]


async def test_guessing_from_one_address_never_locks_the_agent_out_elsewhere(
    client: Client,
) -> None:
    for _ in range(10):
        await login(client, {"username": "alice", "password": "guess"}, remote="203.0.113.9")
    assert (await login(client, {"username": "alice", "password": "guess"},
                        remote="203.0.113.9"))[0] == 429
    status, answer = await login(client, {"username": "alice", "password": "correct horse"},
                                 remote="198.51.100.7")
    assert status == 200 and answer["token"]


async def test_failures_across_many_names_from_one_address_are_throttled(
    client: Client,
) -> None:
    for name in ("bob", "carol", "dave", "erin", "frank"):
        assert (await login(client, {"username": name, "password": "guess-one"}))[0] == 401
    status, answer = await login(client, {"username": "grace", "password": "guess-one"})
    assert status == 429 and answer["error"]["code"] == "unavailable"


async def test_parallel_guesses_cannot_overtake_the_failure_count(client: Client) -> None:
    results = await asyncio.gather(
        *(login(client, {"username": "alice", "password": f"guess-{i}"}) for i in range(12))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [401] * 3 + [429] * 9


async def test_a_successful_login_clears_the_users_failures_but_not_the_addresses(
    client: Client,
) -> None:
    alice = {"username": "alice", "password": "guess"}
    for _ in range(2):
        assert (await login(client, alice))[0] == 401
    ok = {"username": "alice", "password": "correct horse"}
    assert (await login(client, ok))[0] == 200
    for _ in range(2):  # the (address, name) streak starts again
        assert (await login(client, alice))[0] == 401
    # the address keeps its other failures (the success withdrew only its own attempt)
    assert (await login(client, {"username": "bob", "password": "guess"}))[0] == 401
    assert (await login(client, {"username": "carol", "password": "guess"}))[0] == 429


async def test_logout_ends_that_token_only(client: Client) -> None:
    _, first = await login(client, {"username": "alice", "password": "correct horse"})
    _, second = await login(client, {"username": "alice", "password": "correct horse"})
    one, two = ({"Authorization": f"Bearer {b['token']}"} for b in (first, second))
    assert (await client.post("/api/logout")).status == 401
    r = await client.post("/api/logout", headers=one)
    assert (r.status, await r.json()) == (200, {"ok": True})
    assert (await client.get("/whoami", headers=one)).status == 401
    assert (await client.post("/api/logout", headers=one)).status == 401
    assert (await client.get("/whoami", headers=two)).status == 200


async def test_bearer_session_needs_a_live_token_of_a_live_account(
    client: Client, store: AgentStore
) -> None:
    _, body = await login(client, {"username": "alice", "password": "correct horse"})
    r = await client.get("/whoami", headers={"Authorization": f"Bearer {body['token']}"})
    assert (await r.json()) == {"agent": body["agentId"], "name": "alice", "role": "agent"}
    forged = TokenSigner(b"f" * 32).issue(body["agentId"], "alice")[0]
    for headers in (
        {},
        {"Authorization": body["token"]},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {forged}"},
    ):
        assert (await client.get("/whoami", headers=headers)).status == 401
    store.set_password("alice", "another horse")  # every older token of alice ends
    r = await client.get("/whoami", headers={"Authorization": f"Bearer {body['token']}"})
    assert r.status == 401
    store.remove("alice")
    _, body = await login(client, {"username": "alice", "password": "another horse"})
    assert "token" not in body


def test_setup_login_installs_a_default_throttle(store: AgentStore) -> None:
    app = web.Application()
    setup_login(app, Sessions(store, TokenSigner(SECRET)))
    throttle = app[LOGIN_THROTTLE]
    assert (throttle.per_user, throttle.per_address, throttle.window) == (5, 20, 900.0)


def test_a_streak_is_forgotten_a_window_after_its_last_failure() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(per_user=2, window=10, clock=clock)
    key = ("user", "a", "alice")
    throttle.record([key])
    clock.now += 4
    throttle.record([key])
    assert throttle.retry_after([key, ("ip", "other")]) == 1
    clock.now += 10.5
    assert throttle.retry_after([key]) == 0
    assert len(throttle) == 0


def test_the_backoff_is_capped() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(per_user=1, window=10_000, max_wait=30, clock=clock)
    for _ in range(12):
        throttle.record([("user", "a", "b")])
    assert throttle.retry_after([("user", "a", "b")]) == 30


def test_the_throttle_forgets_the_least_recent_keys_beyond_its_bound() -> None:
    throttle = LoginThrottle(per_address=1, window=60, max_keys=100, clock=FakeClock())
    for i in range(1000):
        throttle.record([("ip", str(i))])
    assert len(throttle) == 100
    assert throttle.retry_after([("ip", "0")]) == 0
    assert throttle.retry_after([("ip", "999")]) > 0
