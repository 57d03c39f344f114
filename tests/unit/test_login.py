"""POST /api/login against a real aiohttp server: tokens, uniform refusals, the throttle,
and the bearer helper agent endpoints use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hitl_sip.hub.agents import AgentStore
from hitl_sip.hub.login import (
    LOGIN_THROTTLE,
    TOKEN_SIGNER,
    LoginThrottle,
    bearer_agent,
    setup_login,
)
from hitl_sip.hub.tokens import TokenSigner

Client = TestClient[web.Request, web.Application]
SECRET = b"k" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def whoami(request: web.Request) -> web.Response:
    claims = bearer_agent(request, request.app[TOKEN_SIGNER])
    if claims is None:
        return web.json_response({"agent": None}, status=401)
    return web.json_response({"agent": claims.sub, "name": claims.name})


@web.middleware
async def remote_from_header(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Lets a test speak from several client addresses."""
    remote = request.headers.get("X-Test-Remote")
    return await handler(request.clone(remote=remote) if remote else request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "agents.sqlite", cost=16)
    s.add("alice", "correct horse")
    yield s
    s.close()


@pytest.fixture
def throttle_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(store: AgentStore, throttle_clock: FakeClock) -> AsyncIterator[Client]:
    app = web.Application(middlewares=[remote_from_header])
    setup_login(
        app, store, TokenSigner(SECRET), LoginThrottle(limit=3, window=60, clock=throttle_clock)
    )
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
    r = await client.post("/api/login", data=b"{" + b" " * 9000 + b"}")
    assert r.status == 400


async def test_repeated_failures_for_a_user_are_answered_429_with_retry_after(
    client: Client, throttle_clock: FakeClock
) -> None:
    for _ in range(3):
        assert (await login(client, {"username": "alice", "password": "guess-one"}))[0] == 401
    r = await client.post("/api/login", json={"username": "ALICE", "password": "correct horse"})
    assert r.status == 429
    assert r.headers["Retry-After"] == "60"
    assert (await r.json())["error"]["code"] == "unavailable"
    throttle_clock.now += 45
    r = await client.post("/api/login", json={"username": "alice", "password": "correct horse"})
    assert r.headers["Retry-After"] == "15"
    throttle_clock.now += 15
    assert (await login(client, {"username": "alice", "password": "correct horse"}))[0] == 200


async def test_failures_across_many_names_from_one_address_are_throttled(
    client: Client,
) -> None:
    for name in ("bob", "carol", "dave"):
        assert (await login(client, {"username": name, "password": "guess-one"}))[0] == 401
    status, answer = await login(client, {"username": "erin", "password": "guess-one"})
    assert status == 429 and answer["error"]["code"] == "unavailable"


async def test_parallel_guesses_cannot_overtake_the_failure_count(client: Client) -> None:
    results = await asyncio.gather(
        *(login(client, {"username": "alice", "password": f"guess-{i}"}) for i in range(12))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [401] * 3 + [429] * 9


async def test_failures_for_one_user_from_many_addresses_are_throttled(client: Client) -> None:
    for i in range(3):
        await login(client, {"username": "alice", "password": "guess"}, remote=f"192.0.2.{i}")
    status, _ = await login(
        client, {"username": "alice", "password": "correct horse"}, remote="198.51.100.7"
    )
    assert status == 429


async def test_a_successful_login_clears_the_users_failures_but_not_the_addresses(
    client: Client,
) -> None:
    alice = {"username": "alice", "password": "guess"}
    for _ in range(2):
        assert (await login(client, alice, remote="192.0.2.1"))[0] == 401
    ok = {"username": "alice", "password": "correct horse"}
    assert (await login(client, ok, remote="192.0.2.1"))[0] == 200
    # The user's count starts again: two more failures from elsewhere are still answered.
    for _ in range(2):
        assert (await login(client, alice, remote="198.51.100.7"))[0] == 401
    # The first address keeps its two failures (the success withdrew only its own attempt).
    assert (await login(client, {"username": "bob", "password": "guess"}))[0] == 401
    assert (await login(client, {"username": "carol", "password": "guess"}))[0] == 429


async def test_bearer_agent_reads_a_valid_token_and_ignores_bad_ones(client: Client) -> None:
    _, body = await login(client, {"username": "alice", "password": "correct horse"})
    r = await client.get("/whoami", headers={"Authorization": f"Bearer {body['token']}"})
    assert (await r.json()) == {"agent": body["agentId"], "name": "alice"}
    forged = TokenSigner(b"f" * 32).issue(body["agentId"], "alice")[0]
    for headers in (
        {},
        {"Authorization": body["token"]},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {forged}"},
    ):
        assert (await client.get("/whoami", headers=headers)).status == 401


def test_setup_login_installs_a_default_throttle(store: AgentStore) -> None:
    app = web.Application()
    setup_login(app, store, TokenSigner(SECRET))
    throttle = app[LOGIN_THROTTLE]
    assert (throttle.limit, throttle.window) == (10, 60.0)


def test_the_throttle_waits_for_the_oldest_failure_in_the_window_to_age_out() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(limit=2, window=10, clock=clock)
    throttle.record(["k"])
    clock.now += 4
    throttle.record(["k"])
    assert throttle.retry_after(["k", "other"]) == 6
    clock.now += 6
    assert throttle.retry_after(["k"]) == 0


def test_the_throttle_forgets_the_least_recent_keys_beyond_its_bound() -> None:
    throttle = LoginThrottle(limit=1, window=60, max_keys=100, clock=FakeClock())
    for i in range(1000):
        throttle.record([f"ip:{i}"])
    assert len(throttle) == 100
    assert throttle.retry_after(["ip:0"]) == 0
    assert throttle.retry_after(["ip:999"]) > 0


def test_expired_failures_are_dropped_when_looked_at() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(limit=5, window=10, clock=clock)
    throttle.record(["k"])
    clock.now += 11
    assert throttle.retry_after(["k"]) == 0
    assert len(throttle) == 0
